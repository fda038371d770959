"""Class-balanced cross-domain pair sampler.

Every batch holds P classes x K pairs; a pair is two images of one class from two different domains (with
``query_domain`` set, the first image is always from that domain: sketch -> photo). Classes are visited in a fresh
random order each epoch, P at a time (wrapping around), so every class appears equally often (class balance);
images inside a class are drawn uniformly with replacement. Each pair also carries a seed for its augmentations.

Everything is a function of ``(seed, epoch)``: ``set_epoch(e, start_batch=b)`` replays epoch e from batch b (exact
resume). Under DDP each of the ``world_size`` ranks takes ``P / world_size`` of every batch's classes, so the ranks'
shards together are the single-process batch.
"""

from __future__ import annotations

import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Sampler

__all__ = ["CrossDomainPairSampler"]


class CrossDomainPairSampler(Sampler[List[Tuple[int, int, int]]]):
    """Batch sampler of cross-domain pairs ``(i, j, seed)``.

    Args:
        labels: class of each item.
        domains: domain of each item.
        classes_per_batch: P (a multiple of ``world_size``).
        pairs_per_class: K.
        batches_per_epoch: batches per epoch (default: enough for the first-domain items once,
            ``ceil(n_first / (P K))``).
        query_domain: the domain of every pair's first image (None: any domain, the second from another).
        seed: base seed.
        rank, world_size: this process's shard under DDP.

    Raises:
        ValueError: fewer than P classes have images in two domains, or bad sizes.
    """

    def __init__(self, labels: Sequence[int], domains: Sequence[int], *, classes_per_batch: int,
                 pairs_per_class: int, batches_per_epoch: Optional[int] = None, query_domain: Optional[int] = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        for name, v in (("classes_per_batch", classes_per_batch), ("pairs_per_class", pairs_per_class),
                        ("world_size", world_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size) = [0, {world_size}); got {rank}")
        if classes_per_batch % world_size:
            raise ValueError(f"classes_per_batch ({classes_per_batch}) must be a multiple of world_size "
                             f"({world_size}) so that every rank gets whole classes")
        if len(labels) != len(domains):
            raise ValueError(f"labels and domains must have one entry per item; got {len(labels)} and {len(domains)}")
        by: Dict[int, Dict[int, List[int]]] = {}
        for i, (c, d) in enumerate(zip(labels, domains)):
            by.setdefault(int(c), {}).setdefault(int(d), []).append(i)
        if query_domain is None:
            usable = [c for c, dd in by.items() if len(dd) >= 2]
        else:
            usable = [c for c, dd in by.items() if query_domain in dd and len(dd) >= 2]
        if len(usable) < classes_per_batch:
            raise ValueError(f"classes_per_batch = {classes_per_batch} but only {len(usable)} classes have images in "
                             f"two domains" + ("" if query_domain is None else f" (one of them domain {query_domain})"))
        self._by = {c: {d: torch.tensor(ix) for d, ix in by[c].items()} for c in sorted(usable)}
        self.classes = sorted(usable)
        self.P, self.K = classes_per_batch, pairs_per_class
        self.query_domain = query_domain
        n_first = sum(len(by[c][query_domain]) if query_domain is not None else sum(len(v) for v in by[c].values())
                      for c in usable)
        if batches_per_epoch is None:
            batches_per_epoch = max(1, math.ceil(n_first / (self.P * self.K)))
        if isinstance(batches_per_epoch, bool) or not isinstance(batches_per_epoch, int) or batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be a positive int; got {batches_per_epoch!r}")
        self.batches_per_epoch = batches_per_epoch
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch to iterate (and the batch to start from, for a resumed run)."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch must be in [0, {self.batches_per_epoch}]; got {start_batch}")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def _pair(self, c: int, g: torch.Generator) -> Tuple[int, int, int]:
        doms = sorted(self._by[c])
        if self.query_domain is not None:
            da = self.query_domain
        else:
            da = doms[int(torch.randint(len(doms), (1,), generator=g))]
        others = [d for d in doms if d != da]
        db = others[int(torch.randint(len(others), (1,), generator=g))]
        ia, ib = self._by[c][da], self._by[c][db]
        i = int(ia[int(torch.randint(len(ia), (1,), generator=g))])
        j = int(ib[int(torch.randint(len(ib), (1,), generator=g))])
        seed = int(torch.randint(2 ** 62, (1,), generator=g))
        return i, j, seed

    def _batches(self) -> Iterator[List[Tuple[int, int, int]]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order: List[int] = []
        for _ in range(self.batches_per_epoch):
            if len(order) < self.P:
                order += [self.classes[k] for k in torch.randperm(len(self.classes), generator=g).tolist()
                          if self.classes[k] not in order]
            chosen, order = order[:self.P], order[self.P:]
            # every rank draws the whole batch (same generator state), then keeps its share of the classes
            batch = [[self._pair(c, g) for _ in range(self.K)] for c in chosen]
            yield [p for k, pairs in enumerate(batch) if k % self.world_size == self.rank for p in pairs]

    def __iter__(self) -> Iterator[List[Tuple[int, int, int]]]:
        for b, batch in enumerate(self._batches()):
            if b >= self.start_batch:
                yield batch
