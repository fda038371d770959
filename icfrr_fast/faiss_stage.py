"""A faiss index as ICFRR's first stage: candidates and the gallery graph from any faiss index, no exact all-pairs pass.

    index = faiss.IndexHNSWFlat(D, 32); index.add(gallery)            # any index over the G gallery vectors
    searcher = FaissICFRR(index, k_g=64)                              # graph = GalleryGraph.from_faiss(index, 64)
    D, I = searcher.search(queries, k=100, depth=1000, k_q=250, beta=0.5, iters=5)

Per query batch, ``index.search(queries, depth)`` gives each query's candidate list; ICFRR (Iterative Cluster-free
Re-ranking; "If At First You Don't Succeed: Test Time Re-ranking for Zero-shot, Cross-domain Retrieval") then
re-ranks exactly those candidates with the semantics of ``depth`` (votes for items outside a query's list are
dropped; the rank weight uses the whole gallery's G). With an exact index (``IndexFlatL2``/``IndexFlatIP``) the
result is ``ICFRRIndex.search(..., depth=depth)``'s up to the float rounding of faiss' distances.

faiss is never imported here: the index object is used as given (CPU or GPU faiss indexes alike, through faiss'
numpy interface; only ``ntotal``, ``d``, ``metric_type``, ``search`` and, for the default ``x``, ``reconstruct_n``
are used). Results and the re-ranking live on the graph's device.

**The candidate rule** (what approximate indexes return, made valid for ICFRR): faiss pads short result lists with
id ``-1`` (IVF with few probes, HNSW with a small ``efSearch``), and an approximate index can return an id twice. In
each row the ``-1`` entries and every repeat of an id are dropped, the first (best-ranked) occurrence of an id is
kept, the survivors keep faiss' order and are moved to the front, and the row is padded with ``-1`` at the end
(:func:`dedupe_candidates`). A query left with ``L_q < k`` candidates gets ``L_q`` results followed by padding
(index ``-1``, value ``+inf`` for distances / ``-inf`` for similarities). Ids outside ``[-1, G - 1]`` are an error
(an ``IndexIDMap`` with custom ids is not a gallery of row ids).

**Scores**: ``METRIC_L2`` indexes report squared distances; they are turned into Euclidean distances
(``sqrt(max(d^2, 0))``, ranked smallest first: the released ICFRR code's scores, as ``ICFRRIndex(metric="l2")``);
``METRIC_INNER_PRODUCT`` scores are similarities (largest first; L2-normalise the vectors for cosine). Values from a
compressed index (PQ, SQ) are its approximate distances, not the exact ones.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from . import ops
from . import _checks as checks
from .graph import GalleryGraph
from .knn import as_tensor, default_batch_rows
from .params import ICFRRParams

__all__ = ["FaissICFRR", "dedupe_candidates", "graph_from_faiss"]

#: faiss' metric codes (faiss.METRIC_INNER_PRODUCT, faiss.METRIC_L2); no other metric has an ICFRR score here.
METRIC_INNER_PRODUCT, METRIC_L2 = 0, 1
#: bytes of one search batch's candidate lists and their cleaned copies (B = this / (48 depth), at least 1).
SEARCH_BATCH_BYTES = 64 << 20
#: candidates per query when ``search`` is not told (clipped to G).
DEFAULT_DEPTH = 1000


def _index_info(index) -> Tuple[int, int, bool]:
    """(G, D, largest) of a faiss index; TypeError/ValueError naming ``index`` when it is not usable."""
    missing = [a for a in ("ntotal", "d", "metric_type", "search") if not hasattr(index, a)]
    if missing:
        raise TypeError(f"index must be a faiss index (an object with ntotal, d, metric_type and search); "
                        f"{type(index).__name__} lacks {', '.join(missing)}")
    G, D, metric_type = int(index.ntotal), int(index.d), int(index.metric_type)
    if metric_type not in (METRIC_INNER_PRODUCT, METRIC_L2):
        raise ValueError(f"index must use METRIC_L2 or METRIC_INNER_PRODUCT; got metric_type {metric_type}")
    checks.check_gallery_size(G, what="index", items="vectors", detail=" (ntotal)")
    return G, D, metric_type == METRIC_INNER_PRODUCT


def _as_float32_rows(x, name: str, D: int) -> Tensor:
    """(n, D) finite float32 CPU contiguous tensor of an array/tensor argument (what faiss' numpy interface takes)."""
    t = as_tensor(x, name)
    checks.check_float_matrix(name, t)
    if t.shape[1] != D:
        raise ValueError(f"{name} must have the index's dimension D = {D}; got shape {tuple(t.shape)}")
    t = t.detach().to("cpu", torch.float32).contiguous()
    checks.check_finite(name, t)
    return t


def _search(index, x: Tensor, n: int, G: int) -> Tuple[Tensor, Tensor]:
    """``index.search(x, n)`` as (distances (B, n) float32, ids (B, n) int64) CPU tensors, ids checked."""
    dist, ids = index.search(x.numpy(), n)
    dist = torch.as_tensor(np.asarray(dist) if not isinstance(dist, Tensor) else dist).to("cpu", torch.float32)
    ids = torch.as_tensor(np.asarray(ids) if not isinstance(ids, Tensor) else ids).to("cpu", torch.int64)
    if ids.shape != (x.shape[0], n) or dist.shape != ids.shape:
        raise ValueError(f"index.search returned shapes {tuple(dist.shape)} and {tuple(ids.shape)}; expected "
                         f"({x.shape[0]}, {n}) for both")
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < -1 or hi >= G:
            raise ValueError(f"index returned ids in [{lo}, {hi}]; a gallery index must return row ids in "
                             f"[0, ntotal - 1] = [0, {G - 1}] or -1 (an IndexIDMap with other ids is not supported)")
    return dist, ids


def _scores(dist: Tensor, largest: bool) -> Tensor:
    """faiss' distances as ICFRR scores: similarities as given; squared L2 -> Euclidean distance, correctly rounded
    (sqrt in float64, then rounded: the kernels' float32 ``std::sqrt``; torch's vectorised float32 sqrt is not)."""
    return dist if largest else dist.clamp_min(0).to(torch.float64).sqrt_().to(torch.float32)


def dedupe_candidates(ids: Tensor, values: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """The candidate rule: drop ``-1`` and repeated ids (the first occurrence stays), compact, pad with ``-1``.

    Args:
        ids: (B, n) int64 result ids of an approximate search, ``-1`` = no result, any position.
        values: (B, n) float scores of ``ids``.

    Returns:
        ``(ids, values, counts)``: ids (B, n) int64, each row's distinct non-negative ids in their first-occurrence
        order followed by ``-1``; values (B, n) the matching scores (0 in padding slots); counts (B,) int64, the
        number of real ids per row.

    Example:
        >>> import torch
        >>> ids, v, n = dedupe_candidates(torch.tensor([[4, -1, 2, 4, 7]]), torch.tensor([[.1, 9., .2, .3, .4]]))
        >>> ids.tolist(), v.tolist(), n.tolist()
        ([[4, 2, 7, -1, -1]], [[0.10000000149011612, 0.20000000298023224, 0.4000000059604645, 0.0, 0.0]], [3])
    """
    drop = ids < 0
    if ids.shape[1] > 1:
        # a stable sort by id puts the repeats of an id right after its first occurrence
        by_id, perm = torch.sort(ids, dim=1, stable=True)
        repeat = torch.zeros_like(drop)
        repeat[:, 1:] = by_id[:, 1:] == by_id[:, :-1]
        drop |= torch.zeros_like(drop).scatter_(1, perm, repeat)
    counts = (~drop).sum(dim=1)
    rows = (counts < ids.shape[1]).nonzero().flatten()
    if len(rows) == 0:  # the common case (exact and graph indexes): nothing to drop
        return ids, values, counts
    ids, values = ids.clone(), values.clone()
    d = drop[rows]
    order = torch.sort(d.to(torch.uint8), dim=1, stable=True).indices  # kept entries first, in their order
    d = d.gather(1, order)
    ids[rows] = ids[rows].gather(1, order).masked_fill_(d, -1)
    values[rows] = values[rows].gather(1, order).masked_fill_(d, 0)
    return ids, values, counts


def graph_from_faiss(index, k: int, *, x=None, fill_exact: bool = True,
                     batch_size: Optional[int] = None) -> GalleryGraph:
    """The body of :meth:`GalleryGraph.from_faiss` (its docstring states the rule, the arguments and the errors)."""
    G, D, largest = _index_info(index)
    checks.check_k_g(k, G, name="k")
    checks.check_bool("fill_exact", fill_exact)
    if x is None:
        try:
            x = index.reconstruct_n(0, G)
        except Exception as e:  # faiss raises RuntimeError when an IVF index has no direct map
            raise ValueError(f"x was not given and index.reconstruct_n failed ({e}); pass x= (the gallery vectors) "
                             f"or call index.make_direct_map() on an IVF index") from None
    xt = _as_float32_rows(x, "x", D)
    if xt.shape[0] != G:
        raise ValueError(f"x must be the (G, D) = ({G}, {D}) indexed vectors; got shape {tuple(xt.shape)}")
    bs = default_batch_rows(G, k + 1, D) if batch_size is None else batch_size
    checks.check_int("batch_size", bs, 1)
    neighbors = torch.empty((G, k), dtype=torch.int32)
    values = torch.empty((G, k), dtype=torch.float32)
    short = []
    for r0 in range(0, G, bs):
        r1 = min(G, r0 + bs)
        dist, ids = _search(index, xt[r0:r1], k + 1, G)
        ids = ids.masked_fill(ids == torch.arange(r0, r1)[:, None], -1)  # self excluded by index
        ids, vals, n = dedupe_candidates(ids, _scores(dist, largest))
        neighbors[r0:r1] = ids[:, :k].to(torch.int32)
        values[r0:r1] = vals[:, :k]
        short.append((n < k).nonzero().flatten() + r0)
    short = torch.cat(short)
    if len(short) and not fill_exact:
        raise ValueError(f"the index returned fewer than k = {k} distinct neighbours (after removing -1 padding, "
                         f"repeated ids and the item itself) for {len(short)} items; pass fill_exact=True or search "
                         f"deeper (IVF: larger nprobe; HNSW: larger efSearch)")
    metric = "ip" if largest else "l2"
    for s0 in range(0, len(short), bs):
        rows = short[s0:s0 + bs]
        ev, ei = ops.knn_topk(xt[rows], xt, k=k + 1, metric=metric, largest=largest, exclude_self=False, row_offset=0,
                              precision="fp32")  # k others + maybe self
        ei.masked_fill_(ei == rows[:, None], -1)
        ids = torch.cat([neighbors[rows].to(torch.int64), ei], dim=1)  # faiss' survivors first, then exact order
        vals = torch.cat([values[rows], ev.to(torch.float32)], dim=1)
        ids, vals, _ = dedupe_candidates(ids, vals)
        neighbors[rows] = ids[:, :k].to(torch.int32)
        values[rows] = vals[:, :k]
    return GalleryGraph(neighbors, values, largest=largest)


class FaissICFRR:
    """ICFRR-re-ranked search over the candidates of a faiss index (faiss-style ``search`` -> ``(D, I)``).

    Args:
        index: faiss index over the G gallery vectors (METRIC_L2 or METRIC_INNER_PRODUCT, ids 0 .. G - 1; CPU or
            GPU). Used as given: set ``nprobe`` / ``efSearch`` on it to trade recall for speed.
        graph: the gallery graph (G items). Default: ``GalleryGraph.from_faiss(index, k_g, x=x)``, from the same
            index. An exact graph (``GalleryGraph.from_features``) may be passed when one exists.
        k_g: neighbours per item of the default graph (clipped to G - 1).
        x: (G, D) gallery vectors for the default graph (see :meth:`GalleryGraph.from_faiss`).

    Attributes:
        index: the faiss index.
        graph: the :class:`GalleryGraph`; the re-ranking runs on its device.

    Example:
        >>> import faiss, torch, icfrr_fast
        >>> g, q = torch.randn(300, 16), torch.randn(4, 16)
        >>> index = faiss.IndexFlatL2(16); index.add(g.numpy())
        >>> D, I = icfrr_fast.FaissICFRR(index, k_g=20).search(q, k=10, depth=50, k_q=20)
        >>> D.shape, I.shape, bool((D[:, 1:] >= D[:, :-1]).all())
        (torch.Size([4, 10]), torch.Size([4, 10]), True)
    """

    def __init__(self, index, graph: Optional[GalleryGraph] = None, *, k_g: int = 256, x=None):
        G, D, largest = _index_info(index)
        if graph is None:
            checks.check_int("k_g", k_g, 1)
            graph = graph_from_faiss(index, min(k_g, G - 1), x=x)
        elif not isinstance(graph, GalleryGraph):
            raise TypeError(f"graph must be a GalleryGraph or None; got {type(graph).__name__}")
        if graph.num_items != G:
            raise ValueError(f"graph has G = {graph.num_items} items but the index holds ntotal = {G}")
        self.index, self.graph = index, graph

    @property
    def ntotal(self) -> int:
        """G, the number of gallery items (faiss' name)."""
        return int(self.index.ntotal)

    @property
    def d(self) -> int:
        """D, the feature dimension (faiss' name)."""
        return int(self.index.d)

    @property
    def largest(self) -> bool:
        """True for an inner-product index (similarities, larger first), False for L2 (distances)."""
        return int(self.index.metric_type) == METRIC_INNER_PRODUCT

    def __repr__(self) -> str:
        return f"FaissICFRR({type(self.index).__name__}, G={self.ntotal}, D={self.d}, k_g={self.graph.k})"

    def search(
        self,
        queries,
        k: int,
        *,
        depth: int = DEFAULT_DEPTH,
        k_q: int = 250,
        beta: float = 0.5,
        iters: int = 5,
        semantics: str = "reference",
        return_history: bool = False,
        early_stop: bool = False,
        k_g: Optional[int] = None,
        batch_size: Optional[int] = None,
    ):
        """ICFRR-re-ranked top-k of every query over its ``depth`` faiss candidates (module docstring: the rules).

        Args:
            queries: (Q, D) float array/tensor (sent to faiss as float32), finite.
            k: results per query, in [1, depth].
            depth: L, candidates asked of ``index.search`` per query, >= 1 (clipped to G). Approximate indexes may
                return fewer (padding) or repeated ids: :func:`dedupe_candidates`.
            k_q: voters per iteration (clipped to each query's candidate count).
            beta: vote weight, finite and >= 0.
            iters: ICFRR iterations T >= 0 (0 returns the candidates in faiss' score order).
            semantics: "reference" (the released code) or "paper".
            return_history: also return H, the order after every iteration.
            early_stop: stop a query once an iteration leaves its voter set unchanged.
            k_g: graph neighbours used for voting (default: all the graph holds).
            batch_size: queries per ``index.search`` call and re-ranking batch (default: about 64 MB of candidate
                lists per batch); memory is bounded by the batch, whatever Q is.

        Returns:
            ``(D, I)``, or ``(D, I, H)`` with ``return_history``: D (Q, k) float32 re-ranked keys (L2: distances,
            ascending; inner product: similarities, descending), I (Q, k) int64 gallery ids, H (Q, T + 1, k) int64;
            a query with fewer than k candidates ends in padding (I = -1, D = +inf / -inf, H = -1).

        Raises:
            TypeError / ValueError: bad arguments (named), D mismatch, non-finite queries, ids outside [-1, G - 1].
        """
        G = self.ntotal
        q = _as_float32_rows(queries, "queries", self.d)
        checks.check_int("depth", depth, 1)
        L = min(depth, G)
        checks.check_int("k", k, 1, L, " (the candidate depth, clipped to G)")
        p = ICFRRParams(k_g=self.graph.k if k_g is None else k_g, k_q=k_q, beta=beta, iters=iters,
                        semantics=semantics, depth=L, early_stop=early_stop)
        neighbors = self.graph.neighbors_for(p.k_g)
        B = max(1, SEARCH_BATCH_BYTES // (48 * L)) if batch_size is None else batch_size
        checks.check_int("batch_size", B, 1)
        Q, dev = q.shape[0], neighbors.device
        # every remaining argument checked once, before any work (a call on Q = 0 queries is validated too)
        args = dict(p.op_kwargs(), gallery_size=G, largest=self.largest, k=k, return_history=return_history)
        ops.validate_icfrr_candidates(torch.empty((0, L), device=dev), torch.empty((0, L), dtype=torch.int64,
                                      device=dev), neighbors, **args)
        D_out = torch.empty((Q, k), dtype=torch.float32, device=dev)
        I_out = torch.empty((Q, k), dtype=torch.int64, device=dev)
        H_out = torch.empty((Q, iters + 1, k), dtype=torch.int64, device=dev) if return_history else None
        for q0 in range(0, Q, B):
            dist, ids = _search(self.index, q[q0:q0 + B], L, G)
            ids, scores, _ = dedupe_candidates(ids, _scores(dist, self.largest))
            v, i, h = ops.icfrr_candidates(scores.to(dev), ids.to(dev), neighbors, **args)
            D_out[q0:q0 + B], I_out[q0:q0 + B] = v, i
            if H_out is not None:
                H_out[q0:q0 + B] = h
        return (D_out, I_out, H_out) if return_history else (D_out, I_out)

