"""Plain, dense PyTorch oracle of docs/design.md §2: readable, any device, float64 where it matters.

Every fused kernel (C++, Triton, CUDA) is tested against these functions, and the benchmarks use them as the
baseline. They do exactly what docs/design.md §2 says, step by step, with dense matrices and a per-query loop, the way the
released ICFRR code works (a G x G rank matrix, gathers of K_q rows per query and iteration, a full sort per
iteration). Nothing here is fast; everything here is obvious.

Functions:
    dense_topk     per-row top-k of a dense matrix (stable: ties -> smaller index), optional self exclusion
    knn_scores     dense (Q, G) float64 scores of the k-NN metrics ("ip", "cosine", "l2", "l2sq")
    knn_topk       exact k-NN by brute force in float64
    icfrr_rerank   docs/design.md §2, both semantics, depth, history and early stop
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

    With ``exclude_self`` the column ``r + row_offset`` is removed from row ``r`` by index (docs/design.md §2: a gallery
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
    """docs/design.md §2 steps 1-5 for one query, from its initial order.

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
    """ICFRR re-ranking, exactly as docs/design.md §2 defines it.

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
    """ICFRR re-ranking of candidate lists: docs/design.md §2 with the candidates given instead of the top-L of dense scores.

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


# ==================================================================================================================
# Re-rankers ICFRR is compared with (icfrr_fast.rerankers): dense oracles, written the way the published
# implementations compute them -- N x N (or Q x G) matrices, full sorts, per-row loops.
# ==================================================================================================================
def _sort_by_final(final: Tensor, tie: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """Per row: columns by ``final`` ascending, ties by ``tie`` ascending, then the smaller column; the first k."""
    p = torch.sort(tie, dim=1, stable=True).indices
    p = torch.gather(p, 1, torch.sort(torch.gather(final, 1, p), dim=1, stable=True).indices)[:, :k]
    return torch.gather(final, 1, p), p


def _k_reciprocal_dense(D: Tensor, Q: int, k1: int, k2: int, lambda_value: float, k: Optional[int],
                        self_first: bool) -> Tuple[Tensor, Tensor]:
    """k-reciprocal re-ranking of the N = Q + G items whose squared distances D (N, N) float32 hold, row i = item i
    (queries first). See icfrr_fast.rerankers.k_reciprocal for the definition; this is the shared re-ID function's
    computation: dense N x N original distances, a full argsort per row, dense N x N encodings, loops per item."""
    N = D.shape[0]
    G = N - Q
    original = D / D.max(dim=1, keepdim=True).values  # each row divided by its largest value (float32)
    key = D.clone()
    if self_first:
        key.fill_diagonal_(-1.0)  # the item itself ranks first (D >= 0 elsewhere)
    initial_rank = torch.argsort(key, dim=1, stable=True)  # ties -> smaller index

    def reciprocal(i: int, width: int) -> Tensor:
        forward = initial_rank[i, :width]
        backward = initial_rank[forward, :width]
        return forward[(backward == i).any(dim=1)]

    half = int(round(k1 / 2)) + 1
    V = torch.zeros((N, N), dtype=torch.float32)
    for i in range(N):
        r_i = reciprocal(i, k1 + 1)
        expansion = r_i
        for c in r_i.tolist():
            r_c = reciprocal(c, half)
            if int(torch.isin(r_c, r_i).sum()) > 2.0 / 3.0 * len(r_c):
                expansion = torch.cat([expansion, r_c])
        expansion = torch.unique(expansion)
        weight = torch.exp(-original[i, expansion]).to(torch.float64)
        V[i, expansion] = (weight / weight.sum()).to(torch.float32)
    if k2 != 1:
        V_qe = torch.zeros_like(V)
        for i in range(N):
            V_qe[i] = (V[initial_rank[i, :k2]].to(torch.float64).sum(dim=0) / min(k2, N)).to(torch.float32)
        V = V_qe
    VT = V.T.contiguous()
    inv_index = [torch.nonzero(VT[l]).squeeze(1) for l in range(N)]  # items whose encoding holds l
    jaccard = torch.ones((Q, N), dtype=torch.float64)
    for i in range(Q):
        temp_min = torch.zeros(N, dtype=torch.float64)
        for l in torch.nonzero(V[i]).squeeze(1).tolist():
            items = inv_index[l]
            temp_min[items] += torch.minimum(V[i, l], V[items, l]).to(torch.float64)
        jaccard[i] = 1.0 - temp_min / (2.0 - temp_min)
    orig_qg = original[:Q, Q:]
    final = (1.0 - lambda_value) * jaccard[:, Q:] + lambda_value * orig_qg.to(torch.float64)
    values, indices = _sort_by_final(final, orig_qg, G if k is None else k)
    return values.to(torch.float32), indices


def k_reciprocal(q_g: Tensor, q_q: Tensor, g_g: Tensor, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                 k: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) from dense distances, as the shared re-ID function does it:
    the (Q + G)^2 matrix [[q_q, q_g], [q_g^T, g_g]] squared in float32 and read by columns, each divided by its
    largest value, then the dense steps of :func:`_k_reciprocal_dense`.

    Returns:
        values (Q, k) float32 final distances ascending (ties: original distance, then smaller id), indices (Q, k).
    """
    M = torch.cat([torch.cat([q_q, q_g], dim=1), torch.cat([q_g.T, g_g], dim=1)])
    D = (M * M).to(torch.float32).T.contiguous()
    return _k_reciprocal_dense(D, q_g.shape[0], k1, k2, lambda_value, k, self_first=False)


def k_reciprocal_features(query: Tensor, gallery: Tensor, *, metric: str = "l2", k1: int = 20, k2: int = 6,
                          lambda_value: float = 0.3, k: int = 100) -> Tuple[Tensor, Tensor]:
    """k-reciprocal re-ranking from features: D = squared Euclidean distances of the float32 features (L2-normalised
    for "cosine") computed densely in float64 and rounded to float32, D(i, i) = 0 and the item itself first."""
    x = torch.cat([query, gallery]).to(torch.float32)
    if metric == "cosine":
        n = x.norm(dim=1, keepdim=True)
        x = torch.where(n > 0, x / n.clamp_min(torch.finfo(torch.float32).tiny), x)
    D = knn_scores(x, x, "l2sq").to(torch.float32)
    D.fill_diagonal_(0.0)
    return _k_reciprocal_dense(D, query.shape[0], k1, k2, lambda_value, k, self_first=True)


def _expand_dense(x: Tensor, y: Tensor, sims: Tensor, top: int, alpha: float, exclude_self: bool) -> Tensor:
    """normalise(x_i + sum over the top rows of y by sims (R, G) of max(s, 0)^alpha y_j), float64, one row a time."""
    out = torch.empty_like(x, dtype=torch.float64)
    for i in range(x.shape[0]):
        order = torch.sort(sims[i], descending=True, stable=True).indices
        if exclude_self:
            order = order[order != i]
        nb = order[:top]
        w = sims[i, nb].clamp_min(0.0) ** alpha if alpha != 0 else torch.ones(top, dtype=torch.float64)
        v = x[i].to(torch.float64) + (w[:, None] * y[nb].to(torch.float64)).sum(dim=0)
        n = v.norm()
        out[i] = v / n if n > 0 else v
    return out


def alpha_qe(query: Tensor, gallery: Tensor, *, top: int = 10, alpha: float = 3.0,
             k: int = 100) -> Tuple[Tensor, Tensor]:
    """alpha-QE (AQE for alpha = 0) with dense (Q, G) float64 similarities and full sorts: q' = normalise(q + sum of
    the top gallery items weighted by max(s, 0)^alpha), then the gallery ranked by q' . g (descending, ties -> smaller
    id). Returns values (Q, k) float32, indices (Q, k) int64."""
    g = gallery.to(torch.float32).to(torch.float64)
    q = query.to(torch.float32).to(torch.float64)
    qx = _expand_dense(q, g, q @ g.T, top, alpha, exclude_self=False)
    v, i = dense_topk(qx.to(torch.float32).to(torch.float64) @ g.T, k, largest=True)
    return v.to(torch.float32), i


def dba(query: Tensor, gallery: Tensor, *, top: int = 10, alpha: float = 0.0, k: int = 100) -> Tuple[Tensor, Tensor]:
    """Database-side augmentation with a dense (G, G) float64 similarity matrix and full sorts: each gallery item
    replaced by normalise(g_j + its top other items weighted by max(s, 0)^alpha), then queries ranked by q . g'."""
    g = gallery.to(torch.float32).to(torch.float64)
    g2 = _expand_dense(g, g, g @ g.T, top, alpha, exclude_self=True).to(torch.float32).to(torch.float64)
    v, i = dense_topk(query.to(torch.float32).to(torch.float64) @ g2.T, k, largest=True)
    return v.to(torch.float32), i


def aqe(query: Tensor, gallery: Tensor, *, top: int = 10, k: int = 100) -> Tuple[Tensor, Tensor]:
    """Average query expansion: :func:`alpha_qe` with alpha = 0."""
    return alpha_qe(query, gallery, top=top, alpha=0.0, k=k)


def _lex_order(key: Tensor, tie: Tensor, ids: Tensor, descending: bool = False) -> Tensor:
    """Order of a 1-D list by key, then tie (same direction), then the smaller id."""
    rows = sorted(range(len(ids)), key=lambda j: (float(key[j]) * (-1 if descending else 1),
                                                   float(tie[j]) * (-1 if descending else 1), int(ids[j])))
    return torch.tensor(rows, dtype=torch.int64)


def _graph_dense(Dgg: Tensor, width: int) -> Tensor:
    """(G, width) nearest other gallery items by a dense (G, G) distance matrix, ties -> smaller id."""
    return dense_topk(Dgg, width, largest=False, exclude_self=True)[1]


def ecn(query: Tensor, gallery: Tensor, *, candidates: Optional[Tensor] = None, graph: Optional[Tensor] = None,
        t: int = 3, q: int = 8, depth: int = 100, k: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """ECN re-ranking (Sarfraz et al., CVPR 2018) with dense float64 (Q, G) and (G, G) Euclidean distance matrices
    and a loop over queries and candidates: d_ECN(p, g) = (sum_{e in E(p)} d(e, g) + sum_{e in E(g)} d(p, e)) / 2M,
    E(x) = x's t nearest then the q nearest of each (gallery graph, self excluded; for p: its candidates).
    Candidates by d_ECN ascending, ties -> d(p, g), then smaller id; padding -> +inf / -1."""
    x = gallery.to(torch.float32).to(torch.float64)
    p_all = query.to(torch.float32).to(torch.float64)
    Dqg = torch.cdist(p_all, x, compute_mode="donot_use_mm_for_euclid_dist")
    Dgg = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    nbr = _graph_dense(Dgg, max(t, q)) if graph is None else graph.long()
    if candidates is None:
        candidates = dense_topk(Dqg, depth, largest=False)[1]
    L = candidates.shape[1]
    k_out = L if k is None else k
    M = t + t * q
    values = torch.full((query.shape[0], k_out), torch.inf, dtype=torch.float32)
    indices = torch.full((query.shape[0], k_out), -1, dtype=torch.int64)
    for i in range(query.shape[0]):
        cand = candidates[i][candidates[i] >= 0].long()
        d = Dqg[i, cand]
        near = cand[_lex_order(d, d, cand)[:t]]
        e_p = torch.cat([near] + [nbr[n, :q] for n in near])
        score = torch.empty(len(cand), dtype=torch.float64)
        for j, g in enumerate(cand.tolist()):
            first = nbr[g, :t]
            e_g = torch.cat([first] + [nbr[n, :q] for n in first])
            score[j] = (Dgg[e_p, g].sum() + Dqg[i, e_g].sum()) / (2 * M)
        order = _lex_order(score, d, cand)[:k_out]
        values[i, :len(order)] = score[order].to(torch.float32)
        indices[i, :len(order)] = cand[order]
    return values, indices


def superglobal(query: Tensor, gallery: Tensor, *, candidates: Optional[Tensor] = None, M: int = 400, K: int = 9,
                beta: float = 0.15, k: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """SuperGlobal's re-ranking (Shao et al., ICCV 2023) with a dense float64 (Q, G) similarity matrix, a full sort
    per query and per-item loops over the top-M shortlist: refine each shortlisted d_i as the weighted mean of its
    K + 1 most similar shortlisted items (weights 1, beta s_1, .., beta s_K), s1 = q . d'_i, q' = element-wise max of
    the K + 1 best refined descriptors by s1, final = (s1 + q' . d'_i) / 2 descending (ties -> earlier in the
    shortlist). Returns the shortlist re-ranked, padded with -inf / -1."""
    x = gallery.to(torch.float32).to(torch.float64)
    qs = query.to(torch.float32).to(torch.float64)
    S = qs @ x.T
    if candidates is None:
        candidates = dense_topk(S, M, largest=True)[1]
    m = min(M, candidates.shape[1])
    k_out = m if k is None else k
    values = torch.full((query.shape[0], k_out), -torch.inf, dtype=torch.float32)
    indices = torch.full((query.shape[0], k_out), -1, dtype=torch.int64)
    for i in range(query.shape[0]):
        cand = candidates[i][candidates[i] >= 0].long()
        s0 = S[i, cand]
        short = cand[_lex_order(s0, s0, cand, descending=True)[:m]]
        n = len(short)
        xs = x[short]
        sims = xs @ xs.T
        refined = torch.empty_like(xs)
        kk = min(K + 1, n)
        for r in range(n):
            order = torch.sort(sims[r], descending=True, stable=True).indices[:kk]
            w = beta * sims[r, order]
            w[0] = 1.0
            refined[r] = (w[:, None] * xs[order]).sum(dim=0) / w.sum()
        s1 = refined @ qs[i]
        pos = torch.arange(n)
        best = _lex_order(s1, s1, pos, descending=True)[:kk]
        q2 = refined[best].max(dim=0).values
        final = (s1 + refined @ q2) / 2.0
        order = _lex_order(final, torch.zeros(n), pos, descending=True)[:k_out]
        values[i, :len(order)] = final[order].to(torch.float32)
        indices[i, :len(order)] = short[order]
    return values, indices
