"""DataLoaders of a run: the cross-domain pair loader for training and plain loaders for evaluation."""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch.utils.data import DataLoader

from .image_list import ImageList, ImageRecords, PairDataset
from .sampler import CrossDomainPairSampler
from .transforms import build_transform, domain_kind

__all__ = ["train_loader", "eval_loader"]


def train_loader(records: ImageRecords, *, size: Tuple[int, int], mean: Sequence[float], std: Sequence[float],
                 sketch_domains: Sequence[str], classes_per_batch: int, pairs_per_class: int,
                 batches_per_epoch=None, query_domain=None, seed: int = 0, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0) -> DataLoader:
    """Loader of ``(images_a, images_b, labels, domains_a, domains_b)`` batches of P x K cross-domain pairs.

    The sampler owns every random choice (pairs and augmentation seeds); the loader gets a private generator, so
    iterating it never consumes the global RNG (exact resume).
    """
    transforms = [build_transform(domain_kind(d, sketch_domains), size, mean, std) for d in records.domain_names]
    sampler = CrossDomainPairSampler(records.labels, records.domains, classes_per_batch=classes_per_batch,
                                     pairs_per_class=pairs_per_class, batches_per_epoch=batches_per_epoch,
                                     query_domain=query_domain, seed=seed, rank=rank, world_size=world_size)
    return DataLoader(PairDataset(ImageList(records, transforms)), batch_sampler=sampler, num_workers=num_workers,
                      persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed))


def eval_loader(records: ImageRecords, *, size: Tuple[int, int], mean: Sequence[float], std: Sequence[float],
                batch_size: int, num_workers: int = 0) -> DataLoader:
    """Loader of ``(images, labels, domains)`` in file order with the evaluation transform."""
    ds = ImageList(records, build_transform("eval", size, mean, std))
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
