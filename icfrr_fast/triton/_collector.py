"""Streaming top-K collector for row blocks (shared by the dense and the fused k-NN selection kernels).

A program owns BLOCK_M rows and streams their scores in (BLOCK_M, BLOCK_N) tiles (loaded from memory, or produced
by ``tl.dot``). Each row keeps, in per-program global scratch (L2-resident, never a Q x G buffer):
    buffer  (BLOCK_M, KP) rank-key pairs, worst first: the best KP items seen up to the last merge;
    queue   (BLOCK_M, QC) rank-key pairs of items that beat the row's threshold since the last merge.
The threshold is the k-th best item of the buffer. A tile item is a candidate only if it ranks before it: one
compare per score, and after the first ~k items only about k / n of the next n items pass (a candidate may still be
in the final top-k, so nothing is lost). Candidates are rare, so they are *extracted*, not scattered: each round
takes every row's best remaining candidate (an arg-max over the tile) and appends it to that row's queue, for as
many rounds as the busiest row of the block has candidates. That costs a few operations per score and round and no
per-score addresses (registers stay free for the ``tl.dot`` accumulator). A tile where some row has more than
BLOCK_N / 4 candidates (the first tiles, or a large k) is queued whole instead, non-candidates as sentinels. When
a queue could overflow, all rows merge: the queue is sorted in chunks of CH items and folded into the buffer with
the bitonic top-K step of Shanbhag, Pirk and Madden, "Efficient Top-K Query Processing on Massively Parallel
Hardware" (SIGMOD 2018): for a run sorted best-first and a run sorted worst-first, the elementwise better of the two
is the best half of both.

Ties: items compare by (value, index), smaller index first, so results are identical to a stable sort.
Scratch written inside the kernel is read back with ``.cg`` loads (L2, bypassing L1) after a CTA barrier, because
another thread wrote it.
"""

import triton
import triton.language as tl

from ._pair_sort import SENTINEL, merge_pairs, min_pairs, rank_key, rank_key_value, sort_pairs

_INT32_MAX = tl.constexpr(2147483647)


@triton.jit
def _first_cols(x, CH: tl.constexpr, KP: tl.constexpr, MR: tl.constexpr):
    # columns [0, CH) of an (MR, KP) tensor
    x3 = tl.reshape(x, [MR, KP // CH, CH])
    j = tl.arange(0, KP // CH)[None, :, None]
    return tl.sum(tl.where(j == 0, x3, 0), axis=1)


@triton.jit
def _set_first_cols(x, y, CH: tl.constexpr, KP: tl.constexpr, MR: tl.constexpr):
    # x (MR, KP) with columns [0, CH) replaced by y (MR, CH)
    x3 = tl.reshape(x, [MR, KP // CH, CH])
    j = tl.arange(0, KP // CH)[None, :, None]
    return tl.reshape(tl.where(j == 0, y[:, None, :], x3), [MR, KP])


@triton.jit
def program_scratch(pid, fill_ptr, thr_v_ptr, thr_i_ptr, qk_ptr, qi_ptr, bk_ptr, bp_ptr,
                    BLOCK_M: tl.constexpr, QC: tl.constexpr, KP: tl.constexpr):
    """Program pid's slice of the collector scratch that ``_launch.collector_scratch`` allocates: BLOCK_M rows of
    fill/threshold, of QC queue slots and of KP buffer slots."""
    return (fill_ptr + pid * BLOCK_M, thr_v_ptr + pid * BLOCK_M, thr_i_ptr + pid * BLOCK_M,
            qk_ptr + pid * BLOCK_M * QC, qi_ptr + pid * BLOCK_M * QC,
            bk_ptr + pid * BLOCK_M * KP, bp_ptr + pid * BLOCK_M * KP)


@triton.jit
def reset_buffer(bk_ptr, bp_ptr, BLOCK_M: tl.constexpr, KP: tl.constexpr, MR: tl.constexpr):
    """Empty every row's buffer (sentinel keys)."""
    c = tl.arange(0, KP)
    for r0 in range(0, BLOCK_M, MR):  # a loop, not unrolled: code size
        off = (r0 + tl.arange(0, MR))[:, None] * KP + c[None, :]
        tl.store(bk_ptr + off, tl.full([MR, KP], SENTINEL, tl.int64))
        tl.store(bp_ptr + off, tl.full([MR, KP], _INT32_MAX, tl.int32))


@triton.jit
def merge_queue(bk_ptr, bp_ptr, qk_ptr, qi_ptr, fill_ptr, thr_v_ptr, thr_i_ptr, k,
                BLOCK_M: tl.constexpr, KP: tl.constexpr, QC: tl.constexpr, CH: tl.constexpr, MR: tl.constexpr):
    """Fold every row's queue into its buffer and write the new thresholds. Call between CTA barriers.

    Args:
        bk_ptr, bp_ptr: (BLOCK_M, KP) int64 rank keys / int32 indices, worst first (sentinel = empty).
        qk_ptr, qi_ptr: (BLOCK_M, QC) int64 rank keys / int32 indices; fill_ptr: (BLOCK_M,) int32 queue lengths.
        thr_v_ptr, thr_i_ptr: (BLOCK_M,) float64 / int32 out: the k-th best item (-inf / int32 max while fewer
            than k items were seen, so that everything passes).
    """
    c = tl.arange(0, KP)
    for r0 in range(0, BLOCK_M, MR):  # a loop, not unrolled: code size
        r = r0 + tl.arange(0, MR)
        boff = r[:, None] * KP + c[None, :]
        n_q = tl.load(fill_ptr + r, cache_modifier=".cg")
        bk = tl.load(bk_ptr + boff, cache_modifier=".cg")
        bp = tl.load(bp_ptr + boff, cache_modifier=".cg")
        for c0 in range(0, tl.max(n_q, axis=0), CH):
            cc = c0 + tl.arange(0, CH)
            m = cc[None, :] < n_q[:, None]
            qoff = r[:, None] * QC + cc[None, :]
            ck = tl.load(qk_ptr + qoff, mask=m, other=SENTINEL, cache_modifier=".cg")
            cp = tl.load(qi_ptr + qoff, mask=m, other=_INT32_MAX, cache_modifier=".cg")
            ck, cp = sort_pairs(ck, cp, False)  # best first
            # the CH worst of the buffer (worst first) against the chunk (best first): best CH of both, bitonic
            wk, wp = min_pairs(_first_cols(bk, CH, KP, MR), _first_cols(bp, CH, KP, MR), ck, cp)
            wk, wp = merge_pairs(wk, wp, False)
            # [those CH ascending][the rest of the buffer descending] is bitonic: one merge restores worst-first
            bk, bp = merge_pairs(_set_first_cols(bk, wk, CH, KP, MR), _set_first_cols(bp, wp, CH, KP, MR), True)
        tl.store(bk_ptr + boff, bk)
        tl.store(bp_ptr + boff, bp)
        kth = c[None, :] == KP - k
        tk = tl.sum(tl.where(kth, bk, 0), axis=1)
        tp = tl.sum(tl.where(kth, bp, 0), axis=1)
        empty = tk == SENTINEL
        tl.store(thr_v_ptr + r, tl.where(empty, float("-inf"), rank_key_value(tk)))
        tl.store(thr_i_ptr + r, tl.where(empty, _INT32_MAX, tp))


@triton.jit
def flush(thr_v, fill, bk_ptr, bp_ptr, qk_ptr, qi_ptr, fill_ptr, thr_v_ptr, thr_i_ptr, k,
          BLOCK_M: tl.constexpr, KP: tl.constexpr, QC: tl.constexpr, CH: tl.constexpr, MR: tl.constexpr):
    """Merge all queues now (barriers around the merge: queue items and buffers were written by other threads).

    Returns:
        (thr_v, thr_i, fill) after the merge: the new thresholds, empty queues.
    """
    rows = tl.arange(0, BLOCK_M)
    tl.store(fill_ptr + rows, fill)
    tl.debug_barrier()
    merge_queue(bk_ptr, bp_ptr, qk_ptr, qi_ptr, fill_ptr, thr_v_ptr, thr_i_ptr, k, BLOCK_M, KP, QC, CH, MR)
    tl.debug_barrier()
    new_thr_v = tl.load(thr_v_ptr + rows, cache_modifier=".cg").to(thr_v.dtype)
    new_thr_i = tl.load(thr_i_ptr + rows, cache_modifier=".cg")
    return new_thr_v, new_thr_i, tl.zeros_like(fill)


@triton.jit
def select_tile(v, n0, valid, thr_v, thr_i, fill, bk_ptr, bp_ptr, qk_ptr, qi_ptr, fill_ptr, thr_v_ptr, thr_i_ptr, k,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, KP: tl.constexpr, QC: tl.constexpr,
                CH: tl.constexpr, MR: tl.constexpr, BULK: tl.constexpr):
    """Offer one tile (items n0 .. n0 + BLOCK_N - 1) to the collector.

    Args:
        v: (BLOCK_M, BLOCK_N) scores, larger is better (float32 or float64). valid: (BLOCK_M, BLOCK_N) bool, False
            for padding and excluded items.
        thr_v, thr_i: (BLOCK_M,) threshold value (v's dtype) and index of every row; fill: (BLOCK_M,) int32 queue
            lengths.
        BULK: allow queueing whole tiles. It needs a rank key and an address per score at once, which a large
            ``tl.dot`` tile cannot afford in registers (the k-NN kernel turns it off; extraction alone is exact).
    Returns:
        (thr_v, thr_i, fill) after the tile.
    """
    rows = tl.arange(0, BLOCK_M)
    j = tl.arange(0, BLOCK_N)
    cols = n0 + j
    better = valid & ((v > thr_v[:, None]) | ((v == thr_v[:, None]) & (cols[None, :] < thr_i[:, None])))
    n_new = tl.sum(better.to(tl.int32), axis=1)
    rounds = tl.max(n_new, axis=0)
    if rounds > 0:
        # many candidates (the first tiles, or a large k): queue the whole tile, non-candidates as sentinels;
        # few (the common case): extract them one round at a time
        bulk = BULK and (rounds > BLOCK_N // 4)
        need = tl.where(bulk, BLOCK_N, rounds)
        if tl.max(fill, axis=0) + need > QC:
            thr_v, thr_i, fill = flush(thr_v, fill, bk_ptr, bp_ptr, qk_ptr, qi_ptr, fill_ptr, thr_v_ptr, thr_i_ptr,
                                       k, BLOCK_M, KP, QC, CH, MR)
        if bulk:
            off = (rows * QC + fill)[:, None] + j[None, :]
            tl.store(qk_ptr + off, tl.where(better, rank_key(v), SENTINEL))
            tl.store(qi_ptr + off, tl.where(better, cols[None, :], _INT32_MAX))
            fill += BLOCK_N
        else:
            cand = tl.where(better, v, float("-inf"))
            for i in range(rounds):
                # every row's best remaining candidate, equal values: the smaller column first (two plain reductions
                # instead of one arg-max: no (value, index) pair per score in registers)
                best = tl.max(cand, axis=1)
                at = tl.min(tl.where(cand == best[:, None], j[None, :], BLOCK_N), axis=1)
                has = i < n_new
                off = rows * QC + fill
                tl.store(qk_ptr + off, rank_key(best), mask=has)
                tl.store(qi_ptr + off, n0 + at, mask=has)
                fill += has.to(tl.int32)
                cand = tl.where(j[None, :] == at[:, None], float("-inf"), cand)
    return thr_v, thr_i, fill


@triton.jit
def write_topk(out_v_ptr, out_i_ptr, out_stride, bk_ptr, bp_ptr, row0, n_rows, k, out_sign,
               OUT_SQRT: tl.constexpr, BLOCK_M: tl.constexpr, KP: tl.constexpr, MR: tl.constexpr):
    """Write the best k of every buffer row, best first: values ``out_sign * v`` (then sqrt with OUT_SQRT, for
    squared distances) in out_v's dtype, int64 indices. Call after a flush."""
    c = tl.arange(0, KP)
    j = KP - 1 - c  # output column of buffer column c (the buffer is worst first)
    for r0 in range(0, BLOCK_M, MR):  # a loop, not unrolled: code size
        r = r0 + tl.arange(0, MR)
        bk = tl.load(bk_ptr + r[:, None] * KP + c[None, :], cache_modifier=".cg")
        bp = tl.load(bp_ptr + r[:, None] * KP + c[None, :], cache_modifier=".cg")
        v = rank_key_value(bk) * out_sign
        if OUT_SQRT:
            v = tl.sqrt(tl.maximum(v, 0.0))  # float64: sqrt.rn.f64, correctly rounded
        row = (row0 + r).to(tl.int64)
        m = ((row0 + r) < n_rows)[:, None] & (j < k)[None, :]
        off = row[:, None] * out_stride + j[None, :]
        tl.store(out_v_ptr + off, v.to(out_v_ptr.dtype.element_ty), mask=m)
        tl.store(out_i_ptr + off, bp.to(tl.int64), mask=m)
