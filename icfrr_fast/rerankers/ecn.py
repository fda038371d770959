"""Expanded cross neighbourhood (ECN) re-ranking (Sarfraz, Schumann, Eberle & Stiefelhagen, "A Pose-Sensitive
Embedding for Person Re-Identification with Expanded Cross Neighborhood Re-Ranking", CVPR 2018), over candidate
lists and the gallery graph.

Expanded neighbours of an item: its t nearest neighbours followed by the q nearest of each of them,
``E(x) = [n_1..n_t, N(n_1, q), .., N(n_t, q)]``, M = t + t q entries (repeats kept). For a query p they come from its
candidate list (the t nearest candidates, then the graph rows of those); for a gallery item g from the gallery graph
(self excluded). With d the Euclidean distance of the features (float64):

    d_ECN(p, g) = (1 / 2M) [ sum_{e in E(p)} d(e, g) + sum_{e in E(g)} d(p, e) ]

Each query's candidates are re-ranked by d_ECN ascending; ties go to the smaller original distance d(p, g), then to
the smaller id. Neighbourhoods are taken in the gallery (the authors' code ranks queries and gallery together); the
distances are computed from the features for exactly the pairs the formula needs, never a Q x G or G x G matrix.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from .. import _checks as checks
from .. import ops
from ..graph import GalleryGraph
from ._checks import check_candidates, check_features

__all__ = ["ecn"]

#: float64 bytes of gathered features per block of queries
_GATHER_BUDGET = 256 << 20


def _validate_ecn(query: Tensor, gallery: Tensor, candidates: Optional[Tensor], graph, t: int, q: int,
                  depth: int, k: Optional[int]) -> Optional[Tensor]:
    """Every check; returns the given graph's (G, K_g) neighbour ids (None: none given)."""
    check_features(query, gallery, min_gallery=2)
    Q, G = query.shape[0], gallery.shape[0]
    checks.check_k_g(t, G, name="t")
    checks.check_k_g(q, G, name="q")
    check_candidates(candidates, Q, G, query.device)
    L = depth if candidates is None else candidates.shape[1]
    if candidates is None:
        checks.check_int("depth", depth, t, G, " (t .. the gallery size)")
    elif Q:
        shortest = int((candidates >= 0).sum(dim=1).min())
        torch._check_value(shortest >= t, lambda: f"every row of candidates must hold at least t = {t} ids; the "
                           f"shortest holds {shortest}")
    if k is not None:
        checks.check_int("k", k, 1, L, " (the candidates per query)")
    if graph is None:
        return None
    nbr = graph.neighbors if isinstance(graph, GalleryGraph) else graph
    torch._check_type(isinstance(nbr, Tensor) and nbr.dtype in (torch.int32, torch.int64),
                      lambda: f"graph must be a GalleryGraph or a (G, K_g) int32/int64 tensor; got "
                      f"{type(graph).__name__}")
    torch._check_value(nbr.dim() == 2 and nbr.shape[0] == G and nbr.shape[1] >= max(t, q),
                       lambda: f"graph must be (G, K_g) = ({G}, >= max(t, q) = {max(t, q)}); got "
                       f"{tuple(nbr.shape)}")
    torch._check_value(nbr.device == query.device,
                       lambda: f"graph must be on the features' device {query.device}; got {nbr.device}")
    lo, hi = int(nbr.min()), int(nbr.max())
    torch._check_value(lo >= 0 and hi < G, lambda: f"graph ids must be in [0, {G - 1}]; got ids in [{lo}, {hi}]")
    return nbr


def _dist(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances (..., P, D) x (..., R, D) -> (..., P, R) float64, by differences (no cancellation)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def sort_rows(key: Tensor, tie: Tensor, ids: Tensor, descending: bool = False) -> Tensor:
    """Per-row permutation ordering by key, then tie (same direction), then the smaller id."""
    p = torch.sort(ids, dim=1, stable=True).indices
    p = torch.gather(p, 1, torch.sort(torch.gather(tie, 1, p), dim=1, descending=descending, stable=True).indices)
    return torch.gather(p, 1, torch.sort(torch.gather(key, 1, p), dim=1, descending=descending, stable=True).indices)


def ecn(query: Tensor, gallery: Tensor, *, candidates: Optional[Tensor] = None,
        graph: Union[GalleryGraph, Tensor, None] = None, t: int = 3, q: int = 8, depth: int = 100,
        k: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Re-rank each query's candidates by the ECN distance (module docstring).

    Args:
        query: (Q, D) float query features.
        gallery: (G, D) float gallery features (G >= 2), same D and device.
        candidates: (Q, L) int32/int64 gallery ids to re-rank, any order, distinct per row, -1 padding as a suffix,
            at least t real ids per row; None: the ``depth`` nearest by the fused k-NN ("l2").
        graph: the gallery's k-NN graph (a GalleryGraph or (G, K_g) int ids, nearest first, self excluded,
            K_g >= max(t, q)); None: built from the features with the fused k-NN (K_g = max(t, q), "l2").
        t: nearest neighbours expanded (3 in the paper), in [1, G - 1].
        q: neighbours of each of them (8 in the paper), in [1, G - 1].
        depth: candidates per query when ``candidates`` is None, in [t, G].
        k: results per query, in [1, L] (None: L).

    Returns:
        values (Q, k) float32 ECN distances ascending, indices (Q, k) int64 gallery ids; a row with fewer than k real
        candidates ends in value +inf, index -1.

    Cost: per query O(L M D) for the distances, M = t + t q; memory one block of (queries, L M, D) float64 gathered
    features (<= 256 MB) plus the graph, never a Q x G matrix.

    Example:
        >>> import torch
        >>> from icfrr_fast.rerankers import ecn
        >>> g = torch.randn(60, 8)
        >>> ecn(g[:3] + 0.1, g, depth=10, k=5)[1].shape
        torch.Size([3, 5])
    """
    nbr = _validate_ecn(query, gallery, candidates, graph, t, q, depth, k)
    Q, G = query.shape[0], gallery.shape[0]
    dev = query.device
    x = gallery.to(torch.float32).to(torch.float64)
    if nbr is None:
        nbr = GalleryGraph.from_features(gallery.to(torch.float32), max(t, q), metric="l2",
                                         keep_values=False).neighbors
    nbr = nbr.long()
    if candidates is None:
        candidates = ops.knn_topk(query.to(torch.float32), gallery.to(torch.float32), k=depth, metric="l2",
                                  largest=False, exclude_self=False, row_offset=0, precision="fp32")[1]
    cand = candidates.long()
    L = cand.shape[1]
    k_out = L if k is None else k
    M = t + t * q
    values = torch.empty((Q, k_out), dtype=torch.float32, device=dev)
    indices = torch.empty((Q, k_out), dtype=torch.int64, device=dev)
    block = max(1, _GATHER_BUDGET // max(1, L * M * x.shape[1] * 8))
    for a in range(0, Q, block):
        c = cand[a:a + block]
        B = c.shape[0]
        real = c >= 0
        c0 = c.clamp_min(0)
        p = query[a:a + block].to(torch.float32).to(torch.float64)[:, None, :]  # (B, 1, D)
        xc = x[c0]  # (B, L, D)
        d_pc = torch.where(real, _dist(p, xc)[:, 0, :], torch.inf)  # (B, L)
        near = torch.gather(c0, 1, sort_rows(d_pc, d_pc, torch.where(real, c0, G))[:, :t])  # (B, t)
        e_p = torch.cat([near, nbr[near, :q].flatten(1)], dim=1)  # (B, M)
        term1 = _dist(x[e_p], xc).sum(dim=1)  # sum_e d(e, g): (B, L)
        first = nbr[c0, :t]  # (B, L, t)
        e_g = torch.cat([first, nbr[first, :q].flatten(2)], dim=2)  # (B, L, M)
        term2 = _dist(p, x[e_g.flatten(1)])[:, 0, :].view(B, L, M).sum(dim=2)  # sum_e d(p, e)
        score = torch.where(real, (term1 + term2) / (2 * M), torch.inf)
        order = sort_rows(score, d_pc, torch.where(real, c0, G))[:, :k_out]
        values[a:a + B] = torch.gather(score, 1, order).to(torch.float32)
        indices[a:a + B] = torch.where(torch.gather(real, 1, order), torch.gather(c0, 1, order), -1)
    return values, indices
