"""Fused ICFRR (DESIGN §2): per query, all T iterations of integer vote accumulation + stable re-sort, in one program.
Oracle: reference.icfrr_rerank, the CPU op   Test: tests/test_triton_icfrr_rerank.py   Bench: benchmarks/gpu_bench.py
Invariants: votes are exact packed integers (vote.h: acc = count << 40 | rank sum), delta and keys are float64 with
vote.h's expression order and no FMA contraction (launched with enable_fp_fusion=False); the re-sort is stable
(key, then current position); both semantics, depth, k, history and early stop behave as the CPU op, bit for bit.
Two stages: the top-L candidates of each query's dense scores (``dense_topk``), then ``_icfrr_iterate_kernel`` on
(Q, L) candidates, which is also the entry point for candidates that come from the fused k-NN (``knn_topk``).
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._launch import empty, interpreted, next_pow2, persistent_programs
from ._pair_sort import SENTINEL, rank_key, rank_key_value, sort_pairs
from .dense_topk import dense_topk_triton

__all__ = ["icfrr_rerank_triton", "icfrr_iterate_triton", "MAX_DEPTH"]

#: largest candidate depth L whose state fits in one program's registers (L keys, payloads and slot values)
MAX_DEPTH = 4096
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
    """Value stored for each key (masked lanes and absent keys: -1)."""
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
def _icfrr_iterate_kernel(
    out_v_ptr, out_i_ptr, out_stride,  # (Q, k) float32 final keys (sign restored), int64 gallery ids
    hist_ptr, hist_stride_q, hist_stride_t,  # (Q, T + 1, k) int64 order after each iteration (HISTORY)
    cand_v_ptr, cand_i_ptr, cand_stride,  # (Q, L) float64 ranked scores (larger is better), best first; int64 ids
    nbr_ptr, nbr_stride,  # (G, K_g) int32 gallery graph: row i = N_i, nearest first
    par_ptr,  # (2,) float64: beta, (G - 1) K_q' (Python floats would arrive as float32)
    tab_ptr, acc_ptr, gid_ptr, og_ptr,  # per program: (HT + 1) int64 = -1, (LP) int64 = 0, (LP) int32, (LP) int32
    Q, G, K_g, kq, L, k, iters, n_prog,
    PAPER: tl.constexpr, EARLY_STOP: tl.constexpr, HISTORY: tl.constexpr, LARGEST: tl.constexpr,
    LP: tl.constexpr, LOG_HT: tl.constexpr, VB: tl.constexpr, KB: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)  # int64 before it multiplies a stride
    tab_ptr += pid * ((1 << LOG_HT) + 1)
    acc_ptr += pid * LP
    gid_ptr += pid * LP
    og_ptr += pid * LP
    p = tl.arange(0, LP)  # positions; also the candidate index c = initial position
    live = p < L
    beta = tl.load(par_ptr)
    den = tl.load(par_ptr + 1)  # (G - 1) K_q': the int64 product rounded once to float64, as vote_delta does
    g1 = tl.cast(G, tl.int64) - 1
    out_col = p < k
    for q in range(tl.program_id(0), Q, n_prog):
        qo = tl.cast(q, tl.int64)
        # pi^(0): the candidates are the top-L of the initial ranking, best first (ties -> smaller id)
        gid = tl.load(cand_i_ptr + qo * cand_stride + p, mask=live, other=-1).to(tl.int32)
        slot = tl.load(cand_v_ptr + qo * cand_stride + p, mask=live, other=0.0)  # v_p, fixed
        slot_rk = tl.where(live, rank_key(slot), SENTINEL)
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
        stop = 0
        while (t <= iters) & (stop == 0):
            # DESIGN §2 steps 1-2: the first K_q' items vote for their neighbours that are candidates
            for v0 in range(0, kq, VB):
                vi = v0 + tl.arange(0, VB)
                vm = vi < kq
                voter = tl.load(og_ptr + vi, mask=vm, other=0, cache_modifier=".cg")
                vrow = nbr_ptr + voter.to(tl.int64) * nbr_stride
                for r0 in range(0, K_g, KB):
                    r = r0 + tl.arange(0, KB)
                    m = vm[:, None] & (r < K_g)[None, :]
                    j = tl.load(vrow[:, None] + r[None, :], mask=m, other=0)
                    c = _table_find(tab_ptr, j, m, LOG_HT)
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
            for rest in range(t, iters + 1):  # the order after a stop repeats
                tl.store(hist_ptr + qo * hist_stride_q + rest * hist_stride_t + p, og.to(tl.int64), mask=out_col)
        value = rank_key_value(cur_rk)
        if not LARGEST:
            value = -value
        tl.store(out_v_ptr + qo * out_stride + p, value.to(tl.float32), mask=out_col)
        tl.store(out_i_ptr + qo * out_stride + p, og.to(tl.int64), mask=out_col)
        tl.atomic_xchg(tab_ptr + entry, tl.full([LP], -1, tl.int64), mask=live, sem="relaxed")  # empty the table
        tl.debug_barrier()


def _vote_shape(K_g: int, kq: int, lanes: int) -> Tuple[int, int]:
    """(VB voters, KB neighbour ranks) per vote step: about ``lanes`` lookups in flight."""
    kb = min(next_pow2(K_g), lanes)
    vb = max(1, min(next_pow2(kq), lanes // kb))
    return vb, kb


def icfrr_iterate_triton(
    cand_values: Tensor,
    cand_ids: Tensor,
    neighbors: Tensor,
    *,
    k_q: int,
    beta: float,
    iters: int,
    semantics: str = "reference",
    largest: bool = True,
    k: Optional[int] = None,
    return_history: bool = False,
    early_stop: bool = False,
    num_programs: Optional[int] = None,
    alloc: Callable[..., Tensor] = empty,
) -> Tuple[Tensor, Tensor, Tensor]:
    """All ICFRR iterations for (Q, L) candidates (DESIGN §2 with depth L), one program per query at a time.

    Args:
        cand_values: (Q, L) float64 ranked scores: larger is better (already negated for distances), sorted
            best first, ties by smaller id -- e.g. ``dense_topk_triton(..., signed_values=False)``.
        cand_ids: (Q, L) int64 gallery ids of the candidates, distinct per row.
        neighbors: (G, K_g) int32 gallery graph; G = neighbors.shape[0] sets the rank weight 1 - r / (G - 1).
        k_q, beta, iters, semantics, k, return_history, early_stop: as ``ops.icfrr_rerank`` (validated there).
        largest: sign of the returned values (False: negated back to distances).
        num_programs: persistent grid size (default: 4 per SM; 2 in the interpreter).
        alloc: ``alloc(shape, dtype, device)`` allocates the outputs (tests pass one that poisons them).

    Returns:
        values (Q, k) float32, indices (Q, k) int64, history (Q, T + 1, k) int64 or (Q, 0, k).
    """
    Q, L = cand_ids.shape
    G, K_g = neighbors.shape
    k = L if k is None else k
    if L > MAX_DEPTH:
        raise ValueError(f"the Triton ICFRR kernel holds at most {MAX_DEPTH} candidates per query; got L = {L}")
    dev = cand_ids.device
    kernel = _icfrr_iterate_kernel
    interp = interpreted(kernel)
    LP = max(16, next_pow2(L))
    log_ht = (LP * 4).bit_length() - 1  # load factor <= 1/4: short probe sequences
    kq = min(k_q, L)
    vb, kb = _vote_shape(K_g, kq, 64 if interp else 2048)
    P = num_programs or persistent_programs(dev, Q, 4)
    values = alloc((Q, k), torch.float32, dev)
    indices = alloc((Q, k), torch.int64, dev)
    history = alloc((Q, iters + 1 if return_history else 0, k), torch.int64, dev)
    hist_arg = history if return_history else indices  # never written when HISTORY is off
    tab = torch.full((P, (1 << log_ht) + 1), -1, dtype=torch.int64, device=dev)
    acc = torch.zeros((P, LP), dtype=torch.int64, device=dev)
    gid = torch.empty((P, LP), dtype=torch.int32, device=dev)
    og = torch.empty((P, LP), dtype=torch.int32, device=dev)
    par = torch.tensor([float(beta), float((G - 1) * kq)], dtype=torch.float64, device=dev)
    cv = cand_values.to(torch.float64).contiguous()
    ci = cand_ids.to(torch.int64).contiguous()
    nbr = neighbors if neighbors.stride(1) == 1 else neighbors.contiguous()
    if Q == 0:
        return values, indices, history
    kernel[(P,)](
        values, indices, values.stride(0),
        hist_arg, history.stride(0) if return_history else 0, history.stride(1) if return_history else 0,
        cv, ci, cv.stride(0), nbr, nbr.stride(0), par, tab, acc, gid, og,
        Q, G, K_g, kq, L, k, iters, P,
        PAPER=semantics == "paper", EARLY_STOP=early_stop, HISTORY=return_history, LARGEST=largest,
        LP=LP, LOG_HT=log_ht, VB=vb, KB=kb,
        num_warps=max(4, min(16, LP // 256)), num_stages=1, enable_fp_fusion=False,
    )
    return values, indices, history


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
        cv, ci = dense_topk_triton(s, L, largest, signed_values=False, value_dtype=torch.float64)
        parts.append(icfrr_iterate_triton(cv, ci, neighbors, k_q=k_q, beta=beta, iters=iters, semantics=semantics,
                                          largest=largest, k=k, return_history=return_history,
                                          early_stop=early_stop, alloc=alloc))
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat([p[i] for p in parts]) for i in range(3))
