"""ICFRR over candidate lists (docs/design.md §2 with the candidates given): per query, all T iterations of integer vote
accumulation + stable re-sort, in one program.
Oracle: reference.icfrr_candidates, the CPU op   Test: tests/test_triton_icfrr_candidates.py
Bench: benchmarks/gpu_bench.py
Invariants: votes are exact packed integers (vote.h: acc = count << 40 | rank sum), delta and keys are float64 with
vote.h's expression order and no FMA contraction (launched with enable_fp_fusion=False); the initial order and every
re-sort are stable bitonic sorts of exact (rank key, tie-breaker) pairs; rows of any order and length (padding -1),
graph entries -1, both semantics, k, history and early stop behave as the CPU op, bit for bit.
``icfrr_rerank_triton`` (dense scores) is ``dense_topk`` followed by this kernel.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._launch import empty, interpreted, launch_persistent, next_pow2
from ._pair_sort import SENTINEL, rank_key, rank_key_value, sort_pairs

__all__ = ["icfrr_candidates_triton", "MAX_DEPTH"]

#: largest candidate depth L whose state fits in one program's registers (L keys, payloads and slot values)
from .._checks import TRITON_MAX_DEPTH as MAX_DEPTH  # noqa: E402  (one definition)
_SHIFT = tl.constexpr(40)  # vote.h VotePacking<uint64_t>: count << 40 | rank sum
_ONE_VOTE = tl.constexpr(1 << 40)
_RANK_MASK = tl.constexpr((1 << 40) - 1)
_EMPTY = tl.constexpr(-1)  # empty hash-table entry


@triton.jit
def _hash_slot(key, LOG_HT: tl.constexpr):
    # Fibonacci hashing (Knuth, TAOCP vol. 3, §6.4): the top LOG_HT bits of key * 2^64 / golden ratio (as int64)
    h = key.to(tl.int64) * -7046029254386353131
    return ((h >> (64 - LOG_HT)) & ((1 << LOG_HT) - 1)).to(tl.int32)


@triton.jit
def _table_insert(tab_ptr, key, val, live, LOG_HT: tl.constexpr):
    """Insert key -> val (distinct non-negative int32 keys) into the open-addressing table (2^LOG_HT int64 entries
    ``key << 32 | val`` plus one spare entry; -1 = empty) for the live lanes. Returns each lane's entry index."""
    HT: tl.constexpr = 1 << LOG_HT
    h = _hash_slot(key, LOG_HT)
    entry = (key.to(tl.int64) << 32) | val.to(tl.int64)
    todo = live
    while tl.max(todo.to(tl.int32)) > 0:  # over all axes
        # lanes with nothing to do compare-and-swap the spare entry against -2, which it never holds: no write
        ptr = tl.where(todo, tab_ptr + h, tab_ptr + HT)
        expect = tl.where(todo, _EMPTY, -2).to(tl.int64)
        old = tl.atomic_cas(ptr, expect, entry, sem="relaxed")
        todo = todo & (old != _EMPTY)
        h = tl.where(todo, (h + 1) & (HT - 1), h)  # linear probing
    return h


@triton.jit
def _table_find(tab_ptr, key, m, LOG_HT: tl.constexpr):
    """Value stored for each key (masked lanes and absent keys: -1). Keys must be >= 0 on unmasked lanes."""
    HT: tl.constexpr = 1 << LOG_HT
    h = _hash_slot(key, LOG_HT)
    found = tl.full(key.shape, -1, tl.int32)
    todo = m
    while tl.max(todo.to(tl.int32)) > 0:  # over all axes
        # .cg: the table was written with atomics (in L2); L1 may hold a stale line from an earlier query
        e = tl.load(tab_ptr + h, mask=todo, other=_EMPTY, cache_modifier=".cg")
        hit = todo & ((e >> 32) == key)
        found = tl.where(hit, (e & 0xFFFFFFFF).to(tl.int32), found)
        todo = todo & (~hit) & (e != _EMPTY)
        h = (h + 1) & (HT - 1)
    return found


@triton.jit
def _icfrr_candidates_kernel(
    out_v_ptr, out_i_ptr, out_stride,  # (Q, k) final keys (sign restored; OUT_F64: float64, else float32), int64 ids
    hist_ptr, hist_stride_q, hist_stride_t,  # (Q, T + 1, k) int64 order after each iteration (HISTORY)
    cand_v_ptr, cand_v_stride, cand_i_ptr, cand_i_stride,  # (Q, L) float32/float64 scores; int32/int64 ids, -1 = pad
    nbr_ptr, nbr_stride,  # (N, K_g) int32 gallery graph: row i = N_i, nearest first, -1 = no neighbour
    par_ptr,  # (1,) float64: beta (a Python float would arrive as float32)
    tab_ptr, acc_ptr, gid_ptr, og_ptr,  # per program: (HT + 1) int64 = -1, (LP) int64 = 0, (LP) int32, (LP) int32
    Q, G, K_g, k_q, L, k, iters, n_prog,
    PAPER: tl.constexpr, EARLY_STOP: tl.constexpr, HISTORY: tl.constexpr, LARGEST: tl.constexpr,
    SORTED: tl.constexpr, OUT_F64: tl.constexpr,
    LP: tl.constexpr, LOG_HT: tl.constexpr, VB: tl.constexpr, KB: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)  # int64 before it multiplies a stride
    tab_ptr += pid * ((1 << LOG_HT) + 1)
    acc_ptr += pid * LP
    gid_ptr += pid * LP
    og_ptr += pid * LP
    p = tl.arange(0, LP)  # positions; also the candidate index c = initial position
    beta = tl.load(par_ptr)
    g1 = tl.cast(G, tl.int64) - 1
    out_col = p < k
    for q in range(tl.program_id(0), Q, n_prog):
        qo = tl.cast(q, tl.int64)
        # pi^(0): the row's real candidates (ids before the first -1) by score descending, ties -> smaller id:
        # ascending (rank key, id), one sort of the row unless it already comes in this order (SORTED)
        gid = tl.load(cand_i_ptr + qo * cand_i_stride + p, mask=p < L, other=-1).to(tl.int32)
        live = gid >= 0
        n_live = tl.sum(live.to(tl.int32), axis=0)  # L_q: padding is a suffix
        s = tl.load(cand_v_ptr + qo * cand_v_stride + p, mask=live, other=0.0).to(tl.float64)
        if not LARGEST:
            s = -s  # exact
        slot_rk = tl.where(live, rank_key(s), SENTINEL)
        if not SORTED:
            slot_rk, gid = sort_pairs(slot_rk, gid, False)  # padding (SENTINEL) stays last
        slot = rank_key_value(slot_rk)  # v_p, fixed (NaN on padding, never read there)
        kq = tl.minimum(n_live, k_q)
        # (G - 1) K_q': the int64 product rounded once to float64, as vote_delta does (1 for an empty row)
        den = (g1 * tl.maximum(kq, 1)).to(tl.float64)
        tl.store(gid_ptr + p, gid, mask=live)  # gid of candidate c
        tl.store(og_ptr + p, gid, mask=live)  # gid at position p (voters are read from here)
        entry = _table_insert(tab_ptr, gid, p, live, LOG_HT)  # gallery id -> candidate index
        if HISTORY:
            tl.store(hist_ptr + qo * hist_stride_q + p, gid.to(tl.int64), mask=out_col)
        tl.debug_barrier()
        cur_rk = slot_rk  # key of the item at each position (rank-key form, exact)
        ordc = p  # candidate index at each position
        og = gid
        t = 1
        stop = (n_live == 0).to(tl.int32)
        while (t <= iters) & (stop == 0):
            # docs/design.md §2 steps 1-2: the first K_q' items vote for their neighbours that are candidates
            for v0 in range(0, kq, VB):
                vi = v0 + tl.arange(0, VB)
                vm = vi < kq
                voter = tl.load(og_ptr + vi, mask=vm, other=0, cache_modifier=".cg")
                vrow = nbr_ptr + voter.to(tl.int64) * nbr_stride
                for r0 in range(0, K_g, KB):
                    r = r0 + tl.arange(0, KB)
                    m = vm[:, None] & (r < K_g)[None, :]
                    j = tl.load(vrow[:, None] + r[None, :], mask=m, other=-1)
                    c = _table_find(tab_ptr, j, m & (j >= 0), LOG_HT)  # -1: not a candidate, or no neighbour
                    inc = _ONE_VOTE + r.to(tl.int64)  # vote_increment: one count, rank r
                    tl.atomic_add(acc_ptr + c, inc[None, :] + tl.zeros_like(c).to(tl.int64), mask=m & (c >= 0),
                                  sem="relaxed")
            tl.debug_barrier()  # all votes are in before they are read
            votes = tl.atomic_xchg(acc_ptr + ordc, tl.zeros([LP], tl.int64), mask=live, sem="relaxed")
            count = votes >> _SHIFT
            rank_sum = votes & _RANK_MASK
            # step 3 (vote_delta): exact integers, one correctly rounded float64 division
            delta = (count * g1 - rank_sum).to(tl.float64) / den
            # step 4 (vote_key): base + beta * delta, two roundings (no FMA: launched with enable_fp_fusion=False)
            if PAPER:
                base = rank_key_value(cur_rk)
                base_rk = cur_rk
            else:
                base = slot
                base_rk = slot_rk
            boost = beta * delta
            key = base + boost
            new_rk = tl.where(live, tl.where(count > 0, rank_key(key), base_rk), SENTINEL)
            # step 5: stable sort by key, ties keep the current order (the payload's high half is the position)
            new_rk, pay = sort_pairs(new_rk, (p << 16) | ordc, False)
            old_pos = pay >> 16
            ordc = pay & 0xFFFF
            changed = tl.max((old_pos != p).to(tl.int32), axis=0)
            new_voter = tl.max(((p < kq) & (old_pos >= kq)).to(tl.int32), axis=0)
            cur_rk = new_rk
            og = tl.load(gid_ptr + ordc, mask=live, other=-1, cache_modifier=".cg")
            tl.debug_barrier()  # every thread has read this iteration's voters before they are overwritten
            tl.store(og_ptr + p, og, mask=live)
            if HISTORY:
                tl.store(hist_ptr + qo * hist_stride_q + t * hist_stride_t + p, og.to(tl.int64), mask=out_col)
            tl.debug_barrier()
            if not PAPER:
                # "reference" keys depend only on the order: an unchanged order is an exact fixed point
                stop = stop | (changed == 0)
            if EARLY_STOP:
                stop = stop | (new_voter == 0)
            t += 1
        if HISTORY:
            for rest in range(t, iters + 1):  # the order after a stop repeats (padding: -1 throughout)
                tl.store(hist_ptr + qo * hist_stride_q + rest * hist_stride_t + p, og.to(tl.int64), mask=out_col)
        value = rank_key_value(cur_rk)
        if not LARGEST:
            value = -value
        pad = float("-inf") if LARGEST else float("inf")  # past the last candidate, as torch.topk pads
        value = tl.where(live, value, pad)
        if OUT_F64:
            tl.store(out_v_ptr + qo * out_stride + p, value, mask=out_col)
        else:
            tl.store(out_v_ptr + qo * out_stride + p, value.to(tl.float32), mask=out_col)
        tl.store(out_i_ptr + qo * out_stride + p, og.to(tl.int64), mask=out_col)
        tl.atomic_xchg(tab_ptr + entry, tl.full([LP], -1, tl.int64), mask=live, sem="relaxed")  # empty the table
        tl.debug_barrier()


def _vote_shape(K_g: int, kq: int, lanes: int) -> Tuple[int, int]:
    """(VB voters, KB neighbour ranks) per vote step: about ``lanes`` lookups in flight."""
    kb = min(next_pow2(K_g), lanes)
    vb = max(1, min(next_pow2(kq), lanes // kb))
    return vb, kb


def icfrr_num_warps(LP: int) -> int:
    """Warps of the ICFRR kernel for LP candidate slots: one element per thread per 256 slots, 4 to 16 warps."""
    return max(4, min(16, LP // 256))


def icfrr_candidates_triton(
    scores: Tensor,
    ids: Tensor,
    neighbors: Tensor,
    gallery_size: int,
    k_q: int,
    beta: float,
    iters: int,
    semantics: str,
    largest: bool,
    k: int,
    return_history: bool,
    early_stop: bool,
    *,
    rows_sorted: bool = False,
    out_dtype: Optional[torch.dtype] = None,
    num_programs: Optional[int] = None,
    alloc: Callable[..., Tensor] = empty,
) -> Tuple[Tensor, Tensor, Tensor]:
    """All ICFRR iterations over (Q, L) candidate lists (the contract of ``ops.icfrr_candidates``), one program per
    query at a time. Arguments are validated by ``ops.validate_icfrr_candidates``; L <= ``MAX_DEPTH``.

    Args:
        scores: (Q, L) float32/float64 scores of the candidates (distances with ``largest=False``), unit column
            stride; float16/bfloat16 are converted (exactly) to float32.
        ids: (Q, L) int32/int64 candidate ids (rows of ``neighbors``), distinct per row, padding -1 as a suffix.
        neighbors: (N, K_g) int32 gallery graph, entries in [-1, N - 1].
        gallery_size: G >= N, in the rank weight alpha(r) = 1 - r / (G - 1).
        rows_sorted: the real candidates of every row already come best first, ties by smaller id (a top-k's
            output): the kernel then skips its initial sort.
        out_dtype: dtype of the values the kernel writes: float32 or float64 (default: float32 for float32 scores,
            else float64, which the caller rounds once to the scores' dtype).
        num_programs: persistent grid size (default: as many as the compiled kernel fits on the GPU at once,
            ``_launch.persistent_programs``; 2 in the interpreter).
        alloc: ``alloc(shape, dtype, device)`` allocates the outputs (tests pass one that poisons them).

    Returns:
        values (Q, k) of ``out_dtype``, indices (Q, k) int64, history (Q, T + 1, k) int64 or (Q, 0, k); positions
        beyond a row's candidates: index -1, value -inf (``largest``) / +inf.
    """
    Q, L = ids.shape
    if L > MAX_DEPTH:
        raise ValueError(f"the Triton ICFRR kernel holds at most {MAX_DEPTH} candidates per query; got L = {L}")
    dev = ids.device
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.to(torch.float32)
    if out_dtype is None:
        out_dtype = torch.float32 if scores.dtype == torch.float32 else torch.float64
    kernel = _icfrr_candidates_kernel
    interp = interpreted(kernel)
    LP = max(16, next_pow2(L))
    log_ht = (LP * 4).bit_length() - 1  # load factor <= 1/4: short probe sequences
    vb, kb = _vote_shape(neighbors.shape[1], min(k_q, L), 64 if interp else 2048)
    values = alloc((Q, k), out_dtype, dev)
    indices = alloc((Q, k), torch.int64, dev)
    history = alloc((Q, iters + 1 if return_history else 0, k), torch.int64, dev)
    if Q == 0:
        return values, indices, history
    hist_arg = history if return_history else indices  # never written when HISTORY is off
    par = torch.tensor([float(beta)], dtype=torch.float64, device=dev)
    cv = scores if scores.stride(-1) == 1 else scores.contiguous()
    ci = ids if ids.stride(-1) == 1 else ids.contiguous()
    nbr = neighbors if neighbors.stride(1) == 1 else neighbors.contiguous()

    def make_args(P: int) -> tuple:
        tab = torch.full((P, (1 << log_ht) + 1), -1, dtype=torch.int64, device=dev)
        acc = torch.zeros((P, LP), dtype=torch.int64, device=dev)
        gid = torch.empty((P, LP), dtype=torch.int32, device=dev)
        og = torch.empty((P, LP), dtype=torch.int32, device=dev)
        return (values, indices, values.stride(0),
                hist_arg, history.stride(0) if return_history else 0, history.stride(1) if return_history else 0,
                cv, cv.stride(0), ci, ci.stride(0), nbr, nbr.stride(0), par, tab, acc, gid, og,
                Q, gallery_size, nbr.shape[1], k_q, L, k, iters, P)

    launch_persistent(kernel, dev, Q, make_args, dict(
        PAPER=semantics == "paper", EARLY_STOP=early_stop, HISTORY=return_history, LARGEST=largest,
        SORTED=rows_sorted, OUT_F64=out_dtype == torch.float64,
        LP=LP, LOG_HT=log_ht, VB=vb, KB=kb,
        num_warps=icfrr_num_warps(LP), num_stages=1, enable_fp_fusion=False,
    ), programs=num_programs)
    return values, indices, history
