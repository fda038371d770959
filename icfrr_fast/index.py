"""``ICFRRIndex``: a faiss-style index that answers queries with ICFRR-re-ranked results.

    index = ICFRRIndex(gallery_features, k_g=256, metric="l2")   # fused k-NN gallery graph, never G x G
    D, I = index.search(queries, k=100, k_q=250, beta=0.5, iters=5)

``search`` runs query batch by query batch, so its memory is bounded whatever Q is: per batch the initial scores of
the candidates (``knn_scores`` for all G items when ``depth`` is None, then the fused ICFRR kernel
``icfrr_rerank``; otherwise the fused top-``depth`` (values, ids) from ``knn_topk``, handed as candidate lists
straight to ``icfrr_candidates``). ``add`` extends the gallery and updates the existing
neighbour lists so that the graph is exactly the one a rebuild would give (same arithmetic for every pair, same tie
rule).

Scores follow the released ICFRR code: for ``metric="l2"`` the initial scores are Euclidean distances ranked
smallest first (that is, scores = -Euclidean distance), and ``D`` holds the re-ranked keys as distances, ascending.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import io, ops
from . import _checks as checks
from .graph import GalleryGraph
from .knn import as_tensor, default_batch_rows, default_largest, knn_into
from .params import ICFRRParams

__all__ = ["ICFRRIndex"]

INDEX_METRICS = ("l2", "ip", "cosine")
#: (B, G) score buffer of one search batch, in bytes (B = this / (4 G), at least 1).
SEARCH_BATCH_BYTES = 256 << 20


class ICFRRIndex:
    """Gallery features + their exact k-NN graph; ``search`` returns ICFRR-re-ranked results like faiss.

    Args:
        gallery_features: (G, D) float16/bfloat16/float32/float64 features (numpy arrays accepted), G >= 2.
        k_g: neighbours per gallery item kept in the graph, in [1, G - 1] (``search`` may use fewer).
        metric: "l2" (scores = -Euclidean distance, the released code's), "ip" or "cosine".
        precision: "fp32" (exact float32) or "bf16" for the k-NN arithmetic (see docs/knn.md).
        progress: show tqdm progress bars while building or adding (the CLI does; silent by default).

    Attributes:
        graph: the :class:`GalleryGraph` (G, k_g). For "l2" its ``values`` are *squared* distances (the exact
            selection keys, kept so that ``add`` merges bit-exactly); similarities otherwise.
        features: (G, D) gallery features (float32, or float64 when given float64).

    Example:
        >>> import torch, icfrr_fast
        >>> g, q = torch.randn(200, 16), torch.randn(3, 16)
        >>> index = icfrr_fast.ICFRRIndex(g, k_g=10)
        >>> D, I = index.search(q, k=5, k_q=10)
        >>> D.shape, I.shape, bool((D[:, 1:] >= D[:, :-1]).all())
        (torch.Size([3, 5]), torch.Size([3, 5]), True)
    """

    def __init__(self, gallery_features, *, k_g: int = 256, metric: str = "l2", precision: str = "fp32",
                 progress: bool = False):
        if not isinstance(metric, str) or metric not in INDEX_METRICS:
            raise ValueError(f"metric must be one of {INDEX_METRICS}; got {metric!r}")
        if not isinstance(precision, str) or precision not in ops.KNN_PRECISIONS:
            raise ValueError(f"precision must be one of {ops.KNN_PRECISIONS}; got {precision!r}")
        g = self._prepare(gallery_features, "gallery_features", None)
        G = g.shape[0]
        checks.check_gallery_size(G)
        checks.check_k_g(k_g, G)
        self.metric = metric
        self.precision = precision
        self.progress = bool(progress)
        self.features = g
        # "l2" graphs are selected and stored on squared distances: the exact keys, so add() can merge bit-exactly.
        self._graph_metric = "l2sq" if metric == "l2" else metric
        self.graph = GalleryGraph.from_features(g, k_g, metric=self._graph_metric, precision=precision,
                                                progress=self.progress)

    # -- persistence --------------------------------------------------------------------------------------------
    FORMAT = "icfrr_fast.ICFRRIndex/1"

    def save(self, path) -> None:
        """Save features, graph and settings atomically (a torch file of tensors and plain values only)."""
        io.atomic_save({"format": self.FORMAT, "features": self.features, "neighbors": self.graph.neighbors,
                         "values": self.graph.values, "metric": self.metric, "precision": self.precision}, path)

    @classmethod
    def load(cls, path, *, progress: bool = False) -> "ICFRRIndex":
        """Load an index written by :meth:`save` (``weights_only=True``: nothing in the file can run code).

        Raises:
            ValueError: not an ICFRRIndex file, or inconsistent contents (checked like any user input).
        """
        d = io.load_tensor_file(path)
        if not isinstance(d, dict) or d.get("format") != cls.FORMAT:
            raise ValueError(f"{path}: not an ICFRRIndex file (expected format {cls.FORMAT!r})")
        io.check_fields(path, d, {"features": Tensor, "neighbors": Tensor, "values": (Tensor, type(None)),
                                   "metric": str, "precision": str})
        metric, precision = d["metric"], d["precision"]
        if metric not in INDEX_METRICS or precision not in ops.KNN_PRECISIONS:
            raise ValueError(f"{path}: unknown metric {metric!r} or precision {precision!r}")
        features = d["features"]
        try:  # the same checks as for features given to the constructor, and for any neighbour lists
            checks.check_float_matrix("features", features)
            if features.dtype not in (torch.float32, torch.float64):
                raise TypeError(f"features must be float32 or float64 (as an index stores them); got "
                                f"{features.dtype}")
            checks.check_finite("features", features)
            graph = GalleryGraph(d["neighbors"], d["values"], largest=default_largest(metric))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from None
        if graph.num_items != features.shape[0]:
            raise ValueError(f"{path}: the graph has {graph.num_items} items but there are {features.shape[0]} "
                             f"feature rows")
        index = object.__new__(cls)
        index.metric, index.precision, index.progress = metric, precision, bool(progress)
        index._graph_metric = "l2sq" if metric == "l2" else metric
        index.features = features
        index.graph = graph
        return index

    # -- properties ---------------------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        """G, the number of gallery items (faiss' name)."""
        return self.features.shape[0]

    @property
    def d(self) -> int:
        """D, the feature dimension (faiss' name)."""
        return self.features.shape[1]

    @property
    def k_g(self) -> int:
        """Neighbours stored per gallery item."""
        return self.graph.k

    @property
    def largest(self) -> bool:
        """False for "l2" (scores are distances, smaller first), True for "ip"/"cosine"."""
        return default_largest(self.metric)

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return f"ICFRRIndex(G={self.ntotal}, D={self.d}, k_g={self.k_g}, metric={self.metric!r})"

    def _prepare(self, features, name: str, D: Optional[int]) -> Tensor:
        t = as_tensor(features, name)
        checks.check_float_matrix(name, t)
        if D is not None and t.shape[1] != D:
            raise ValueError(f"{name} must have the index's feature dimension D = {D}; got {t.shape[1]}")
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.to(torch.float32)  # exact; the kernels compute in float32
        want = getattr(self, "features", None)
        if want is not None and not isinstance(features, Tensor):
            t = t.to(want.device)  # an array (numpy) goes where the index lives
        if want is not None and t.device != want.device:
            raise ValueError(f"{name} must be on the index's device {want.device}; got {t.device}")
        if want is not None and t.dtype != want.dtype:
            t = t.to(want.dtype)
        checks.check_finite(name, t)
        return t

    # -- building -----------------------------------------------------------------------------------------------
    def add(self, features, *, batch_size: Optional[int] = None) -> None:
        """Append N gallery items and update the graph exactly as a rebuild over all G + N items would.

        New items get their k_g nearest among all items (self excluded); every existing list is merged with its
        best new items. Each pair's score is computed with the same arithmetic in both calls, and the merge keeps
        (score, smaller id) order, so the result is bit-identical to ``ICFRRIndex(all_features)``'s graph.

        Args:
            features: (N, D) features, N >= 1 (dtype converted to the index's).
            batch_size: rows per fused k-NN call (default: bounded output memory).
        """
        new = self._prepare(features, "features", self.d)
        if batch_size is not None:
            checks.check_batch_size(batch_size)
        N = new.shape[0]
        if N == 0:
            return
        G0, K = self.ntotal, self.k_g
        if G0 + N >= 2**31 - 1:
            raise ValueError(f"the gallery must hold fewer than 2^31 - 1 items; got {G0} + {N}")
        largest = default_largest(self._graph_metric)
        all_features = torch.cat([self.features, new])
        bs = default_batch_rows(G0 + N, K, self.d) if batch_size is None else batch_size
        # 1. lists of the new items over the whole gallery (item G0 + r excluded from row r)
        dev = self.features.device
        sel_dtype = ops.knn_out_dtype(all_features, self.precision)
        new_ids = torch.empty((N, K), dtype=torch.int32, device=dev)
        new_vals = torch.empty((N, K), dtype=sel_dtype, device=dev)
        knn_into(new, all_features, k=K, metric=self._graph_metric, largest=largest, exclude_self=True, row_offset=G0,
                 precision=self.precision, out_values=new_vals, out_indices=new_ids, batch_size=bs,
                 progress=self.progress, desc="new items")
        # 2. each existing list merged with its best new items; all new ids exceed the old ones, so a stable sort of
        #    [old list, new candidates] by value is exactly the (value, smaller id) order of a rebuild. The values
        #    are the selection keys in the selection's own dtype (float64 for float64 features), never rounded.
        Kn = min(K, N)
        old_ids, old_vals = self.graph.neighbors, self.graph.values.to(sel_dtype)
        merged_ids = torch.empty((G0, K), dtype=torch.int32, device=dev)
        merged_vals = torch.empty((G0, K), dtype=sel_dtype, device=dev)
        for r0 in range(0, G0, bs):
            r1 = min(G0, r0 + bs)
            cv, ci = ops.knn_topk(self.features[r0:r1], new, k=Kn, metric=self._graph_metric, largest=largest,
                                  exclude_self=False, row_offset=0, precision=self.precision)
            vals = torch.cat([old_vals[r0:r1], cv.to(sel_dtype)], dim=1)
            ids = torch.cat([old_ids[r0:r1].to(torch.int64), ci + G0], dim=1)
            order = torch.sort(vals, dim=1, descending=largest, stable=True).indices[:, :K]
            merged_vals[r0:r1] = torch.gather(vals, 1, order)
            merged_ids[r0:r1] = torch.gather(ids, 1, order).to(torch.int32)
        self.features = all_features
        self.graph = GalleryGraph._trusted(torch.cat([merged_ids, new_ids]), torch.cat([merged_vals, new_vals]),
                                           largest)

    # -- searching ----------------------------------------------------------------------------------------------
    def search(
        self,
        queries,
        k: int,
        *,
        k_q: int = 250,
        beta: float = 0.5,
        iters: int = 5,
        semantics: str = "reference",
        depth: Optional[int] = None,
        return_history: bool = False,
        early_stop: bool = False,
        k_g: Optional[int] = None,
        batch_size: Optional[int] = None,
    ):
        """ICFRR-re-ranked top-k gallery items of every query (docs/design.md §2).

        Args:
            queries: (Q, D) features (numpy arrays accepted).
            k: results per query, in [1, L] (L = depth, or G).
            k_q: voters per iteration (clipped to L).
            beta: vote weight, finite and >= 0.
            iters: ICFRR iterations T >= 0 (0 returns the initial k-NN ranking).
            semantics: "reference" (the released code) or "paper".
            depth: L, re-rank only the top-L initial candidates (fused top-L, no full score row per query); None
                (default) re-ranks all G items, exact. A smaller L is an approximation (docs/design.md §2.3).
            return_history: also return H, the order after every iteration.
            early_stop: stop a query once an iteration leaves its voter set unchanged.
            k_g: neighbours per gallery item used for voting (default: all the graph holds).
            batch_size: queries per batch (default: as many as a (B, G) float32 score buffer of about 256 MB holds;
                with ``depth`` the batch holds only (B, depth) candidate lists).

        Returns:
            ``(D, I)``, or ``(D, I, H)`` with ``return_history``: D (Q, k) float32 (float64 for a float64 index
            with precision "fp32") re-ranked keys (for "l2": distances, ascending; similarities, descending,
            otherwise), I (Q, k) int64 gallery ids, H (Q, T + 1, k) int64 (H[:, 0] = initial ranking).

        Raises:
            TypeError / ValueError: bad arguments (see ``icfrr_fast.icfrr``), D mismatch, NaN/inf queries.
        """
        q = self._prepare(queries, "queries", self.d)
        Q, G = q.shape[0], self.ntotal
        L = G if depth is None else depth
        checks.check_int("depth", L, 1, G, " (the gallery size)")
        checks.check_int("k", k, 1, L, " (the candidate depth)")
        p = ICFRRParams(k_g=self.k_g if k_g is None else k_g, k_q=k_q, beta=beta, iters=iters, semantics=semantics,
                        depth=L, early_stop=early_stop)
        neighbors = self.graph.neighbors_for(p.k_g)
        largest = self.largest
        if batch_size is not None:
            checks.check_batch_size(batch_size)
        B = max(1, SEARCH_BATCH_BYTES // (4 * G)) if batch_size is None else batch_size
        dev = self.features.device
        score_dtype = ops.knn_out_dtype(q, self.precision)
        # every argument checked before any output is allocated, whatever Q is (Q = 0 included): a (Q, G) view of
        # one row stands in for the scores
        args = dict(p.op_kwargs(), largest=largest, k=k, return_history=return_history)
        ops.validate_icfrr_rerank(torch.empty((1, G), dtype=score_dtype, device=dev).expand(Q, G), neighbors,
                                  depth=L, **args)
        hint = ops.RERANK_MEMORY_HINT
        D_out = ops.alloc_output((Q, k), score_dtype, dev, hint)
        I_out = ops.alloc_output((Q, k), torch.int64, dev, hint)
        H_out = ops.alloc_output((Q, iters + 1, k), torch.int64, dev, hint) if return_history else None
        for q0 in range(0, Q, B):
            qb = q[q0:q0 + B]
            if L == G:
                scores = ops.knn_scores(qb, self.features, metric=self.metric, precision=self.precision)
                v, i, h = ops.icfrr_rerank(scores, neighbors, depth=L, **args)
                del scores
            else:  # the fused top-L (values, ids) are the candidate lists: no (B, G) buffer
                cv, ci = ops.knn_topk(qb, self.features, k=L, metric=self.metric, largest=largest, exclude_self=False,
                                      row_offset=0, precision=self.precision)
                v, i, h = ops.icfrr_candidates(cv, ci, neighbors, gallery_size=G, **args)
                del cv, ci
            D_out[q0:q0 + B] = v
            I_out[q0:q0 + B] = i
            if H_out is not None:
                H_out[q0:q0 + B] = h
        return (D_out, I_out, H_out) if return_history else (D_out, I_out)
