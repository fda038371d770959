"""SuperGlobal's re-ranking stage (Shao, Chen, Karpur, Cui, Araujo & Cao, "Global Features are All You Need for
Image Retrieval and Reranking", ICCV 2023), over candidate lists.

For a query q (descriptors compared by inner product; pass L2-normalised ones) and its shortlist S (the top M of its
candidates by q . g, ties -> smaller id), everything happens inside S, in float64:

1. refinement: for each d_i in S, its K + 1 most similar members of S (itself first when it is its own best match)
   n_0..n_K with similarities s_0..s_K (ties -> earlier in S); weights w_0 = 1, w_j = beta s_j (j >= 1), and
   ``d'_i = sum_j w_j d_{n_j} / sum_j w_j``;
2. ``s1_i = q . d'_i``;
3. query expansion by max pooling: ``q' = max`` (element-wise) of the d'_i of the K + 1 best by s1 (ties -> earlier
   in S);
4. ``s2_i = q' . d'_i`` and the final score ``(s1_i + s2_i) / 2``, descending; ties -> earlier in S.

Only S is returned (the gallery beyond the shortlist keeps its initial order and is not re-scored).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _checks as checks
from .. import ops
from ._checks import check_candidates, check_features, check_real
from .ecn import sort_rows

__all__ = ["superglobal"]

#: float64 bytes of one block's (queries, M, K + 1, D) gathered neighbour descriptors
_GATHER_BUDGET = 256 << 20


def _validate_superglobal(query: Tensor, gallery: Tensor, candidates: Optional[Tensor], M: int, K: int,
                          beta: float, k: Optional[int]) -> int:
    """Every check; returns the shortlist length min(M, L)."""
    check_features(query, gallery)
    Q, G = query.shape[0], gallery.shape[0]
    check_candidates(candidates, Q, G, query.device)
    checks.check_int("M", M, 1, G if candidates is None else None, " (the gallery size)" if candidates is None else "")
    checks.check_int("K", K, 0)
    check_real("beta", beta, 0.0)
    m = M if candidates is None else min(M, candidates.shape[1])
    if k is not None:
        checks.check_int("k", k, 1, m, " (the shortlist length min(M, L))")
    return m


def superglobal(query: Tensor, gallery: Tensor, *, candidates: Optional[Tensor] = None, M: int = 400, K: int = 9,
                beta: float = 0.15, k: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """SuperGlobal re-ranking of each query's top-M shortlist (module docstring).

    Args:
        query: (Q, D) float query descriptors.
        gallery: (G, D) float gallery descriptors, same D and device.
        candidates: (Q, L) int32/int64 gallery ids (any order, distinct per row, -1 padding as a suffix); the
            shortlist is the top min(M, L_q) of them by q . g. None: the top M by the fused k-NN ("ip").
        M: shortlist length (400 in the paper), >= 1 (<= G without candidates).
        K: neighbours of the refinement and of the max-pooled query expansion (9 in the paper), >= 0.
        beta: weight of the neighbours in the refinement (0.15 in the paper), >= 0.
        k: results per query, in [1, min(M, L)] (None: all of the shortlist).

    Raises:
        ValueError: bad arguments (named), or refinement weights summing to <= 0 (negative inner products between
            unnormalised descriptors), which would make the weighted mean meaningless.

    Returns:
        values (Q, k) float32 final scores (s1 + s2) / 2 descending, indices (Q, k) int64 gallery ids; rows with
        fewer real candidates than k end in value -inf, index -1.

    Cost: per query O(M^2 D + M K D); memory one block of (queries, M, K + 1, D) float64 descriptors (<= 256 MB),
    never a Q x G matrix.

    Example:
        >>> import torch
        >>> from icfrr_fast.rerankers import superglobal
        >>> g = torch.nn.functional.normalize(torch.randn(80, 8), dim=1)
        >>> superglobal(g[:2], g, M=20, K=3, k=5)[1].shape
        torch.Size([2, 5])
    """
    m = _validate_superglobal(query, gallery, candidates, M, K, beta, k)
    Q, G = query.shape[0], gallery.shape[0]
    dev = query.device
    x = gallery.to(torch.float32).to(torch.float64)
    if candidates is None:
        candidates = ops.knn_topk(query.to(torch.float32), gallery.to(torch.float32), k=M, metric="ip", largest=True,
                                  exclude_self=False, row_offset=0, precision="fp32")[1]
    cand = candidates.long()
    k_out = m if k is None else k
    K1 = min(K + 1, m)
    values = torch.empty((Q, k_out), dtype=torch.float32, device=dev)
    indices = torch.empty((Q, k_out), dtype=torch.int64, device=dev)
    D = x.shape[1]
    block = max(1, _GATHER_BUDGET // max(1, m * (K1 + 1) * D * 8 + cand.shape[1] * D * 8))
    for a in range(0, Q, block):
        c = cand[a:a + block]
        B = c.shape[0]
        q = query[a:a + block].to(torch.float32).to(torch.float64)
        real = c >= 0
        c0 = c.clamp_min(0)
        s0 = torch.where(real, torch.einsum("bd,bld->bl", q, x[c0]), -torch.inf)
        pick = sort_rows(s0, s0, torch.where(real, c0, G), descending=True)[:, :m]
        short = torch.gather(c0, 1, pick)  # (B, m) the shortlist, best first
        ok = torch.gather(real, 1, pick)
        xs = x[short]  # (B, m, D)
        sims = torch.einsum("bid,bjd->bij", xs, xs).masked_fill(~ok[:, None, :], -torch.inf)
        top = torch.sort(sims, dim=2, descending=True, stable=True)  # ties -> earlier in the shortlist
        nb, s_nb = top.indices[:, :, :K1], top.values[:, :, :K1]
        w = torch.where(torch.isfinite(s_nb), beta * s_nb, 0.0)
        w[:, :, 0] = 1.0
        bidx = torch.arange(B, device=dev)[:, None, None]
        refined = torch.einsum("bij,bijd->bid", w, xs[bidx, nb])  # (B, m, K1, D) neighbour descriptors
        wsum = w.sum(dim=2, keepdim=True)
        if bool(((wsum[..., 0] <= 0) & ok).any()):  # the weighted mean would divide by <= 0 (NaN / sign flip)
            raise ValueError(f"superglobal: the refinement weights 1 + beta * (a shortlist item's similarities to its "
                             f"K neighbours) sum to <= 0, which happens with negative inner products; pass "
                             f"L2-normalised descriptors or a smaller beta; got beta={beta}")
        refined = refined / wsum
        s1 = torch.where(ok, torch.einsum("bd,bid->bi", q, refined), -torch.inf)
        pos = torch.arange(m, device=dev).expand(B, m)
        best = sort_rows(s1, s1, pos, descending=True)[:, :K1]  # the K + 1 best by s1
        best_ok = torch.gather(ok, 1, best)
        pooled = torch.gather(refined, 1, best[..., None].expand(B, K1, D)).masked_fill(~best_ok[..., None],
                                                                                          -torch.inf)
        q2 = pooled.max(dim=1).values  # (B, D)
        s2 = torch.einsum("bd,bid->bi", q2, refined)
        final = torch.where(ok, (s1 + s2) / 2.0, -torch.inf)
        order = sort_rows(final, torch.zeros_like(final), pos, descending=True)[:, :k_out]
        values[a:a + B] = torch.gather(final, 1, order).to(torch.float32)
        indices[a:a + B] = torch.where(torch.gather(ok, 1, order), torch.gather(short, 1, order), -1)
    return values, indices
