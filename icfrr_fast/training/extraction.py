"""Feature extraction and the feature cache of ``icfrr-fast features``.

A cache file (``torch.save``, read back with ``weights_only=True``) holds
``{"format", "query", "query_labels", "gallery", "gallery_labels", "query_paths", "gallery_paths", "classes",
"source"}``: (N, D) float32 L2-normalised features, (N,) int64 labels, image paths, class names, and a
description of the checkpoint/config that produced them (the cache is reused only when it matches). The demo's
``FeatureCache`` keeps its entries in the same files: ``{"format", "key", "features"}``, one image array's (N, D)
features under a content key.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from icfrr_fast.io import atomic_save, load_tensor_file

__all__ = ["extract_features", "save_feature_cache", "load_feature_cache", "FEATURES_FORMAT"]

FEATURES_FORMAT = "icfrr_fast.features/1"


@torch.no_grad()
def extract_features(model: nn.Module, loader: DataLoader, device: torch.device,
                     amp_dtype: Optional[torch.dtype] = None, progress: bool = False,
                     desc: str = "features") -> Tuple[Tensor, Tensor]:
    """Embed every image of ``loader`` (``(images, labels, domains)`` batches) in eval mode.

    Returns:
        ((N, D) float32 CPU features as returned by ``model(images)``, (N,) int64 labels), in loader order.
    """
    was_training = model.training
    model.eval()
    feats, labels = [], []
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())
    try:
        for images, y, _ in it:
            with autocast:
                f = model(images.to(device, non_blocking=True))
            feats.append(f.float().cpu())
            labels.append(torch.as_tensor(y, dtype=torch.int64))
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def save_feature_cache(path: Union[str, Path], **fields: Any) -> Path:
    """Write a feature cache atomically (fields as in the module docstring)."""
    return atomic_save({"format": FEATURES_FORMAT, **fields}, path)


def load_feature_cache(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a feature cache (``weights_only=True``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a feature cache.
    """
    obj = load_tensor_file(path)
    if not isinstance(obj, dict) or obj.get("format") != FEATURES_FORMAT:
        raise ValueError(f"{path}: not an icfrr_fast feature cache (expected format {FEATURES_FORMAT!r})")
    return obj
