"""Top-k of each row of a dense (R, C) matrix, streamed in tiles through the shared collector (docs/design.md §2 order).
Oracle: reference.dense_topk   Test: tests/test_triton_dense_topk.py   Bench: benchmarks/gpu_bench.py (icfrr initial)
Invariants: best first, ties -> smaller column; exclude_self removes column row + row_offset by index; int64
indices; scratch bounded by the persistent grid (no R x C temporary); values exact (copied, not recomputed).
Also the first stage of the ICFRR CUDA kernel: the top-L candidates of each query's scores.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._collector import flush, program_scratch, reset_buffer, select_tile, write_topk
from ._launch import SelectConfig, collector_scratch, empty, interpreted, launch_persistent, next_pow2

__all__ = ["dense_topk_triton", "DENSE_CONFIG", "MAX_K"]

#: GPU tile shape: 32 rows x 128 columns per tile, 8 warps (programs per SM: from the compiled kernel).
DENSE_CONFIG = SelectConfig(block_m=32, block_n=128, num_warps=8, num_stages=2)
#: largest k the on-chip merge supports (the caller falls back above it)
from .._checks import TRITON_MAX_K as MAX_K  # noqa: E402  (one definition)


def dense_config(k: int) -> SelectConfig:
    """GPU tile shape for k results: ``DENSE_CONFIG``, with 16-row blocks when the buffer is 1,024 wide (k in
    513..1024): 32 rows spill there on sm_90 (4 local-memory instructions at 255 registers), 16 rows fit in 240
    (benchmarks/gpu_static.py)."""
    if 512 < next_pow2(k) <= 1024:
        return SelectConfig(block_m=16, block_n=DENSE_CONFIG.block_n, num_warps=DENSE_CONFIG.num_warps,
                            num_stages=DENSE_CONFIG.num_stages)
    return DENSE_CONFIG


def dense_num_warps(config: SelectConfig, shape: dict) -> int:
    """Warps of the dense kernel: a large k merges (1, KP) rows, and more warps keep its pairs in registers."""
    return max(config.num_warps, min(16, shape["KP"] // 256))


@triton.jit
def _dense_topk_kernel(
    out_v_ptr, out_i_ptr, out_stride,  # (R, k) values (float32/float64), int64 indices
    x_ptr, x_stride,  # (R, C) scores, unit column stride
    fill_ptr, thr_v_ptr, thr_i_ptr,  # (P, BLOCK_M) per-program scratch
    qk_ptr, qi_ptr,  # (P, BLOCK_M, QC) queue
    bk_ptr, bp_ptr,  # (P, BLOCK_M, KP) buffer
    R, C, k, row_offset, n_prog,
    LARGEST: tl.constexpr, EXCLUDE_SELF: tl.constexpr, SIGNED_OUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, KP: tl.constexpr, QC: tl.constexpr, CH: tl.constexpr,
    MR: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)  # int64 before it multiplies a stride
    fill_ptr, thr_v_ptr, thr_i_ptr, qk_ptr, qi_ptr, bk_ptr, bp_ptr = program_scratch(
        pid, fill_ptr, thr_v_ptr, thr_i_ptr, qk_ptr, qi_ptr, bk_ptr, bp_ptr, BLOCK_M, QC, KP)
    is_f64: tl.constexpr = x_ptr.dtype.element_ty == tl.float64
    n_blocks = tl.cdiv(R, BLOCK_M)
    for blk in range(tl.program_id(0), n_blocks, n_prog):
        rows = blk * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < R
        x_row = x_ptr + rows.to(tl.int64) * x_stride
        reset_buffer(bk_ptr, bp_ptr, BLOCK_M, KP, MR)
        if is_f64:
            thr_v = tl.full([BLOCK_M], float("-inf"), tl.float64)
        else:
            thr_v = tl.full([BLOCK_M], float("-inf"), tl.float32)
        thr_i = tl.full([BLOCK_M], 2147483647, tl.int32)
        fill = tl.zeros([BLOCK_M], tl.int32)
        for n0 in range(0, C, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            valid = row_ok[:, None] & (cols < C)[None, :]
            if EXCLUDE_SELF:
                valid = valid & (cols[None, :] != (rows + row_offset)[:, None])
            v = tl.load(x_row[:, None] + cols[None, :], mask=valid, other=0.0)
            if not is_f64:
                v = v.to(tl.float32)  # float16/bfloat16 widen exactly
            if not LARGEST:
                v = -v  # exact: "smallest first" is "largest first" of the negation
            thr_v, thr_i, fill = select_tile(v, n0, valid, thr_v, thr_i, fill, bk_ptr, bp_ptr, qk_ptr, qi_ptr, fill_ptr,
                                             thr_v_ptr, thr_i_ptr, k, BLOCK_M, BLOCK_N, KP, QC, CH, MR, True)
        thr_v, thr_i, fill = flush(thr_v, fill, bk_ptr, bp_ptr, qk_ptr, qi_ptr, fill_ptr, thr_v_ptr, thr_i_ptr, k,
                                   BLOCK_M, KP, QC, CH, MR)
        if SIGNED_OUT and not LARGEST:
            out_sign = -1.0
        else:
            out_sign = 1.0
        write_topk(out_v_ptr, out_i_ptr, out_stride, bk_ptr, bp_ptr, blk * BLOCK_M, R, k, out_sign, False,
                   BLOCK_M, KP, MR)
        tl.debug_barrier()  # the next block resets the buffers this block's threads just read


def dense_topk_triton(
    x: Tensor,
    k: int,
    largest: bool = True,
    exclude_self: bool = False,
    row_offset: int = 0,
    *,
    signed_values: bool = True,
    value_dtype: Optional[torch.dtype] = None,
    config: Optional[SelectConfig] = None,
    alloc: Callable[..., Tensor] = empty,
) -> Tuple[Tensor, Tensor]:
    """Top-k of every row of ``x``, best first, ties -> smaller column (the contract of ``ops.dense_topk``).

    Arguments are not validated here (``ops.validate_dense_topk`` does it); k <= ``MAX_K``.

    Args:
        x: (R, C) float16/bfloat16/float32/float64, unit stride along columns.
        k: results per row, in [1, C] (C - 1 with ``exclude_self``).
        largest: True: largest first; False: smallest first.
        exclude_self: drop column ``r + row_offset`` from row r.
        row_offset: see ``exclude_self``.
        signed_values: False returns the values as ranked ("larger is better": negated when ``largest=False``),
            which is what the ICFRR kernel consumes.
        value_dtype: dtype of the returned values (default: x's dtype; float64 is exact for every input).
        config: tile shape (default ``dense_config(k)`` on a GPU, a tiny shape in the interpreter).
        alloc: ``alloc(shape, dtype, device)`` allocates the outputs (tests pass one that poisons them).

    Returns:
        values (R, k), indices (R, k) int64.
    """
    R, C = x.shape
    if x.stride(1) != 1:
        x = x.contiguous()
    kernel = _dense_topk_kernel
    if config is None:
        config = dense_config(k) if not interpreted(kernel) else SelectConfig(block_m=4, block_n=16)
    shape = config.collector_shape(k)
    dev = x.device
    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    values = alloc((R, k), work_dtype, dev)
    indices = alloc((R, k), torch.int64, dev)
    n_blocks = triton.cdiv(R, config.block_m)
    bm = config.block_m

    def make_args(P: int) -> tuple:
        return (values, indices, values.stride(0), x, x.stride(0), *collector_scratch(P, bm, shape, dev),
                R, C, k, row_offset, P)

    launch_persistent(kernel, dev, n_blocks, make_args, dict(
        LARGEST=largest, EXCLUDE_SELF=exclude_self, SIGNED_OUT=signed_values, BLOCK_M=bm, BLOCK_N=config.block_n,
        # a large k merges (1, KP) rows: more warps keep its pairs in registers
        num_warps=dense_num_warps(config, shape), num_stages=config.num_stages, **shape,
    ))
    out_dtype = value_dtype if value_dtype is not None else x.dtype
    return values.to(out_dtype), indices
