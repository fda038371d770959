"""Image datasets over explicit lists of (path, class, domain): what every benchmark loader produces.

``ImageList`` returns ``(image, label, domain)``; indexing it with ``(index, seed)`` applies the random augmentation
under ``torch.manual_seed(seed)`` (in a forked RNG), so an image's augmentation depends only on the sampler's seed,
not on worker count, worker order or where a resumed run restarts. ``PairDataset`` serves the cross-domain pairs of
:class:`~icfrr_fast.training.data.sampler.CrossDomainPairSampler`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["ImageRecords", "ImageList", "PairDataset", "load_image"]

Transform = Callable[[object], Tensor]


@dataclass
class ImageRecords:
    """Plain lists describing a set of images (no transforms, nothing loaded).

    Attributes:
        paths: absolute (or root-joined) image paths.
        labels: class index of each image into ``classes``.
        domains: domain index of each image into ``domain_names``.
        classes: class names.
        domain_names: domain names.
    """

    paths: List[str]
    labels: List[int]
    domains: List[int]
    classes: List[str]
    domain_names: List[str]
    name: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.paths)
        if len(self.labels) != n or len(self.domains) != n:
            raise ValueError(f"{self.name or 'records'}: paths, labels and domains must have one entry per image; "
                             f"got {n}, {len(self.labels)}, {len(self.domains)}")
        if n and (min(self.labels) < 0 or max(self.labels) >= len(self.classes)):
            raise ValueError(f"{self.name or 'records'}: labels must index classes (0..{len(self.classes) - 1}); "
                             f"got labels in [{min(self.labels)}, {max(self.labels)}]")
        if n and (min(self.domains) < 0 or max(self.domains) >= len(self.domain_names)):
            raise ValueError(f"{self.name or 'records'}: domains must index domain_names "
                             f"(0..{len(self.domain_names) - 1})")

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, keep: Sequence[int], name: Optional[str] = None) -> ImageRecords:
        """The records at ``keep`` (same class and domain tables)."""
        return ImageRecords([self.paths[i] for i in keep], [self.labels[i] for i in keep],
                            [self.domains[i] for i in keep], list(self.classes), list(self.domain_names),
                            name or self.name, dict(self.extra))

    def check_files(self) -> None:
        """Raise ``FileNotFoundError`` naming the missing images (first 5) if any path does not exist."""
        missing = [p for p in self.paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{self.name or 'dataset'}: {len(missing)} of {len(self.paths)} listed images do "
                                    f"not exist, e.g. {', '.join(missing[:5])}")


def load_image(path: str):
    """Open an image as RGB PIL (grayscale sketches become 3-channel)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


class ImageList(Dataset):
    """``(image, label, domain)`` over :class:`ImageRecords`.

    Args:
        records: the images.
        transform: a callable PIL -> (3, H, W) tensor, or a sequence with one per domain (sketch vs photo
            augmentation).
    """

    def __init__(self, records: ImageRecords, transform: Union[Transform, Sequence[Transform]]):
        if not isinstance(records, ImageRecords):
            raise TypeError(f"records must be ImageRecords; got {type(records).__name__}")
        if callable(transform):
            transform = [transform] * len(records.domain_names)
        transform = list(transform)
        if len(transform) != len(records.domain_names):
            raise ValueError(f"transform must be one callable or one per domain ({len(records.domain_names)}); "
                             f"got {len(transform)}")
        self.records = records
        self.transforms = transform

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> Tensor:
        return torch.as_tensor(self.records.labels, dtype=torch.int64)

    @property
    def domains(self) -> Tensor:
        return torch.as_tensor(self.records.domains, dtype=torch.int64)

    def load(self, index: int, seed: Optional[int] = None) -> Tensor:
        """The transformed image ``index``; with ``seed`` its augmentation is a function of the seed alone."""
        img = load_image(self.records.paths[index])
        t = self.transforms[self.records.domains[index]]
        if seed is None:
            return t(img)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return t(img)

    def __getitem__(self, item: Union[int, Tuple[int, int]]):
        index, seed = (item, None) if isinstance(item, int) else item
        return self.load(index, seed), self.records.labels[index], self.records.domains[index]


class PairDataset(Dataset):
    """Cross-domain pairs: item ``(i, j, seed)`` -> ``(image_i, image_j, label, domain_i, domain_j)``."""

    def __init__(self, images: ImageList):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: Tuple[int, int, int]):
        i, j, seed = item
        rec = self.images.records
        if rec.labels[i] != rec.labels[j]:
            raise ValueError(f"a pair must share its class; got items {i} and {j} of classes {rec.labels[i]} and "
                             f"{rec.labels[j]}")
        # two independent augmentation seeds derived from the pair's seed
        return (self.images.load(i, seed), self.images.load(j, seed ^ 0x5DEECE66D), rec.labels[i],
                rec.domains[i], rec.domains[j])
