"""k-reciprocal encoding re-ranking (Zhong, Zheng, Cao & Li, "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), with the semantics of the ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2,
lambda_value)`` function the person re-ID codebases share, computed sparsely.

The N = Q + G queries and gallery items form one set. With d the given distances (squared first, as that function
does, in float32: ``D = fl32(d^2)``) and m_i = max_j D(i, j) the largest value of item i's row:

* original distance   ``o(i, j) = fl32(D(i, j) / m_i)``;
* initial ranking     ``pi_i`` = the N items by D(i, .) ascending, ties -> smaller index (features: i itself first);
* k-reciprocal set    ``R(i, k) = {j in pi_i[:k + 1] : i in pi_j[:k + 1]}``;
* expansion           ``R*(i) = R(i, k1) u {R(c, round(k1/2)) : c in R(i, k1), |R(c, round(k1/2)) n R(i, k1)| >
  (2/3) |R(c, round(k1/2))|}`` (the comparison in float64, as the function makes it; ``round`` = half to even);
* encoding            ``V(i, j) = exp(-o(i, j)) / sum_{l in R*(i)} exp(-o(i, l))`` for j in R*(i), else 0
  (exp in float32, the sum in float64, V rounded to float32);
* local query expansion (k2 > 1)  ``V(i) <- mean_{r in pi_i[:k2]} V(r)`` (sum in float64, rounded to float32);
* Jaccard distance    ``J(i, j) = 1 - t / (2 - t)``, ``t = sum_l min(V(i, l), V(j, l))`` (float64);
* final distance      ``f(i, j) = (1 - lambda) J(i, j) + lambda o(i, j)`` (float64; returned as float32),
  for query i and gallery item j, ranked ascending with ties broken by o(i, j), then by the smaller index.

Sparse inside: every set above has at most k1 + 1 (R), (k1 + 1)(round(k1/2) + 2) (R*) or k2 |R*| (after the
expansion) members, so the encodings are padded (N, S) tables, and the Jaccard overlaps are found through an inverted
index over the gallery's encodings: memory O(N k1 k2) plus the inputs, never an N x N matrix.

Float64 sums of the float32 encodings are exact here (every weight is at least exp(-1)/|R*(i)|, so the terms span
few binary orders of magnitude), which makes every result independent of the summation order: the same torch code
gives identical results on CPU and CUDA tensors (no Triton kernel: after the k-NN, the work is O(N k1 k2) gathers
and sorts).
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Tuple

import torch
from torch import Tensor

from .. import _checks as checks
from .. import ops
from ._checks import check_features, check_real, unit_rows

__all__ = ["k_reciprocal", "k_reciprocal_features", "K_RECIPROCAL_METRICS"]

#: metrics of k_reciprocal_features: Euclidean distance, or Euclidean distance of L2-normalised features
K_RECIPROCAL_METRICS = ("l2", "cosine")

# rows per block of the dense-input passes and of the per-item set computations (memory: block x N floats, or
# block x (k1 + 1) x (round(k1/2) + 1) ids)
_BLOCK = 1024
# (query entry, gallery entry) pairs per Jaccard block
_PAIRS_PER_BLOCK = 1 << 22
# bytes of gathered float64 features per block of pair distances
_PAIR_BYTES = 64 << 20


def _list_length(k: int, G: int) -> int:
    """Nearest gallery items by the original distance kept per query: max(4 k, 1024) (at most G), so that the
    final top-k needs the distances of few overlapping items outside the list (see _finish_topk)."""
    return min(G, max(4 * k, 1024))


# ----------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------
def _validate_k_reciprocal(k1, k2, lambda_value, k, *, q_g: Optional[Tensor] = None, q_q: Optional[Tensor] = None,
                           g_g: Optional[Tensor] = None, query: Optional[Tensor] = None,
                           gallery: Optional[Tensor] = None, metric: Optional[str] = None) -> None:
    """Every check of both entry points: the distance matrices (q_g, q_q, g_g) or the features (query, gallery)."""
    if query is None:
        names = (("q_g", q_g), ("q_q", q_q), ("g_g", g_g))
        for name, t in names:
            checks.check_float_matrix(name, t)
        Q, G = q_g.shape
        torch._check_value(G >= 1, lambda: f"q_g must have at least one gallery column; got shape {tuple(q_g.shape)}")
        torch._check_value(tuple(q_q.shape) == (Q, Q), lambda: f"q_q must be (Q, Q) = ({Q}, {Q}); got "
                           f"{tuple(q_q.shape)}")
        torch._check_value(tuple(g_g.shape) == (G, G), lambda: f"g_g must be (G, G) = ({G}, {G}); got "
                           f"{tuple(g_g.shape)}")
        for name, t in names[1:]:
            torch._check_value(t.device == q_g.device, lambda: f"{name} must be on q_g's device {q_g.device}; "
                               f"got {t.device}")
    else:
        check_features(query, gallery)
        torch._check_type(isinstance(metric, str), lambda: f"metric must be a str; got {type(metric).__name__}")
        torch._check_value(metric in K_RECIPROCAL_METRICS,
                           lambda: f"metric must be one of {K_RECIPROCAL_METRICS}; got {metric!r}")
        Q, G = query.shape[0], gallery.shape[0]
    checks.check_int("k1", k1, 1)
    checks.check_int("k2", k2, 1)
    check_real("lambda_value", lambda_value, 0.0, 1.0)
    if k is not None:
        checks.check_int("k", k, 1, G, " (the gallery size)")
    N = Q + G
    torch._check_value(N < 2**31 - 1, lambda: f"Q + G must be < 2^31 - 1; got {N}")
    if query is None:  # data checks, one pass each (check_features made them for the features)
        for name, t in (("q_g", q_g), ("q_q", q_q), ("g_g", g_g)):
            checks.check_finite(name, t)


# ----------------------------------------------------------------------------------------------------------------
# sparse helpers
# ----------------------------------------------------------------------------------------------------------------
def _isin_sorted(sorted_keys: Tensor, keys: Tensor) -> Tensor:
    """keys (any shape) found in the ascending 1-D ``sorted_keys``."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, keys).clamp_max_(sorted_keys.numel() - 1)
    return sorted_keys[pos] == keys


def _lookup_sorted(sorted_keys: Tensor, values: Tensor, keys: Tensor) -> Tuple[Tensor, Tensor]:
    """(found, value) of each key in the ascending ``sorted_keys`` carrying ``values`` (0 where not found)."""
    pos = torch.searchsorted(sorted_keys, keys).clamp_max_(max(sorted_keys.numel() - 1, 0))
    found = sorted_keys[pos] == keys if sorted_keys.numel() else torch.zeros_like(keys, dtype=torch.bool)
    val = torch.where(found, values[pos], torch.zeros((), dtype=values.dtype, device=values.device)) \
        if values.numel() else torch.zeros(keys.shape, dtype=values.dtype, device=values.device)
    return found, val


def _reciprocal(nbr: Tensor, width: int) -> Tensor:
    """(N, width) bool: ``mask[i, r]`` = item i is among the first ``width`` of ``nbr[nbr[i, r]]``."""
    N = nbr.shape[0]
    f = nbr[:, :width]
    rows = torch.arange(N, device=nbr.device)[:, None]
    edges = (rows * N + f).flatten().sort().values
    return _isin_sorted(edges, f * N + rows)


def _compact_rows(ids: Tensor, vals: Optional[Tensor], sentinel: int) -> Tuple[Tensor, Optional[Tensor]]:
    """Sort each row of ``ids`` (B, W) ascending (sentinel = empty, last), drop the all-empty trailing columns."""
    ids, order = ids.sort(dim=1, stable=True)
    if vals is not None:
        vals = torch.gather(vals, 1, order)
    width = int((ids != sentinel).sum(dim=1).max()) if ids.numel() else 0
    return ids[:, :width], (vals[:, :width] if vals is not None else None)


def _pad(blocks, sentinel: int, dtype_v) -> Tuple[Tensor, Tensor]:
    """Concatenate (B_b, W_b) id/value blocks into one (sum B_b, max W_b) table, padded with (sentinel, 0)."""
    width = max([b[0].shape[1] for b in blocks] + [1])
    ids = torch.cat([torch.nn.functional.pad(b[0], (0, width - b[0].shape[1]), value=sentinel) for b in blocks])
    vals = torch.cat([torch.nn.functional.pad(b[1], (0, width - b[1].shape[1]), value=0.0) for b in blocks])
    return ids, vals.to(dtype_v)


class _Graph:
    """The inputs of the sparse pipeline: each item's initial ranking prefix and its normalised distances.

    nbr: (N, K) int64, pi_i[:K]; dist: (N, K) float32, o(i, pi_i[r]); pair: callable(rows, cols) -> float32
    o(rows, cols) for any pairs (1-D int64 of equal length).
    """

    def __init__(self, nbr: Tensor, dist: Tensor, pair: Callable[[Tensor, Tensor], Tensor]):
        self.nbr, self.dist, self.pair = nbr, dist, pair
        N, K = nbr.shape
        rows = torch.arange(N, device=nbr.device)[:, None]
        keys = (rows * N + nbr).flatten()
        self._keys, order = keys.sort()
        self._vals = dist.flatten()[order]

    def distances(self, rows: Tensor, cols: Tensor) -> Tensor:
        """o(rows, cols) (float32): from the ranking prefixes where the pair is in it, else computed."""
        N = self.nbr.shape[0]
        found, val = _lookup_sorted(self._keys, self._vals, rows * N + cols)
        miss = (~found).nonzero().squeeze(1)
        if miss.numel():
            val[miss] = self.pair(rows[miss], cols[miss])
        return val


def _encodings(g: _Graph, k1: int) -> Tuple[Tensor, Tensor]:
    """V: the k-reciprocal encoding of every item, as a padded (N, S) table of ids (sentinel N) and float32 weights."""
    nbr = g.nbr
    N = nbr.shape[0]
    dev = nbr.device
    K1 = min(k1 + 1, N)
    H1 = min(int(round(k1 / 2)) + 1, N)
    rmask = _reciprocal(nbr, K1)  # (N, K1)
    hmask = _reciprocal(nbr, H1)  # (N, H1)
    rows_all = torch.arange(N, device=dev)
    r_keys = (rows_all[:, None] * N + nbr[:, :K1])[rmask].sort().values  # the k-reciprocal pairs (i, j)
    h_len = hmask.sum(dim=1).to(torch.float64)
    two_thirds = 2.0 / 3.0
    blocks = []
    for a in range(0, N, _BLOCK):
        b = min(N, a + _BLOCK)
        rows = rows_all[a:b, None]
        R = nbr[a:b, :K1]
        rm = rmask[a:b]
        Hc = nbr[R, :H1]  # (B, K1, H1): the half-size sets of the candidates
        hm = hmask[R]
        common = (_isin_sorted(r_keys, rows[:, :, None] * N + Hc) & hm).sum(dim=2)  # |R(c, k1/2) n R(i, k1)|
        add = rm & (common.to(torch.float64) > two_thirds * h_len[R])
        cand = torch.cat([torch.where(rm, R, N), torch.where(add[:, :, None] & hm, Hc, N).flatten(1)], dim=1)
        cand = cand.sort(dim=1).values
        dup = torch.zeros_like(cand, dtype=torch.bool)
        dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
        ids, _ = _compact_rows(torch.where(dup, N, cand), None, N)
        valid = ids != N
        r_idx = rows.expand_as(ids)[valid]
        d = torch.zeros(ids.shape, dtype=torch.float32, device=dev)
        d[valid] = g.distances(r_idx, ids[valid])
        w = torch.where(valid, torch.exp(-d), torch.zeros((), device=dev))
        v = (w.to(torch.float64) / w.to(torch.float64).sum(dim=1, keepdim=True)).to(torch.float32)
        blocks.append((ids, torch.where(valid, v, torch.zeros((), device=dev))))
    return _pad(blocks, N, torch.float32)


def _expand(g: _Graph, ids: Tensor, vals: Tensor, k2: int) -> Tuple[Tensor, Tensor]:
    """Local query expansion: row i <- the mean of the rows of its k2 nearest (pi_i[:k2]), padded (N, S2)."""
    N = ids.shape[0]
    if k2 == 1:
        return ids, vals
    k2 = min(k2, N)
    dev = ids.device
    blocks = []
    for a in range(0, N, _BLOCK):
        b = min(N, a + _BLOCK)
        near = g.nbr[a:b, :k2]
        e_ids = ids[near].flatten(1)  # (B, k2 S)
        e_vals = vals[near].flatten(1).to(torch.float64)
        B, W = e_ids.shape
        key = (torch.arange(B, device=dev)[:, None] * (N + 1) + e_ids).flatten()
        ukey, inv = torch.unique(key, return_inverse=True)  # sorted: row-major, then by id
        sums = torch.zeros(ukey.numel(), dtype=torch.float64, device=dev).index_add_(0, inv, e_vals.flatten())
        row, col = ukey // (N + 1), ukey % (N + 1)
        keep = col != N
        row, col, sums = row[keep], col[keep], sums[keep]
        counts = torch.bincount(row, minlength=B)
        width = int(counts.max()) if counts.numel() else 0
        start = torch.cumsum(counts, 0) - counts
        pos = torch.arange(row.numel(), device=dev) - start[row]
        out_i = torch.full((B, max(width, 1)), N, dtype=torch.int64, device=dev)
        out_v = torch.zeros((B, max(width, 1)), dtype=torch.float32, device=dev)
        out_i[row, pos] = col
        out_v[row, pos] = (sums / k2).to(torch.float32)
        blocks.append((out_i, out_v))
    return _pad(blocks, N, torch.float32)


def _overlaps(ids: Tensor, vals: Tensor, Q: int,
              max_rows: int) -> Iterator[Tuple[int, int, Tensor, Tensor, Tensor]]:
    """Blocks of queries [a, b) with their Jaccard overlaps: (a, b, query row in [0, Q), gallery id in [0, G),
    t = sum_l min(V(q, l), V(Q + g, l)) float64), pairs with t > 0 only, sorted by (query, gallery id)."""
    N = ids.shape[0]
    G = N - Q
    dev = ids.device
    g_valid = ids[Q:] != N
    g_item = torch.arange(G, device=dev)[:, None].expand_as(ids[Q:])[g_valid]
    g_feat = ids[Q:][g_valid]
    g_val = vals[Q:][g_valid]
    order = torch.sort(g_feat, stable=True).indices  # inverted index: gallery entries grouped by feature l
    g_feat, g_item, g_val = g_feat[order], g_item[order], g_val[order]
    q_valid = ids[:Q] != N
    lo = torch.searchsorted(g_feat, torch.where(q_valid, ids[:Q], N))
    hi = torch.searchsorted(g_feat, torch.where(q_valid, ids[:Q], N), right=True)
    per_query = torch.where(q_valid, hi - lo, 0).sum(dim=1)
    a = 0
    while a < Q:
        # as many queries as fit the pair budget (at least one, at most max_rows)
        csum = torch.cumsum(per_query[a:a + max_rows], 0)
        b = a + max(1, int(torch.searchsorted(csum, torch.tensor(_PAIRS_PER_BLOCK, device=dev), right=True)))
        qi = torch.arange(a, b, device=dev)[:, None].expand(b - a, ids.shape[1])
        m = q_valid[a:b]
        e_q = qi[m]
        e_lo, e_n, e_v = lo[a:b][m], (hi - lo)[a:b][m], vals[:Q][a:b][m]
        pos = torch.repeat_interleave(e_lo, e_n)
        off = torch.arange(pos.numel(), device=dev) - torch.repeat_interleave(torch.cumsum(e_n, 0) - e_n, e_n)
        pos = pos + off
        pq = torch.repeat_interleave(e_q, e_n)
        mins = torch.minimum(torch.repeat_interleave(e_v, e_n), g_val[pos]).to(torch.float64)
        key = pq * G + g_item[pos]
        ukey, inv = torch.unique(key, return_inverse=True)
        t = torch.zeros(ukey.numel(), dtype=torch.float64, device=dev).index_add_(0, inv, mins)
        yield a, b, ukey // G, ukey % G, t
        a = b


def _jaccard(t: Tensor) -> Tensor:
    return 1.0 - t / (2.0 - t)


def _lexsort_rows(row: Tensor, final: Tensor, orig: Tensor, col: Tensor) -> Tensor:
    """Permutation sorting flat entries by (row, final, orig, col)."""
    p = torch.sort(col, stable=True).indices
    p = p[torch.sort(orig[p], stable=True).indices]
    p = p[torch.sort(final[p], stable=True).indices]
    return p[torch.sort(row[p], stable=True).indices]


def _finish_topk(a: int, b: int, q: Tensor, gid: Tensor, t: Tensor, top_ids: Tensor, top_orig: Tensor, G: int,
                 Q: int, lam: float, k: int, pair: Callable[[Tensor, Tensor], Tensor]) -> Tuple[Tensor, Tensor]:
    """Top-k final distances of queries [a, b) from their k_list >= k nearest gallery items by the original
    distance (top_ids, top_orig (B, k_list), ascending) and their Jaccard overlaps (q, gid, t).

    Let T be the k-th smallest final distance in the list. An item outside the list has o >= the list's last o_L,
    so its final distance is at least (1 - lam) J + lam o_L: items sharing nothing with the query (J = 1) never
    reach below T, and an overlapping one needs its original distance (computed) only when that bound is <= T.
    """
    dev = top_ids.device
    B, KL = top_ids.shape
    rows = torch.arange(a, b, device=dev)[:, None].expand(B, KL)
    o_keys = q * G + gid  # sorted (from torch.unique)
    listed = (rows * G + top_ids).flatten()
    _, t_top = _lookup_sorted(o_keys, t, listed)
    f_top = (1.0 - lam) * _jaccard(t_top.view(B, KL)) + lam * top_orig.to(torch.float64)
    thresh = torch.kthvalue(f_top, k, dim=1).values if k < KL else f_top.max(dim=1).values
    keep = (f_top <= thresh[:, None]).flatten()
    in_list = _isin_sorted(listed.sort().values, o_keys)
    lower = (1.0 - lam) * _jaccard(t) + lam * top_orig[q - a, KL - 1].to(torch.float64)
    extra = (~in_list & (lower <= thresh[q - a])).nonzero().squeeze(1)
    e_q, e_g, e_t = q[extra], gid[extra], t[extra]
    e_o = pair(e_q, e_g + Q) if e_q.numel() else torch.zeros(0, dtype=torch.float32, device=dev)
    e_f = (1.0 - lam) * _jaccard(e_t) + lam * e_o.to(torch.float64)
    row = torch.cat([rows.flatten()[keep], e_q])
    col = torch.cat([top_ids.flatten()[keep], e_g])
    orig = torch.cat([top_orig.flatten()[keep], e_o])
    final = torch.cat([f_top.flatten()[keep], e_f])
    p = _lexsort_rows(row, final, orig, col)
    counts = torch.bincount(row - a, minlength=B)
    start = torch.cumsum(counts, 0) - counts
    take = p[(start[:, None] + torch.arange(k, device=dev)).flatten()]
    return final[take].view(B, k).to(torch.float32), col[take].view(B, k)


def _finish_dense(q: Tensor, gid: Tensor, t: Tensor, orig: Tensor, a: int, lam: float,
                  k: int) -> Tuple[Tensor, Tensor]:
    """All G final distances of queries [a, a + B), sorted, from their dense original distances orig (B, G).

    One sort: the gallery by (o, id) (the C++ ``dense_topk``). Items sharing nothing with the query (J = 1) keep that
    order, since their final distance (1 - lam) + lam o is non-decreasing in o; the few overlapping items are sorted
    by (final, position) and merged in: an item's output slot is its rank among the overlapping ones plus the number
    of non-overlapping items before it, those with a smaller final distance or an equal one and an earlier position.
    """
    B, G = orig.shape
    dev = orig.device
    o_sorted, order = ops.dense_topk(orig, k=G, largest=False, exclude_self=False, row_offset=0)  # (o, id) ascending
    f_sorted = (1.0 - lam) + lam * o_sorted.to(torch.float64)
    pos_of = torch.empty_like(order).scatter_(1, order, torch.arange(G, device=dev).expand(B, G))
    r = q - a
    p = pos_of[r, gid]  # each overlapping item's position in the (o, id) order
    f_m = (1.0 - lam) * _jaccard(t) + lam * o_sorted[r, p].to(torch.float64)
    lone = torch.ones((B, G), dtype=torch.bool, device=dev)
    lone[r, p] = False
    # non-decreasing per row: the last final distance of a non-overlapping item up to each position
    f_fill = torch.cummax(torch.where(lone, f_sorted, -torch.inf), dim=1).values
    before = torch.nn.functional.pad(torch.cumsum(lone, dim=1), (1, 0))  # non-overlapping items in [0, i)
    # per-row searches: the overlapping items (grouped by row, from torch.unique) padded to (B, W)
    counts = torch.bincount(r, minlength=B)
    col = torch.arange(r.numel(), device=dev) - (torch.cumsum(counts, 0) - counts)[r]
    padded = torch.full((B, max(1, int(counts.max()) if counts.numel() else 1)), torch.inf, dtype=torch.float64,
                        device=dev)
    padded[r, col] = f_m
    lo = torch.searchsorted(f_fill, padded)[r, col]
    hi = torch.searchsorted(f_fill, padded, right=True)[r, col]
    ahead = torch.minimum(torch.maximum(before[r, p], before[r, lo]), before[r, hi])
    srt = _lexsort_rows(r, f_m, p.to(torch.float64), gid)  # overlapping items by (row, final, position)
    r, p, f_m, ahead = r[srt], p[srt], f_m[srt], ahead[srt]
    counts = torch.bincount(r, minlength=B)
    rank = torch.arange(r.numel(), device=dev) - (torch.cumsum(counts, 0) - counts)[r]
    slot = torch.zeros((B, G), dtype=torch.bool, device=dev)
    slot[r, rank + ahead] = True
    ids = torch.empty((B, G), dtype=torch.int64, device=dev)
    vals = torch.empty((B, G), dtype=torch.float64, device=dev)
    ids[slot] = order[r, p]  # row-major: rows ascending, slots ascending within a row, as sorted
    vals[slot] = f_m
    ids[~slot] = order[lone]
    vals[~slot] = f_sorted[lone]
    return vals[:, :k].to(torch.float32), ids[:, :k]


def _normalise(D: Tensor, m: Tensor) -> Tensor:
    """o = fl32(D / m) row by row (D (B, C) float32, m (B,) float32 row maxima, > 0)."""
    return D / m[:, None]


def _check_row_max(m: Tensor) -> None:
    if m.numel() and not bool((m > 0).all()):
        i = int((m <= 0).nonzero()[0, 0])
        raise ValueError(f"item {i} (in the order queries, then gallery) has all its squared distances equal to 0; "
                         f"its row cannot be normalised by its largest distance")


# ----------------------------------------------------------------------------------------------------------------
# public entry points
# ----------------------------------------------------------------------------------------------------------------
def k_reciprocal(q_g: Tensor, q_q: Tensor, g_g: Tensor, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                 k: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """k-reciprocal re-ranking from dense distances, the way re-ID code calls it (module docstring).

    Args:
        q_g: (Q, G) float distances query -> gallery (Euclidean, not squared: they are squared here).
        q_q: (Q, Q) float distances query -> query.
        g_g: (G, G) float distances gallery -> gallery.
            As the shared function reads the columns of the assembled matrix [[q_q, q_g], [q_g^T, g_g]], item i's
            distances to the queries are ``q_q[:, i]`` and to the gallery ``g_g[:, j]`` (the same for symmetric
            inputs).
        k1: size of the k-reciprocal neighbourhood (>= 1; 20 in the paper).
        k2: neighbours of the local query expansion (>= 1; 1 = none; 6 in the paper).
        lambda_value: weight of the original distance in [0, 1] (0.3).
        k: results per query in [1, G] (None: all G, the whole re-ranked matrix, sorted).

    Returns:
        values (Q, k) float32 final distances ascending, indices (Q, k) int64 gallery ids, like
        ``torch.topk(final, k, largest=False)`` with ties broken by the original distance, then the smaller id.

    Raises:
        TypeError: a non-tensor or non-floating matrix, non-int k1/k2/k, non-real lambda_value.
        ValueError: shapes that do not fit, NaN/inf, a parameter out of range, an item whose distances are all 0.

    Memory: O((Q + G) k1 k2) beyond the inputs, plus one (1024, Q + G) block (and, for k=None, the output).

    Example:
        >>> import torch
        >>> from icfrr_fast.rerankers import k_reciprocal
        >>> x = torch.randn(30, 8); q, g = x[:5], x[5:]
        >>> values, indices = k_reciprocal(torch.cdist(q, g), torch.cdist(q, q), torch.cdist(g, g), k1=6, k2=3, k=4)
        >>> values.shape, bool((values[:, 1:] >= values[:, :-1]).all())
        (torch.Size([5, 4]), True)
    """
    _validate_k_reciprocal(k1, k2, lambda_value, k, q_g=q_g, q_q=q_q, g_g=g_g)
    Q, G = q_g.shape
    N = Q + G
    k_out = G if k is None else k
    dev = q_g.device

    def sq(t: Tensor) -> Tensor:  # D = fl32(d^2), squared in the input's dtype like np.power then astype(float32)
        return (t * t).to(torch.float32)

    def rows_of(r0: int, r1: int) -> Tensor:
        """D of items r0..r1-1 against all N (B, N) float32: the columns of [[q_q, q_g], [q_g^T, g_g]]."""
        parts = []
        if r0 < Q:
            a, b = r0, min(r1, Q)
            parts.append(torch.cat([sq(q_q[:, a:b]).T, sq(q_g[a:b])], dim=1))
        if r1 > Q:
            a, b = max(r0, Q) - Q, r1 - Q
            parts.append(torch.cat([sq(q_g[:, a:b]).T, sq(g_g[:, a:b]).T], dim=1))
        return torch.cat(parts)

    K = min(max(k1 + 1, k2), N)
    nbr = torch.empty((N, K), dtype=torch.int64, device=dev)
    dist = torch.empty((N, K), dtype=torch.float32, device=dev)
    m = torch.empty(N, dtype=torch.float32, device=dev)
    k_list = _list_length(k_out, G)
    top_ids = torch.empty((Q, k_list), dtype=torch.int64, device=dev) if k is not None else None
    top_orig = torch.empty((Q, k_list), dtype=torch.float32, device=dev) if k is not None else None
    for r0 in range(0, N, _BLOCK):
        r1 = min(N, r0 + _BLOCK)
        D = rows_of(r0, r1)
        m[r0:r1] = D.amax(dim=1)
        _check_row_max(m[r0:r1])
        v, i = ops.dense_topk(D, k=K, largest=False, exclude_self=False, row_offset=0)
        nbr[r0:r1] = i
        dist[r0:r1] = _normalise(v, m[r0:r1])
        if k is not None and r0 < Q:
            b = min(r1, Q) - r0
            v, i = ops.dense_topk(D[:b, Q:], k=k_list, largest=False, exclude_self=False, row_offset=0)
            top_ids[r0:r0 + b] = i
            top_orig[r0:r0 + b] = _normalise(v, m[r0:r0 + b])
        del D

    def lookup(r: Tensor, c: Tensor) -> Tensor:
        # D(r, c) = column r of the assembled matrix at row c
        out = torch.empty(r.shape, dtype=torch.float32, device=dev)
        rq, cq = r < Q, c < Q
        for sel, mat, ri, ci in ((rq & cq, q_q, c, r), (rq & ~cq, q_g, r, c - Q), (~rq & cq, q_g, c, r - Q),
                                 (~rq & ~cq, g_g, c - Q, r - Q)):
            idx = sel.nonzero().squeeze(1)
            out[idx] = sq(mat[ri[idx], ci[idx]])
        return out / m[r]

    graph = _Graph(nbr, dist, lookup)
    ids, vals = _expand(graph, *_encodings(graph, k1), k2)
    lam = float(lambda_value)
    values = torch.empty((Q, k_out), dtype=torch.float32, device=dev)
    indices = torch.empty((Q, k_out), dtype=torch.int64, device=dev)
    for a, b, q, gid, t in _overlaps(ids, vals, Q, 256 if k is None else Q):
        if k is None:
            orig = _normalise(sq(q_g[a:b]), m[a:b])
            values[a:b], indices[a:b] = _finish_dense(q, gid, t, orig, a, lam, k_out)
        else:
            values[a:b], indices[a:b] = _finish_topk(a, b, q, gid, t, top_ids[a:b], top_orig[a:b], G, Q, lam,
                                                     k_out, lookup)
    return values, indices


def k_reciprocal_features(query: Tensor, gallery: Tensor, *, metric: str = "l2", k1: int = 20, k2: int = 6,
                          lambda_value: float = 0.3, k: int = 100) -> Tuple[Tensor, Tensor]:
    """k-reciprocal re-ranking straight from features with the fused k-NN: never a Q x G or N x N matrix.

    Same semantics as :func:`k_reciprocal` on D = squared Euclidean distances of the features (converted to float32
    first; ``"cosine"``: L2-normalised first): the fused "l2sq" k-NN's float32 values for the pairs it selects (each
    item's max(k1 + 1, k2) - 1 nearest, each item's farthest, each query's max(4 k, 1024) nearest gallery items),
    float64 differences rounded to float32 for the few other pairs the method needs (the two agree to ~1e-7
    relative). An item is its own nearest neighbour (D(i, i) = 0, ranked first even before exact duplicates).

    Args:
        query: (Q, D) float query features.
        gallery: (G, D) float gallery features, same D and device.
        metric: "l2" or "cosine".
        k1, k2, lambda_value: as :func:`k_reciprocal`.
        k: results per query in [1, G].

    Returns:
        values (Q, k) float32 final distances ascending, indices (Q, k) int64 gallery ids.

    Cost: three fused k-NN passes -- the (Q + G)-item graph with max(k1 + 1, k2) neighbours, each item's farthest
    item (its row maximum: the normalisation needs it) and the max(4 k, 1024) nearest gallery items of each query --
    then O((Q + G) k1 k2) sparse work and the Jaccard overlaps through the inverted index.
    Memory: the features (a float32 copy of both), the graph, O((Q + G) k1 k2) encodings.

    Example:
        >>> import torch
        >>> from icfrr_fast.rerankers import k_reciprocal_features
        >>> x = torch.randn(40, 8)
        >>> values, indices = k_reciprocal_features(x[:4], x[4:], k1=6, k2=3, k=5)
        >>> indices.shape
        torch.Size([4, 5])
    """
    _validate_k_reciprocal(k1, k2, lambda_value, k, query=query, gallery=gallery, metric=metric)
    Q, G = query.shape[0], gallery.shape[0]
    N = Q + G
    x = torch.cat([query, gallery]).to(torch.float32)
    if metric == "cosine":
        x = unit_rows(x)
    K = min(max(k1 + 1, k2), N)
    dev = x.device
    nbr = torch.zeros((N, K), dtype=torch.int64, device=dev)
    dist = torch.zeros((N, K), dtype=torch.float32, device=dev)
    nbr[:, 0] = torch.arange(N, device=dev)
    if K > 1:
        v, i = ops.knn_topk(x, x, k=K - 1, metric="l2sq", largest=False, exclude_self=True, row_offset=0,
                            precision="fp32")  # D(i, i) = 0 first, then the others
        nbr[:, 1:], dist[:, 1:] = i, v
    if N > 1:
        m = ops.knn_topk(x, x, k=1, metric="l2sq", largest=True, exclude_self=True, row_offset=0,
                         precision="fp32")[0][:, 0].clamp_min(0.0)
    else:
        m = torch.zeros(N, dtype=torch.float32, device=dev)
    _check_row_max(m)
    dist = _normalise(dist, m)
    top_v, top_ids = ops.knn_topk(x[:Q], x[Q:], k=_list_length(k, G), metric="l2sq", largest=False,
                                  exclude_self=False, row_offset=0, precision="fp32")
    top_orig = _normalise(top_v, m[:Q])

    def pair(r: Tensor, c: Tensor) -> Tensor:
        """o(r, c) for pairs outside the k-NN lists: squared distances in float64, rounded to float32."""
        out = torch.empty(r.shape, dtype=torch.float32, device=dev)
        step = max(1, _PAIR_BYTES // (16 * x.shape[1]))
        for s0 in range(0, r.numel(), step):
            rr, cc = r[s0:s0 + step], c[s0:s0 + step]
            diff = x[rr].to(torch.float64) - x[cc].to(torch.float64)
            out[s0:s0 + step] = (diff * diff).sum(dim=1).to(torch.float32) / m[rr]
        return out

    graph = _Graph(nbr, dist, pair)
    ids, vals = _expand(graph, *_encodings(graph, k1), k2)
    lam = float(lambda_value)
    values = torch.empty((Q, k), dtype=torch.float32, device=dev)
    indices = torch.empty((Q, k), dtype=torch.int64, device=dev)
    for a, b, q, gid, t in _overlaps(ids, vals, Q, Q):
        values[a:b], indices[a:b] = _finish_topk(a, b, q, gid, t, top_ids[a:b], top_orig[a:b], G, Q, lam, k, pair)
    return values, indices
