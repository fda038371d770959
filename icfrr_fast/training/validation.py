"""Retrieval metrics before and after ICFRR, for every iteration, with the package's ops and evaluator.

For L2-normalised query features q (Q, D) and gallery features g (G, D), with Euclidean distance (the ICFRR
paper's setting), queries are processed ``chunk_size`` at a time: each chunk's initial ranking and its ICFRR
re-rankings after iterations 1..T come from :func:`rerank_and_rank` as a (chunk, T + 1, G) history, which
``icfrr_fast.metrics.IterationMetrics`` scores and averages over the chunks (weighted by their counted queries).
The ranking and re-ranking go through ``icfrr_fast.ICFRRIndex`` (fused k-NN gallery graph, fused ICFRR): memory is bounded by
chunk x (T + 2) x G; no Q x G or G x G matrix is formed.

Reported keys: ``base/<m>`` (before ICFRR), ``it<t>/<m>`` (after t iterations, t = 1..T) and ``icfrr/<m>`` (after
T), for m in mAP@all, mAP@K (``map_at``), P@K (``precision_at``); plus ``queries``, ``gallery``, ``k_g``, ``k_q``.
"""

from __future__ import annotations

from typing import Dict, Iterator, Sequence, Tuple

from torch import Tensor

import icfrr_fast
from icfrr_fast.metrics import IterationMetrics

__all__ = ["rerank_and_rank", "retrieval_metrics"]


def rerank_and_rank(queries: Tensor, gallery: Tensor, *, k_g: int, k_q: int, beta: float, iters: int,
                    semantics: str = "reference", chunk_size: int = 256) -> Iterator[Tuple[int, Tensor]]:
    """Rank the gallery for each query and re-rank it with ICFRR, chunk by chunk.

    The one place that calls the package's retrieval ops: ``icfrr_fast.ICFRRIndex(gallery, k_g, metric="l2")``
    builds the gallery graph with the fused k-NN (never a G x G matrix), and ``index.search(q_chunk, k=G,
    return_history=True)`` ranks each chunk of queries by Euclidean distance (the ICFRR paper's setting: scores =
    -distance) and runs the fused ICFRR kernel on it. Peak memory is about chunk x (T + 2) x G.

    Args:
        queries: (Q, D) float features.
        gallery: (G, D) float features, G >= 2.
        k_g, k_q, beta, iters, semantics: ICFRR parameters (docs/design.md §2); k_g in [1, G - 1].
        chunk_size: queries per chunk.

    Yields:
        (first query index of the chunk, (chunk, T + 1, G) int64 history: [:, 0] the initial ranking by
        distance, [:, t] the ranking after t iterations).
    """
    index = icfrr_fast.ICFRRIndex(gallery.float(), k_g=k_g, metric="l2")
    G = gallery.shape[0]
    for start in range(0, queries.shape[0], chunk_size):
        _, _, history = index.search(queries[start:start + chunk_size].float(), k=G, k_q=k_q, beta=beta,
                                     iters=iters, semantics=semantics, return_history=True, batch_size=chunk_size)
        yield start, history


def retrieval_metrics(queries: Tensor, query_labels: Tensor, gallery: Tensor, gallery_labels: Tensor, *,
                      k_g: int = 256, k_q: int = 250, beta: float = 0.5, iters: int = 5,
                      semantics: str = "reference", map_at: Sequence[int] = (200,),
                      precision_at: Sequence[int] = (100, 200), chunk_size: int = 256) -> Dict[str, float]:
    """mAP@all, mAP@K and P@K before ICFRR and after each of its iterations (module docstring).

    ``k_g`` is clipped to G - 1 and ``k_q`` to G (small validation galleries); the values used are reported.

    Raises:
        ValueError: mismatched shapes or fewer than 2 gallery items.
    """
    if queries.dim() != 2 or gallery.dim() != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries (Q, D) and gallery (G, D) must be 2-D with the same D; got "
                         f"{tuple(queries.shape)} and {tuple(gallery.shape)}")
    if query_labels.shape != queries.shape[:1] or gallery_labels.shape != gallery.shape[:1]:
        raise ValueError("query_labels / gallery_labels must have one label per feature row")
    G = gallery.shape[0]
    if G < 2:
        raise ValueError(f"the gallery needs at least 2 items; got {G}")
    k_g, k_q = min(k_g, G - 1), min(k_q, G)
    accumulated = IterationMetrics(gallery_labels, map_at=tuple(map_at), precision_at=tuple(precision_at))
    for start, hist in rerank_and_rank(queries, gallery, k_g=k_g, k_q=k_q, beta=beta, iters=iters,
                                       semantics=semantics, chunk_size=chunk_size):
        accumulated.update(hist, query_labels[start:start + hist.shape[0]])
    out: Dict[str, float] = {}
    for t, m in enumerate(accumulated.compute()):
        name = "base" if t == 0 else f"it{t}"
        for metric, value in m.items():
            out[f"{name}/{metric}"] = value
            if t == iters:  # iters = 0: "icfrr" is the initial ranking
                out[f"icfrr/{metric}"] = value
    out.update({"queries": float(accumulated.queries), "gallery": float(G), "k_g": float(k_g), "k_q": float(k_q)})
    return out
