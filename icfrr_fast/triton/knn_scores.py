"""Dense (Q, G) k-NN scores on the GPU: the tiles of the fused k-NN kernel (``knn_topk.score_tile``), written out
instead of selected, so every score is bit-identical to the one ``knn_topk_triton`` ranks (for "l2", its square
root, correctly rounded as knn_topk reports it).
Oracle: reference.knn_scores (and the CPU op)   Test: tests/test_triton_knn_scores.py
Invariants: the formulas of knn_topk.py (cosine = (x.y * (1/|x|)) * (1/|y|), l2sq = max((|x|^2 + |y|^2) - 2 x.y, 0),
l2 = sqrt(l2sq)); precision "bf16" rounds the inputs to bf16 (tensor cores, fp32 sums), "fp32" keeps exact fp32
products; one program per (BLOCK_M, BLOCK_N) output tile.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._launch import SelectConfig, empty, interpreted
from .knn_topk import KNN_CONFIGS, METRICS, prepare_inputs, score_tile

__all__ = ["knn_scores_triton"]


@triton.jit
def _knn_scores_kernel(
    out_ptr, out_stride,  # (Q, G) scores, accumulator dtype
    x_ptr, x_stride, y_ptr, y_stride,  # (Q, D), (G, D), unit feature stride
    xn_ptr, yn_ptr,  # (Q,), (G,): cosine 1/|x|, 1/|y|; l2/l2sq |x|^2, |y|^2; ip unused
    Q, G, D,
    METRIC: tl.constexpr, OUT_SQRT: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    is_f64: tl.constexpr = x_ptr.dtype.element_ty == tl.float64
    if is_f64:
        acc_dtype: tl.constexpr = tl.float64
    else:
        acc_dtype: tl.constexpr = tl.float32
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < Q
    col_ok = cols < G
    if METRIC != 0:
        xn = tl.load(xn_ptr + rows, mask=row_ok, other=0.0)
    else:
        xn = tl.zeros([BLOCK_M], acc_dtype)  # unused by "ip"
    s = score_tile(x_ptr + rows.to(tl.int64) * x_stride, row_ok, xn, y_ptr, y_stride, yn_ptr, cols, col_ok, D,
                   acc_dtype, METRIC, PRECISION, UPCAST, BLOCK_M, BLOCK_N, BLOCK_K)
    if OUT_SQRT:  # as knn_topk's write_topk: the square root in float64, rounded once (correct rounding)
        s = tl.sqrt(s.to(tl.float64)).to(acc_dtype)
    off = rows.to(tl.int64)[:, None] * out_stride + cols[None, :]
    tl.store(out_ptr + off, s, mask=row_ok[:, None] & col_ok[None, :])


def knn_scores_triton(
    x: Tensor,
    y: Tensor,
    metric: str = "ip",
    precision: str = "fp32",
    *,
    sqrt_l2: bool = True,
    config: Optional[SelectConfig] = None,
    alloc: Callable[..., Tensor] = empty,
) -> Tensor:
    """Dense scores of every (row of x, row of y) pair (the contract of ``ops.knn_scores``).

    Arguments are validated by the op (``icfrr_fast::knn_scores``), not here.

    Args:
        x: (Q, D) float16/bfloat16/float32/float64 queries.
        y: (G, D) items, same dtype and device.
        metric: "ip", "cosine", "l2" (Euclidean distance) or "l2sq" (its square).
        precision: "bf16" (inputs rounded to bfloat16, fp32 sums) or "fp32" (exact fp32 products; float64
            inputs: float64 throughout).
        sqrt_l2: False writes the squared distance for "l2" (what knn_topk ranks on).
        config: tile shape (default ``KNN_CONFIGS[dtype]`` on a GPU, 16 x 16 x 16 tiles in the interpreter:
            the same tiles as ``knn_topk_triton``, hence the same summation order).
        alloc: ``alloc(shape, dtype, device)`` allocates the output (tests pass one that poisons it).

    Returns:
        (Q, G) float32 scores (float64 for float64 inputs with precision "fp32").
    """
    x, y, xn, yn = prepare_inputs(x, y, metric, precision)
    Q, D = x.shape
    G = y.shape[0]
    kernel = _knn_scores_kernel
    interp = interpreted(kernel)
    if config is None:
        config = KNN_CONFIGS[x.dtype] if not interp else SelectConfig(block_m=16, block_n=16, block_k=16)
    out = alloc((Q, G), xn.dtype, x.device)
    if Q == 0:
        return out
    grid = (triton.cdiv(Q, config.block_m), triton.cdiv(G, config.block_n))
    kernel[grid](
        out, out.stride(0), x, x.stride(0), y, y.stride(0), xn, yn, Q, G, D,
        METRIC=METRICS.index(metric), OUT_SQRT=sqrt_l2 and metric == "l2", PRECISION="ieee",
        UPCAST=interp and x.dtype == torch.bfloat16,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out
