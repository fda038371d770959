"""Fused similarity + top-K (docs/design.md §3, "fused top-K"): the k best rows of y for every row of x, the similarity
tiles computed with tl.dot and consumed on chip by the shared collector (``_collector.py``).
Oracle: reference.knn_topk (and the CPU op)   Test: tests/test_triton_knn_topk.py   Bench: benchmarks/gpu_bench.py
Invariants: the CPU op's contract and formulas (csrc/include/icfrr/knn_topk.h): ties -> smaller index; exclude_self
removes item i + row_offset from row i by index; int64 indices; cosine = (x.y * (1/|x|)) * (1/|y|), l2sq =
(|x|^2 + |y|^2) - 2 x.y clamped at 0 with float64 norms rounded once, l2 = sqrt(l2sq); precision "bf16" rounds the
inputs to bf16 and sums in fp32 (tensor cores), "fp32" keeps fp32 products (IEEE, no TF32); no Q x G buffer.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._collector import flush, program_scratch, reset_buffer, select_tile, write_topk
from ._launch import SelectConfig, collector_scratch, empty, interpreted, launch_persistent

__all__ = ["knn_topk_triton", "KNN_CONFIGS", "METRICS", "MAX_K"]

METRICS = ("ip", "cosine", "l2", "l2sq")  # kernel METRIC codes 0..3, as ops.KNN_METRICS
#: largest k the on-chip merge supports (the caller falls back above it)
from .._checks import TRITON_MAX_K as MAX_K  # noqa: E402  (one definition)
#: GPU tile shapes by input dtype: 16-bit inputs use 128 x 128 tiles on 8 warps (two warpgroups for Hopper's wgmma),
#: as many persistent programs as fit on an SM (``_launch.persistent_programs``), all of them sweeping y in the same
#: order so y tiles are shared through L2.
KNN_CONFIGS = {
    torch.float16: SelectConfig(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=3),
    torch.bfloat16: SelectConfig(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=3),
    # fp32 with exact products runs on CUDA cores (FMA dot, operands in registers): a smaller tile keeps it there
    torch.float32: SelectConfig(block_m=64, block_n=64, block_k=32, num_warps=4, num_stages=3),
    torch.float64: SelectConfig(block_m=64, block_n=64, block_k=16, num_warps=4, num_stages=2),
}


@triton.jit
def score_tile(x_row, row_ok, xn, y_ptr, y_stride, yn_ptr, cols, col_ok, D, acc_dtype: tl.constexpr,
               METRIC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """(BLOCK_M, BLOCK_N) scores of rows ``x_row`` against items ``cols``: acc = x.y by ``tl.dot`` over BLOCK_K
    feature steps, then cosine (acc * 1/|x|) * 1/|y|, l2/l2sq max((|x|^2 + |y|^2) - 2 acc, 0), ip acc. Shared by
    knn_topk and knn_scores, so both see the same bits."""
    y_col = y_ptr + cols.to(tl.int64) * y_stride
    acc = tl.zeros([BLOCK_M, BLOCK_N], acc_dtype)
    for d0 in range(0, D, BLOCK_K):
        dd = d0 + tl.arange(0, BLOCK_K)
        d_ok = dd < D
        a = tl.load(x_row[:, None] + dd[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        b = tl.load(y_col[None, :] + dd[:, None], mask=d_ok[:, None] & col_ok[None, :], other=0.0)
        if UPCAST:  # the interpreter's bf16 dot returns garbage; bf16 -> fp32 is exact
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=acc_dtype)
    if METRIC == 1:  # cosine
        yn = tl.load(yn_ptr + cols, mask=col_ok, other=0.0)
        s = acc * xn[:, None] * yn[None, :]
    elif METRIC >= 2:  # squared Euclidean distance ("l2" ranks it too and returns its square root)
        yn = tl.load(yn_ptr + cols, mask=col_ok, other=0.0)
        s = tl.maximum(xn[:, None] + yn[None, :] - 2.0 * acc, 0.0)
    else:
        s = acc
    return s


@triton.jit
def _knn_topk_kernel(
    out_v_ptr, out_i_ptr, out_stride,  # (Q, k) values, int64 indices
    x_ptr, x_stride,  # (Q, D) queries, unit feature stride
    y_ptr, y_stride,  # (G, D) items, unit feature stride
    xn_ptr, yn_ptr,  # (Q,), (G,) accumulator dtype: cosine 1/|x|, 1/|y|; l2/l2sq |x|^2, |y|^2; ip unused
    fill_ptr, thr_v_ptr, thr_i_ptr,  # (P, BLOCK_M) per-program scratch
    qk_ptr, qi_ptr,  # (P, BLOCK_M, QC) queue
    bk_ptr, bp_ptr,  # (P, BLOCK_M, KP) buffer
    Q, G, D, k, row_offset, n_prog,
    METRIC: tl.constexpr, LARGEST: tl.constexpr, EXCLUDE_SELF: tl.constexpr, PRECISION: tl.constexpr,
    UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    KP: tl.constexpr, QC: tl.constexpr, CH: tl.constexpr, MR: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)  # int64 before it multiplies a stride
    fill_ptr, thr_v_ptr, thr_i_ptr, qk_ptr, qi_ptr, bk_ptr, bp_ptr = program_scratch(
        pid, fill_ptr, thr_v_ptr, thr_i_ptr, qk_ptr, qi_ptr, bk_ptr, bp_ptr, BLOCK_M, QC, KP)
    is_f64: tl.constexpr = x_ptr.dtype.element_ty == tl.float64
    if is_f64:
        acc_dtype: tl.constexpr = tl.float64
    else:
        acc_dtype: tl.constexpr = tl.float32
    n_blocks = tl.cdiv(Q, BLOCK_M)
    for blk in range(tl.program_id(0), n_blocks, n_prog):
        rows = blk * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < Q
        x_row = x_ptr + rows.to(tl.int64) * x_stride
        if METRIC != 0:
            xn = tl.load(xn_ptr + rows, mask=row_ok, other=0.0)
        else:
            xn = tl.zeros([BLOCK_M], acc_dtype)  # unused by "ip"
        reset_buffer(bk_ptr, bp_ptr, BLOCK_M, KP, MR)
        thr_v = tl.full([BLOCK_M], float("-inf"), acc_dtype)
        thr_i = tl.full([BLOCK_M], 2147483647, tl.int32)
        fill = tl.zeros([BLOCK_M], tl.int32)
        # every program sweeps y from the first tile to the last: concurrent programs share y tiles in L2
        for n0 in range(0, G, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            col_ok = cols < G
            s = score_tile(x_row, row_ok, xn, y_ptr, y_stride, yn_ptr, cols, col_ok, D, acc_dtype, METRIC,
                           PRECISION, UPCAST, BLOCK_M, BLOCK_N, BLOCK_K)
            if LARGEST:
                v = s
            else:
                v = -s
            valid = row_ok[:, None] & col_ok[None, :]
            if EXCLUDE_SELF:
                valid = valid & (cols[None, :] != (rows + row_offset)[:, None])
            thr_v, thr_i, fill = select_tile(v, n0, valid, thr_v, thr_i, fill, bk_ptr, bp_ptr, qk_ptr, qi_ptr, fill_ptr,
                                             thr_v_ptr, thr_i_ptr, k, BLOCK_M, BLOCK_N, KP, QC, CH, MR, False)
        thr_v, thr_i, fill = flush(thr_v, fill, bk_ptr, bp_ptr, qk_ptr, qi_ptr, fill_ptr, thr_v_ptr, thr_i_ptr, k,
                                   BLOCK_M, KP, QC, CH, MR)
        if LARGEST:
            out_sign = 1.0
        else:
            out_sign = -1.0
        write_topk(out_v_ptr, out_i_ptr, out_stride, bk_ptr, bp_ptr, blk * BLOCK_M, Q, k, out_sign, METRIC == 2,
                   BLOCK_M, KP, MR)
        tl.debug_barrier()  # the next block resets the buffers this block's threads just read


def _row_norms(t: Tensor, metric: str, dtype: torch.dtype) -> Tensor:
    """Per-row factors of the CPU op's formulas, from float64 sums: cosine 1/|t| (0 for a zero row), l2/l2sq |t|^2."""
    t64 = t.to(torch.float64)
    s = (t64 * t64).sum(dim=1)
    if metric == "cosine":
        return torch.where(s > 0, 1.0 / s.sqrt(), torch.zeros_like(s)).to(dtype)
    return s.to(dtype)


def prepare_inputs(x: Tensor, y: Tensor, metric: str, precision: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The kernels' inputs: x, y rounded to bfloat16 for precision "bf16" (round to nearest even, as the CPU op),
    unit feature stride; the per-row factors xn (Q,), yn (G,) in the accumulator dtype (float64 for float64
    inputs, else float32; a 1-element placeholder for "ip")."""
    if precision == "bf16" and x.dtype != torch.bfloat16:
        x, y = x.to(torch.bfloat16), y.to(torch.bfloat16)
    if x.stride(1) != 1:
        x = x.contiguous()
    if y.stride(1) != 1:
        y = y.contiguous()
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if metric == "ip":
        xn = yn = torch.empty(1, dtype=acc_dtype, device=x.device)
    else:
        xn, yn = _row_norms(x, metric, acc_dtype), _row_norms(y, metric, acc_dtype)
    return x, y, xn, yn


def knn_topk_triton(
    x: Tensor,
    y: Tensor,
    k: int,
    metric: str = "ip",
    largest: Optional[bool] = None,
    exclude_self: bool = False,
    row_offset: int = 0,
    precision: str = "fp32",
    *,
    config: Optional[SelectConfig] = None,
    alloc: Callable[..., Tensor] = empty,
) -> Tuple[Tensor, Tensor]:
    """The k best rows of ``y`` for every row of ``x`` (the contract of ``ops.knn_topk``), without a (Q, G) matrix.

    Arguments are validated by the op (``icfrr_fast::knn_topk``), not here; k <= ``MAX_K``.

    Args:
        x: (Q, D) float16/bfloat16/float32/float64 queries.
        y: (G, D) items, same dtype and device.
        k: results per query, in [1, G] (G - 1 with ``exclude_self``).
        metric: "ip", "cosine", "l2" (Euclidean distance) or "l2sq" (its square).
        largest: rank larger values first (default: True for "ip"/"cosine", False for "l2"/"l2sq").
        exclude_self: row i never returns item ``i + row_offset`` (x is a slice of y).
        row_offset: see ``exclude_self``.
        precision: "bf16" rounds the inputs to bfloat16 and multiplies on tensor cores with fp32 sums (the fast
            path); "fp32" keeps exact fp32 products (float16/bfloat16 inputs: their exact products on tensor cores;
            float64 inputs: float64 throughout).
        config: tile shape (default ``KNN_CONFIGS[dtype]`` on a GPU, 16 x 16 x 16 tiles in the interpreter).
        alloc: ``alloc(shape, dtype, device)`` allocates the outputs (tests pass one that poisons them).

    Returns:
        values (Q, k) float32 (float64 for float64 inputs with precision "fp32"), indices (Q, k) int64; best first,
        ties -> smaller index.
    """
    if largest is None:
        largest = metric not in ("l2", "l2sq")
    x, y, xn, yn = prepare_inputs(x, y, metric, precision)
    Q, D = x.shape
    G = y.shape[0]
    kernel = _knn_topk_kernel
    interp = interpreted(kernel)
    if config is None:
        config = KNN_CONFIGS[x.dtype] if not interp else SelectConfig(block_m=16, block_n=16, block_k=16)
    shape = config.collector_shape(k)
    dev = x.device
    acc_dtype = xn.dtype
    values = alloc((Q, k), acc_dtype, dev)
    indices = alloc((Q, k), torch.int64, dev)
    if Q == 0:
        return values, indices
    n_blocks = triton.cdiv(Q, config.block_m)
    bm = config.block_m

    def make_args(P: int) -> tuple:
        return (values, indices, values.stride(0), x, x.stride(0), y, y.stride(0), xn, yn,
                *collector_scratch(P, bm, shape, dev), Q, G, D, k, row_offset, P)

    launch_persistent(kernel, dev, n_blocks, make_args, dict(
        METRIC=METRICS.index(metric), LARGEST=largest, EXCLUDE_SELF=exclude_self,
        PRECISION="ieee",  # fp32 inputs: exact fp32 products (precision "fp32" excludes TF32); 16-bit: ignored
        UPCAST=interp and x.dtype == torch.bfloat16,
        BLOCK_M=bm, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        num_warps=config.num_warps, num_stages=config.num_stages, **shape,
    ))
    return values, indices
