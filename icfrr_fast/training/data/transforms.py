"""Sketch and photo augmentations (training) and the evaluation transform.

* sketch (training): random resized crop (scale 0.7-1, near-square), horizontal flip, small rotation/shift with a
  white fill (sketches are dark strokes on white);
* photo (training): random resized crop (scale 0.5-1), horizontal flip, colour jitter (0.2 brightness/contrast/
  saturation, 0.02 hue);
* evaluation: resize to H x W (no crop: a crop can cut a sketch's strokes away), as the field's evaluation code does.

All end with ``ToTensor`` and ``Normalize(mean, std)`` of the backbone's weights.
"""

from __future__ import annotations

from typing import Sequence, Tuple

__all__ = ["KINDS", "build_transform", "domain_kind"]

KINDS = ("sketch", "photo", "eval")


def domain_kind(domain: str, sketch_domains: Sequence[str]) -> str:
    """"sketch" when ``domain`` is listed (case-insensitive) in ``sketch_domains``, else "photo"."""
    return "sketch" if domain.lower() in {d.lower() for d in sketch_domains} else "photo"


def build_transform(kind: str, size: Tuple[int, int], mean: Sequence[float], std: Sequence[float]):
    """A torchvision transform PIL -> (3, H, W) float tensor.

    Args:
        kind: "sketch", "photo" or "eval".
        size: (H, W).
        mean, std: per-channel normalisation.
    """
    from torchvision import transforms as T

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    size = (int(size[0]), int(size[1]))
    tail = [T.ToTensor(), T.Normalize(list(mean), list(std))]
    if kind == "eval":
        return T.Compose([T.Resize(size)] + tail)
    if kind == "sketch":
        return T.Compose([
            T.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.9, 1.1)),
            T.RandomHorizontalFlip(),
            T.RandomAffine(degrees=10, translate=(0.05, 0.05), fill=255),
        ] + tail)
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.5, 1.0)),
        T.RandomHorizontalFlip(),
        T.ColorJitter(0.2, 0.2, 0.2, 0.02),
    ] + tail)
