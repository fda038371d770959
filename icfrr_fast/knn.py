"""Exact k nearest neighbours from features, fused: ``knn(x, y, k)`` -> ``(values, indices)`` like ``torch.topk``.

The similarity of x (Q, D) and y (G, D) is computed tile by tile by a register-blocked matrix-product micro-kernel,
and each tile is reduced to the running top-k of its rows at once, so no (Q, G) matrix ever exists: memory is
O((Q + G) D + Q k + one tile per thread). This module validates the call and dispatches to the registered op
``torch.ops.icfrr_fast.knn_topk`` (C++ on CPU tensors; the float64 reference on devices without a kernel).

Precision (see docs/knn.md): "fp32" (default) computes every dot product as one float32 FMA chain over the D
features (float64 for float64 inputs), bit-identical whatever the blocking, thread count or SIMD path; "l2" is
selected on ``(|x|^2 + |y|^2) - 2 x.y`` like faiss, which loses absolute accuracy ~1e-7 * (|x|^2 + |y|^2) for
near-duplicates. "bf16" rounds the inputs to bfloat16 first (products exact, sums in float32).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from . import ops
from ._checks import check_batch_size

__all__ = ["knn", "scores", "KNNResult", "default_largest"]


class KNNResult(NamedTuple):
    """``(values, indices)``, like ``torch.topk``'s result."""

    values: Tensor   # (Q, k) float32 (float64 for float64 inputs): similarity, or distance for "l2"/"l2sq"
    indices: Tensor  # (Q, k) int64 row ids of y, best first


def default_largest(metric: str) -> bool:
    """True for similarities ("ip", "cosine"), False for distances ("l2", "l2sq")."""
    return metric not in ("l2", "l2sq")


def knn(
    x: Tensor,
    y: Tensor,
    k: int,
    *,
    metric: str = "ip",
    exclude_self: bool = False,
    largest: Optional[bool] = None,
    precision: str = "fp32",
    row_offset: int = 0,
) -> KNNResult:
    """The k best rows of ``y`` for every row of ``x``, best first; ties go to the smaller index.

    Args:
        x: (Q, D) float16/bfloat16/float32/float64 queries (any strides).
        y: (G, D) gallery, same dtype and device as ``x``.
        k: neighbours per row, in [1, G] ([1, G - 1] with ``exclude_self``).
        metric: "ip" (x.y), "cosine" (x.y / (|x| |y|), 0 for a zero vector), "l2" (Euclidean distance |x - y|) or
            "l2sq" (its square, faiss' IndexFlatL2 convention).
        exclude_self: x is a slice of y (rows ``row_offset .. row_offset + Q - 1``): row i never returns item
            ``i + row_offset``, even when another item coincides with it (docs/design.md §2).
        largest: rank larger scores first (default: True for "ip"/"cosine", False for "l2"/"l2sq").
        precision: "fp32" (exact float32 arithmetic) or "bf16" (inputs rounded to bfloat16, float32 sums).
        row_offset: see ``exclude_self``.

    Returns:
        :class:`KNNResult` ``(values, indices)``: values (Q, k) float32 (float64 for float64 inputs and
        precision "fp32"), indices (Q, k) int64.

    Raises:
        TypeError: non-tensor, non-floating or mismatched dtypes, non-bool flags.
        ValueError: D mismatch, empty gallery, k out of range, unknown metric/precision, NaN/inf in x or y (a data
            check that costs one pass over x and y).

    Example:
        >>> import torch, icfrr_fast
        >>> g = torch.randn(100, 16)
        >>> values, indices = icfrr_fast.knn(g[:3], g, 5, metric="l2", exclude_self=True)
        >>> indices.shape, bool((indices != torch.arange(3)[:, None]).all())
        (torch.Size([3, 5]), True)
    """
    if not isinstance(metric, str) or metric not in ops.KNN_METRICS:
        raise ValueError(f"metric must be one of {ops.KNN_METRICS}; got {metric!r}")
    if largest is None:
        largest = default_largest(metric)
    # argument checks before the dispatcher's own type coercion (it would reject k=2.0 with a less clear message);
    # the op repeats them and adds the data check (finite values)
    ops.validate_knn_topk(x, y, k=k, metric=metric, largest=largest, exclude_self=exclude_self, row_offset=row_offset,
                          precision=precision)
    values, indices = ops.knn_topk(x, y, k=k, metric=metric, largest=largest, exclude_self=exclude_self,
                                   row_offset=row_offset, precision=precision)
    return KNNResult(values, indices)


def scores(x: Tensor, y: Tensor, *, metric: str = "ip", precision: str = "fp32") -> Tensor:
    """Dense (Q, G) scores with exactly :func:`knn`'s arithmetic (similarity, or distance for "l2"/"l2sq").

    Materialises Q x G values: use it for a batch of queries (``ICFRRIndex.search`` does), never for a whole
    gallery graph.
    """
    return ops.knn_scores(x, y, metric, precision)


def as_tensor(features, name: str) -> Tensor:
    """Accept a tensor or an array (numpy, what faiss users hold); anything else is a TypeError naming ``name``."""
    if isinstance(features, Tensor):
        return features
    try:
        return torch.as_tensor(features)
    except (TypeError, RuntimeError, ValueError) as e:
        raise TypeError(f"{name} must be a torch.Tensor or an array; got {type(features).__name__}") from e


def _progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar when ``enabled`` (the CLI), else None (the library is silent by default)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError as e:
        raise ImportError("progress=True needs tqdm: pip install tqdm (or icfrr_fast[cli])") from e
    return tqdm(total=total, desc=desc, unit="row")


def knn_into(x: Tensor, y: Tensor, k: int, metric: str, largest: bool, exclude_self: bool, row_offset: int,
              precision: str, out_values: Optional[Tensor], out_indices: Tensor, batch_size: int,
              progress: bool = False, desc: str = "k-NN") -> None:
    """Fused k-NN of the rows of x written into preallocated outputs, ``batch_size`` rows at a time, so that the
    transient int64 ids are (batch_size, k), whatever Q is (a 10^6-item graph stores int32 ids: 1 GB, not 3 GB).

    out_values: (Q, k) float32/float64 or None; out_indices: (Q, k) int32 or int64.
    """
    Q = x.shape[0]
    bar = _progress_bar(Q, desc, progress)
    try:
        for r0 in range(0, Q, batch_size):
            r1 = min(Q, r0 + batch_size)
            v, i = ops.knn_topk(x[r0:r1], y, k=k, metric=metric, largest=largest, exclude_self=exclude_self,
                                row_offset=row_offset + r0, precision=precision)
            out_indices[r0:r1] = i
            if out_values is not None:
                out_values[r0:r1] = v
            if bar is not None:
                bar.update(r1 - r0)
    finally:
        if bar is not None:
            bar.close()


def default_batch_rows(G: int, k: int, D: int) -> int:
    """Rows per fused call: at least 128 (each call re-packs y, G D copies, < 1% of its >= 128 G D FMAs) and at
    most what keeps the call's (rows, k) int64 ids + values near 64 MB."""
    return max(128, min(1 << 16, (64 << 20) // max(1, 12 * k)))
