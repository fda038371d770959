"""Plain, dense PyTorch oracle of DESIGN §2: readable, any device, float64 where it matters.

Every fused kernel (C++, Triton, CUDA) is tested against these functions, and the benchmarks use them as the
baseline. They do exactly what DESIGN §2 says, step by step, with dense matrices and a per-query loop, the way the
released ICFRR code works (a G x G rank matrix, gathers of K_q rows per query and iteration, a full sort per
iteration). Nothing here is fast; everything here is obvious.

Functions:
    dense_topk     per-row top-k of a dense matrix (stable: ties -> smaller index), optional self exclusion
    knn_scores     dense (Q, G) float64 scores of the k-NN metrics ("ip", "cosine", "l2", "l2sq")
    knn_topk       exact k-NN by brute force in float64
    icfrr_rerank   DESIGN §2, both semantics, depth, history and early stop
    icfrr_candidates  the same over (Q, L) candidate lists in any order (padding -1), votes outside them dropped
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["dense_topk", "knn_topk", "icfrr_rerank", "icfrr_candidates", "knn_scores"]


def dense_topk(
    x: Tensor, k: int, largest: bool = True, exclude_self: bool = False, row_offset: int = 0
) -> Tuple[Tensor, Tensor]:
    """Top-k of each row of ``x`` (R, C), best first; ties go to the smaller column index.

    With ``exclude_self`` the column ``r + row_offset`` is removed from row ``r`` by index (DESIGN §2: a gallery
    item is never its own neighbour, even when another item coincides with it).

    Returns:
        values (R, k) of x's dtype, indices (R, k) int64.
    """
    R, C = x.shape
    order = torch.sort(x, dim=1, descending=largest, stable=True).indices  # stable: ties keep index order
    if exclude_self:
        self_col = torch.arange(R, device=x.device) + row_offset
        keep = order != self_col[:, None]
        # rows whose self column lies outside [0, C) keep all C entries; drop the last one to keep a rectangle
        n_keep = keep.sum(dim=1)
        keep[n_keep == C, C - 1] = False
        order = order[keep].view(R, C - 1)
    idx = order[:, :k]
    return torch.gather(x, 1, idx), idx


def knn_scores(x: Tensor, y: Tensor, metric: str, precision: str = "fp32") -> Tensor:
    """Dense (Q, G) float64 scores of the k-NN metrics: "ip" = x.y, "cosine" = x.y / (|x| |y|) (0 for a zero
    vector), "l2" = |x - y| (Euclidean distance, as torch.cdist; rank it smallest first), "l2sq" = |x - y|^2.

    ``precision="bf16"`` first rounds x and y to bfloat16 (the inputs the bf16 kernels multiply), then computes in
    float64.
    """
    if precision == "bf16":
        x, y = x.to(torch.bfloat16), y.to(torch.bfloat16)
    elif precision != "fp32":
        raise ValueError(f"precision must be 'fp32' or 'bf16'; got {precision!r}")
    x64, y64 = x.to(torch.float64), y.to(torch.float64)
    if metric == "ip":
        return x64 @ y64.T
    if metric == "cosine":
        nx, ny = x64.norm(dim=1, keepdim=True), y64.norm(dim=1, keepdim=True)
        xn = torch.where(nx > 0, x64 / nx.clamp_min(1e-300), torch.zeros_like(x64))
        yn = torch.where(ny > 0, y64 / ny.clamp_min(1e-300), torch.zeros_like(y64))
        return xn @ yn.T
    if metric == "l2":
        return torch.cdist(x64, y64, compute_mode="donot_use_mm_for_euclid_dist")
    if metric == "l2sq":  # sum of squared differences (exact for small integers; cdist's square is not)
        rows = [((x64[i] - y64) ** 2).sum(dim=1) for i in range(x64.shape[0])]
        return torch.stack(rows) if rows else x64.new_zeros((0, y64.shape[0]))
    raise ValueError(f"metric must be one of 'ip', 'cosine', 'l2', 'l2sq'; got {metric!r}")


def knn_topk(
    x: Tensor,
    y: Tensor,
    k: int,
    metric: str = "ip",
    exclude_self: bool = False,
    largest: Optional[bool] = None,
    row_offset: int = 0,
    precision: str = "fp32",
) -> Tuple[Tensor, Tensor]:
    """Exact k nearest rows of ``y`` (G, D) for each row of ``x`` (Q, D), by brute force in float64.

    ``largest`` defaults to True for "ip"/"cosine" (similarities) and False for "l2"/"l2sq" (distances). With
    ``exclude_self`` row i never returns item ``i + row_offset`` (x is a slice of y). Ties go to the smaller index.

    Returns:
        values (Q, k) float64 (similarity, Euclidean distance for "l2", its square for "l2sq"), indices (Q, k) int64.
    """
    if largest is None:
        largest = metric not in ("l2", "l2sq")
    s = knn_scores(x, y, metric, precision)
    return dense_topk(s, k, largest=largest, exclude_self=exclude_self, row_offset=row_offset)


def _rank_matrix(neighbors: Tensor) -> Tensor:
    """Dense (N, N) int64 matrix of a (N, K_g) graph: rank_of[i, j] = r when j = n_i(r), else -1 (the released
    code's G x G ranks). Entries -1 of the graph (a neighbour outside the N rows) are dropped, keeping their rank."""
    N, K_g = neighbors.shape
    rank_of = torch.full((N, N + 1), -1, dtype=torch.int64, device=neighbors.device)  # column N collects the -1s
    ranks = torch.arange(K_g, device=neighbors.device).expand(N, K_g)
    rank_of.scatter_(1, torch.where(neighbors < 0, N, neighbors.long()), ranks)
    return rank_of[:, :N]


def _iterate_query(order: Tensor, slot: Tensor, rank_of: Tensor, *, G: int, k_q: int, beta: float, iters: int,
                   semantics: str, early_stop: bool) -> Tuple[Tensor, list]:
    """DESIGN §2 steps 1-5 for one query, from its initial order.

    Args:
        order: (L,) int64 ids of the candidates in the initial order pi^(0), best first.
        slot: (L,) float64 their initial scores (larger is better), v_p, non-increasing.
        rank_of: (N, N) int64 from ``_rank_matrix``; ids index its rows and columns.
        G: the gallery size in the rank weight alpha(r) = 1 - r / (G - 1).

    Returns:
        key (L,) float64 final key of the item at each position, and the orders after every iteration that ran
        ([0] = ``order``).
    """
    L = order.shape[0]
    kq = min(k_q, L)
    key = slot.clone()  # key of the item at each position; for "paper" the item's accumulated score
    steps = [order]
    for _ in range(iters):
        voters = order[:kq]  # step 1: the first K_q' items
        # step 2: c_j = #voters having j among their neighbours, R_j = sum of j's ranks in their lists
        ranks = rank_of[voters][:, order]  # (K_q', L) rank of each candidate in each voter's list, -1 if absent
        c = (ranks >= 0).sum(dim=0)
        R = ranks.clamp(min=0).sum(dim=0)
        # step 3: delta_j = (c_j (G-1) - R_j) / ((G-1) K_q') in float64 from exact integers
        delta = (c * (G - 1) - R).to(torch.float64) / float((G - 1) * kq)
        # step 4: new keys; positions without votes keep their key (delta = 0 exactly)
        base = slot if semantics == "reference" else key
        new_key = torch.where(c > 0, base + beta * delta, base)
        # step 5: stable sort: ties keep the current order
        perm = torch.sort(new_key, descending=True, stable=True).indices
        new_order = order[perm]
        key = new_key[perm]
        same_voters = bool(torch.equal(torch.sort(new_order[:kq]).values, torch.sort(voters).values))
        order = new_order
        steps.append(order)
        if early_stop and same_voters:
            break
    while len(steps) < iters + 1:
        steps.append(order)
    return key, steps


def icfrr_rerank(
    scores: Tensor,
    neighbors: Tensor,
    *,
    k_q: int,
    beta: float,
    iters: int,
    semantics: str = "reference",
    largest: bool = True,
    depth: Optional[int] = None,
    k: Optional[int] = None,
    return_history: bool = False,
    early_stop: bool = False,
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """ICFRR re-ranking, exactly as DESIGN §2 defines it.

    Args:
        scores: (Q, G) float scores, larger is better (distances with ``largest=False``; they are negated).
        neighbors: (G, K_g) integer; row i = N_i, the K_g nearest other gallery items of item i, nearest first.
        k_q: voters per iteration (clipped to the number of candidates L).
        beta: vote weight.
        iters: number of iterations T >= 0.
        semantics: "reference" (the released code: slot values + this iteration's votes) or "paper"
            (s^(t+1) = s^(t) + beta * delta^(t), votes accumulate).
        depth: L, candidates = the top-L of the initial ranking (None: all G).
        k: outputs per query (None: all L).
        return_history: also return the order after every iteration, (Q, T + 1, k), [:, 0] = initial order.
        early_stop: stop a query once an iteration leaves its voter set unchanged.

    Returns:
        values (Q, k) final keys (negated back for ``largest=False``) with scores' dtype, like ``torch.topk``
        (float64 keys rounded to float32 first for float32/float16/bfloat16 scores), indices (Q, k) int64, history
        or None.
    """
    Q, G = scores.shape
    L = G if depth is None else int(depth)
    k_out = L if k is None else int(k)
    dev = scores.device
    sign = 1.0 if largest else -1.0
    s_all = scores.to(torch.float64) * sign  # exact negation
    rank_of = _rank_matrix(neighbors)
    val_dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32  # keys rounded as the kernels do
    values = torch.empty(Q, k_out, dtype=val_dtype, device=dev)
    indices = torch.empty(Q, k_out, dtype=torch.int64, device=dev)
    history = torch.empty(Q, iters + 1, k_out, dtype=torch.int64, device=dev) if return_history else None

    for q in range(Q):
        s = s_all[q]
        # pi^(0): scores descending, ties by smaller index (stable sort), top L kept.
        order = torch.sort(s, descending=True, stable=True).indices[:L]
        key, steps = _iterate_query(order, s[order], rank_of, G=G, k_q=k_q, beta=beta, iters=iters,
                                    semantics=semantics, early_stop=early_stop)
        values[q] = (key[:k_out] * sign).to(val_dtype)
        indices[q] = steps[-1][:k_out]
        if history is not None:
            history[q] = torch.stack([st[:k_out] for st in steps])
    return values.to(scores.dtype), indices, history


def icfrr_candidates(
    scores: Tensor,
    ids: Tensor,
    neighbors: Tensor,
    *,
    gallery_size: int,
    k_q: int,
    beta: float,
    iters: int,
    semantics: str = "reference",
    largest: bool = True,
    k: Optional[int] = None,
    return_history: bool = False,
    early_stop: bool = False,
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """ICFRR re-ranking of candidate lists: DESIGN §2 with the candidates given instead of the top-L of dense scores.

    Row q holds L_q real candidates ``ids[q, :L_q]`` (then padding -1) with scores ``scores[q, :L_q]``, in any
    order. The initial order pi^(0) sorts them best first, ties by the smaller id; then ICFRR runs exactly as
    ``icfrr_rerank`` with depth L_q: K_q' = min(k_q, L_q) voters, votes for items outside the list dropped, the
    rank weight alpha(r) = 1 - r / (G - 1) with G = ``gallery_size``.

    Args:
        scores: (Q, L) float scores of the candidates, larger is better (distances with ``largest=False``).
        ids: (Q, L) int32/int64 candidate ids (rows of ``neighbors``), distinct per row, padding -1 as a suffix.
        neighbors: (N, K_g) integer gallery graph, nearest first, entries in [-1, N - 1] (-1: no vote).
        gallery_size: G >= N.
        k: outputs per query (None: L).
        k_q, beta, iters, semantics, return_history, early_stop: as ``icfrr_rerank``.

    Returns:
        values (Q, k) of scores' dtype (final keys, sign restored), indices (Q, k) int64 ids, history
        (Q, T + 1, k) int64 or None. Positions beyond L_q hold index -1 and value -inf (largest) / +inf.
    """
    Q, L = ids.shape
    k_out = L if k is None else int(k)
    dev = scores.device
    sign = 1.0 if largest else -1.0
    s_all = scores.to(torch.float64) * sign  # exact negation
    rank_of = _rank_matrix(neighbors)
    values = torch.full((Q, k_out), -sign * math.inf, dtype=torch.float64, device=dev)
    indices = torch.full((Q, k_out), -1, dtype=torch.int64, device=dev)
    history = torch.full((Q, iters + 1, k_out), -1, dtype=torch.int64, device=dev) if return_history else None

    for q in range(Q):
        real = ids[q] >= 0
        cand, s = ids[q][real].long(), s_all[q][real]
        if cand.numel() == 0:
            continue
        # pi^(0): scores descending, ties by smaller id: a stable sort by id, then a stable sort by score
        by_id = torch.sort(cand, stable=True).indices
        cand, s = cand[by_id], s[by_id]
        perm = torch.sort(s, descending=True, stable=True).indices
        key, steps = _iterate_query(cand[perm], s[perm], rank_of, G=gallery_size, k_q=k_q, beta=beta, iters=iters,
                                    semantics=semantics, early_stop=early_stop)
        n = min(k_out, cand.numel())
        values[q, :n] = key[:n] * sign
        indices[q, :n] = steps[-1][:n]
        if history is not None:
            history[q, :, :n] = torch.stack([st[:n] for st in steps])
    return values.to(scores.dtype), indices, history
