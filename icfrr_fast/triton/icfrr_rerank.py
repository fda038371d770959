"""Fused ICFRR (docs/design.md §2) of dense (Q, G) scores on the GPU: the top-L candidates of each query (``dense_topk``),
then the candidate-list kernel (``icfrr_candidates``), which is also the entry point for candidates that come from
the fused k-NN (``knn_topk``) or any other first stage. No path sorts the G scores twice.
Oracle: reference.icfrr_rerank, the CPU op   Test: tests/test_triton_icfrr_rerank.py   Bench: benchmarks/gpu_bench.py
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._launch import empty
from .dense_topk import dense_topk_triton
from .icfrr_candidates import MAX_DEPTH, icfrr_candidates_triton

__all__ = ["icfrr_rerank_triton", "MAX_DEPTH"]

def icfrr_rerank_triton(
    scores: Tensor,
    neighbors: Tensor,
    k_q: int,
    beta: float,
    iters: int,
    semantics: str,
    largest: bool,
    depth: int,
    k: int,
    return_history: bool,
    early_stop: bool,
    *,
    batch: Optional[int] = None,
    alloc: Callable[..., Tensor] = empty,
) -> Tuple[Tensor, Tensor, Tensor]:
    """The contract of ``ops.icfrr_rerank`` for dense (Q, G) scores on the Triton path (depth <= ``MAX_DEPTH``).

    Queries run in batches (default: as many as keep the (batch, L) candidate arrays near 256 MiB); each batch
    selects its top-L candidates with the dense top-k kernel, then runs all iterations.
    """
    Q = scores.shape[0]
    L = depth
    if batch is None:
        batch = max(1, (256 << 20) // (16 * L))
    parts = []
    for q0 in range(0, Q, batch):
        s = scores[q0:q0 + batch]
        cv, ci = dense_topk_triton(s, L, largest, value_dtype=torch.float64)  # exact; sorted, ties -> smaller id
        v, i, h = icfrr_candidates_triton(cv, ci, neighbors, neighbors.shape[0], k_q, beta, iters, semantics,
                                          largest, k, return_history, early_stop, rows_sorted=True,
                                          out_dtype=torch.float32, alloc=alloc)
        parts.append((v, i, h))
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat([p[i] for p in parts]) for i in range(3))
