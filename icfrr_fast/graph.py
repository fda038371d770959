"""The gallery graph of docs/design.md §2: for each gallery item i, N_i = its K_g nearest *other* gallery items, nearest
first (self excluded by index, ties to the smaller index). ICFRR reads only the neighbour ids and their ranks.

Build it from a dense (G, G) matrix (``from_distances``), from raw neighbour lists (``from_neighbors``), or, without
ever forming a G x G matrix, from features (``from_features``, fused k-NN) or any faiss index (``from_faiss``;
faiss is optional and never imported here: the index object is used as given).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import io, ops
from . import _checks as checks
from .knn import as_tensor, default_batch_rows, default_largest, knn_into

__all__ = ["GalleryGraph"]


def _stored_values(values: Tensor) -> Tensor:
    """Neighbour values as stored: float64 kept (exact selection keys of float64 features), others float32."""
    return values.to(torch.float64 if values.dtype == torch.float64 else torch.float32).contiguous()


class GalleryGraph:
    """Neighbour lists of a gallery: ``neighbors[i, r] = n_i(r)``.

    Args:
        neighbors: (G, K) integer tensor, row i = the K nearest other items of item i, nearest first.
        values: optional (G, K) float tensor, the similarity (``largest=True``) or distance of each neighbour.
        largest: whether ``values`` are similarities (True) or distances (False).

    Attributes:
        neighbors: (G, K) int32, contiguous. Each row holds distinct ids, none equal to the row's own.
        values: (G, K) float32 (float64 when given float64) or None.

    Raises:
        TypeError / ValueError: non-integer or non-2-D neighbors, G < 2, K not in [1, G - 1], ids out of range, a row
            holding an id twice or its own id (ICFRR counts each voter once per item), bad values.
    """

    def __init__(self, neighbors: Tensor, values: Optional[Tensor] = None, *, largest: bool = False):
        checks.check_dense_tensor("neighbors", neighbors)
        if neighbors.dtype.is_floating_point or neighbors.dtype.is_complex or neighbors.dtype == torch.bool:
            raise TypeError(f"neighbors must be an integer tensor; got {neighbors.dtype}")
        if neighbors.dim() != 2:
            raise ValueError(f"neighbors must be 2-D (G, K); got shape {tuple(neighbors.shape)}")
        checks.check_has_data("neighbors", neighbors)
        G, K = neighbors.shape
        checks.check_gallery_size(G, what="a gallery graph")
        checks.check_k_g(K, G, name="neighbors per item")
        lo, hi = int(neighbors.min()), int(neighbors.max())
        if lo < 0 or hi >= G:
            raise ValueError(f"gallery graph ids must be in [0, G - 1] = [0, {G - 1}]; got ids in [{lo}, {hi}]")
        # in row chunks, with ids of neighbors' own dtype: an int64 arange would promote a 10^6 x 256 int32 graph to a
        # 2 GB temporary
        for r0 in range(0, G, 1 << 16):
            part = neighbors[r0:r0 + (1 << 16)]
            rows = torch.arange(r0, r0 + part.shape[0], dtype=part.dtype, device=part.device)[:, None]
            if bool((part == rows).any()):
                raise ValueError("a gallery item must not be its own neighbour (docs/design.md §2 excludes it by index)")
            srt = torch.sort(part, dim=1).values
            dup = (srt[:, 1:] == srt[:, :-1]).any(dim=1).nonzero()
            if dup.numel():
                raise ValueError(f"neighbors row {r0 + int(dup[0, 0])} lists an id twice; each row must hold "
                                 f"distinct ids (ICFRR counts one vote per voter and item)")
        if values is not None:
            checks.check_dense_tensor("values", values)
            if not values.dtype.is_floating_point:
                raise TypeError(f"values must be a floating tensor or None; got {values.dtype}")
            if values.shape != neighbors.shape:
                raise ValueError(f"values must have neighbors' shape {tuple(neighbors.shape)}; "
                                 f"got {tuple(values.shape)}")
            if values.device != neighbors.device:
                raise ValueError(f"values must be on neighbors' device {neighbors.device}; got {values.device}")
            values = _stored_values(values)
        self.neighbors = neighbors.to(torch.int32).contiguous()
        self.values = values
        self.largest = bool(largest)

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_distances(cls, gg: Tensor, k: int, *, largest: bool = False) -> "GalleryGraph":
        """From a dense (G, G) gallery-gallery matrix: distances (``largest=False``, e.g. ``torch.cdist``) or
        similarities (``largest=True``). Partial selection per row in the native kernel, no full sort.

        Raises:
            ValueError: if gg is not square, G < 2, k not in [1, G - 1], or gg holds NaN/inf.
        """
        checks.check_float_matrix("gg", gg)
        if gg.shape[0] != gg.shape[1]:
            raise ValueError(f"gg must be a square (G, G) matrix; got shape {tuple(gg.shape)}")
        checks.check_gallery_size(gg.shape[0])
        checks.check_k_g(k, gg.shape[0], name="k")
        checks.check_bool("largest", largest)
        try:
            values, indices = ops.dense_topk(gg, k=k, largest=largest, exclude_self=True, row_offset=0)
        except ValueError as e:  # the data check names the op's argument x
            raise ValueError(str(e).replace("x must", "gg must", 1)) from None
        return cls._trusted(indices, values, largest)

    @classmethod
    def from_features(
        cls,
        g: Tensor,
        k: int,
        *,
        metric: str = "l2",
        precision: str = "fp32",
        keep_values: bool = True,
        batch_size: Optional[int] = None,
        progress: bool = False,
    ) -> "GalleryGraph":
        """Exact k-NN graph of the gallery, straight from features with the fused k-NN (never a G x G matrix).

        Item i itself is excluded by index (docs/design.md §2), ties go to the smaller index. Memory: the graph (G k int32,
        plus G k float32 values when kept), a packed copy of g, and one batch of (batch_size, k) results. When the
        kernel's symmetric build applies (float32 on CPU, D >= 384, its per-row collectors within ~1 GiB) and no
        ``batch_size`` is given, the whole graph is one call that computes each pair of items once (half the
        FLOPs; the progress bar then advances once, at the end).

        Args:
            g: (G, D) float16/bfloat16/float32/float64 gallery features, G >= 2.
            k: neighbours per item, in [1, G - 1].
            metric: "l2" (Euclidean distance, the released code's), "l2sq", "ip" or "cosine" (see ``icfrr_fast.knn``).
            precision: "fp32" or "bf16" (see docs/knn.md for its recall).
            keep_values: store each neighbour's distance/similarity in ``values`` (G k float32 more memory).
            batch_size: rows per fused call (default: bounded output memory).
            progress: show a tqdm progress bar (the CLI does; the library is silent by default).

        Returns:
            GalleryGraph with ``largest`` False for "l2"/"l2sq" (values are distances) and True otherwise.

        Raises:
            TypeError / ValueError: as ``icfrr_fast.knn``, and G < 2.

        Example:
            >>> import torch, icfrr_fast
            >>> graph = icfrr_fast.GalleryGraph.from_features(torch.randn(100, 16), k=8)
            >>> graph.neighbors.shape, graph.neighbors.dtype
            (torch.Size([100, 8]), torch.int32)
        """
        g = as_tensor(g, "g")
        checks.check_float_matrix("g", g)
        checks.check_gallery_size(g.shape[0])
        checks.check_k_g(k, g.shape[0], name="k")
        if not isinstance(metric, str) or metric not in ops.KNN_METRICS:
            raise ValueError(f"metric must be one of {ops.KNN_METRICS}; got {metric!r}")
        largest = default_largest(metric)
        ops.validate_knn_topk(g, g, k=k, metric=metric, largest=largest, exclude_self=True, row_offset=0,
                              precision=precision)
        checks.check_finite("g", g)
        G = g.shape[0]
        if batch_size is not None:
            checks.check_batch_size(batch_size)
        bs = default_batch_rows(G, k, g.shape[1]) if batch_size is None else batch_size
        if batch_size is None and ops.knn_graph_in_one_call(g, k):
            bs = G  # one call: the kernel computes each pair of row blocks once (symmetric build)
        neighbors = torch.empty((G, k), dtype=torch.int32, device=g.device)
        # values in the selection's dtype (float64 for float64 features with "fp32"), so that they are the exact
        # selection keys (ICFRRIndex.add merges on them)
        values = (torch.empty((G, k), dtype=ops.knn_out_dtype(g, precision), device=g.device) if keep_values
                  else None)
        knn_into(g, g, k=k, metric=metric, largest=largest, exclude_self=True, row_offset=0, precision=precision,
                 out_values=values, out_indices=neighbors, batch_size=bs, progress=progress, desc="gallery graph")
        return cls._trusted(neighbors, values, largest)

    @classmethod
    def from_faiss(cls, index, k: int, *, x=None, fill_exact: bool = True,
                   batch_size: Optional[int] = None) -> "GalleryGraph":
        """Gallery graph from any faiss index over the gallery (approximate indexes give approximate graphs).

        The rule, per item i: search the index with x_i for k + 1 results; drop item i itself wherever it appears
        (by index, even when a duplicate vector ranks before it), faiss' ``-1`` padding and every repeat of an id
        (approximate indexes can return an id twice; the first, best-ranked occurrence stays); keep the first k
        survivors in faiss' order. A row left with fewer than k neighbours is completed (``fill_exact=True``) with
        the exactly nearest items not yet in it (fused exact k-NN over ``x``), appended after faiss' results; with
        ``fill_exact=False`` such rows raise ``ValueError``. No duplicate, no ``-1`` and no self id is ever kept.
        faiss itself is not imported: the index object is used as given (a GPU index works through faiss' numpy
        interface); the graph is returned on the CPU (``.to(device)`` moves it).

        Args:
            index: a faiss index holding the G gallery vectors with ids 0 .. G - 1 (METRIC_L2 or
                METRIC_INNER_PRODUCT): IndexFlat, IndexIVF*, IndexHNSW*, IndexPQ, ... Only ``ntotal``, ``d``,
                ``metric_type``, ``search`` and (when ``x`` is None) ``reconstruct_n`` are used.
            k: neighbours per item, in [1, G - 1].
            x: (G, D) float array/tensor of the indexed vectors (default: ``index.reconstruct_n(0, G)``; IVF
                indexes of some faiss versions need ``index.make_direct_map()`` first, and PQ/SQ indexes reconstruct
                approximate vectors: pass the originals).
            fill_exact: complete short rows by exact search (else raise ValueError).
            batch_size: gallery rows per ``index.search`` call (default: about 64 MB of results per call).

        Returns:
            GalleryGraph: ``largest`` True for inner product (values are similarities), False for L2 (Euclidean
            distances, from faiss' squared ones). Values are the index's own: approximate for compressed codes.

        Raises:
            TypeError / ValueError: not a faiss index, unsupported metric, G < 2, k not in [1, G - 1], x of the wrong
                shape or not finite, ids outside [-1, G - 1], short rows with ``fill_exact=False``.
        """
        from .faiss_stage import graph_from_faiss  # the first-stage module imports this one

        return graph_from_faiss(index, k, x=x, fill_exact=fill_exact, batch_size=batch_size)

    @classmethod
    def _trusted(cls, neighbors: Tensor, values: Optional[Tensor], largest: bool) -> "GalleryGraph":
        """Wrap lists built by our own kernels (already valid): skips the O(G K) checks of ``__init__``."""
        g = object.__new__(cls)
        g.neighbors = neighbors.to(torch.int32).contiguous()
        g.values = None if values is None else _stored_values(values)
        g.largest = bool(largest)
        return g

    @classmethod
    def from_neighbors(cls, neighbors: Tensor, values: Optional[Tensor] = None, *, largest: bool = False):
        """From precomputed neighbour lists (e.g. an approximate k-NN library's output), validated like
        ``GalleryGraph(...)``: ids in [0, G - 1], distinct per row, none equal to the row's own id."""
        return cls(neighbors, values, largest=largest)

    # -- properties ---------------------------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        """G, the number of gallery items (the rank weight uses this, not K)."""
        return self.neighbors.shape[0]

    @property
    def k(self) -> int:
        """Neighbours stored per item."""
        return self.neighbors.shape[1]

    @property
    def device(self) -> torch.device:
        return self.neighbors.device

    def __len__(self) -> int:
        return self.num_items

    def __repr__(self) -> str:
        return f"GalleryGraph(G={self.num_items}, k={self.k}, device={self.device})"

    def to(self, device) -> "GalleryGraph":
        """A copy on ``device``."""
        values = None if self.values is None else self.values.to(device)
        return GalleryGraph._trusted(self.neighbors.to(device), values, self.largest)

    def neighbors_for(self, k_g: int) -> Tensor:
        """(G, k_g) int32 view of the first k_g neighbours of every item."""
        if isinstance(k_g, bool) or not isinstance(k_g, int):
            raise TypeError(f"k_g must be an int; got {type(k_g).__name__}")
        if not 1 <= k_g <= self.k:
            raise ValueError(f"k_g must be in [1, {self.k}] (this graph stores {self.k} neighbours per item; "
                             f"rebuild it with k >= k_g); got {k_g}")
        return self.neighbors[:, :k_g]

    # -- persistence --------------------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Save atomically (torch file holding only tensors and plain values)."""
        io.atomic_save({"format": "icfrr_fast.GalleryGraph/1", "neighbors": self.neighbors.cpu(),
                         "values": None if self.values is None else self.values.cpu(),
                         "largest": self.largest}, path)

    @classmethod
    def load(cls, path, device="cpu") -> "GalleryGraph":
        """Load a graph written by :meth:`save` (``weights_only=True``: nothing in the file can run code)."""
        d = io.load_tensor_file(path)
        if not isinstance(d, dict) or d.get("format") != "icfrr_fast.GalleryGraph/1":
            raise ValueError(f"{path}: not a GalleryGraph file (expected format 'icfrr_fast.GalleryGraph/1')")
        io.check_fields(path, d, {"neighbors": Tensor, "values": (Tensor, type(None)), "largest": bool})
        try:
            g = cls(d["neighbors"], d["values"], largest=d["largest"])
        except (ValueError, TypeError) as e:
            raise type(e)(f"{path}: {e}") from None
        return g.to(device) if torch.device(device) != g.device else g
