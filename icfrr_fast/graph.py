"""The gallery graph of DESIGN §2: for each gallery item i, N_i = its K_g nearest *other* gallery items, nearest
first (self excluded by index, ties to the smaller index). ICFRR reads only the neighbour ids and their ranks.

Build it from a dense (G, G) matrix (``from_distances``), from raw neighbour lists (``from_neighbors``), or, without
ever forming a G x G matrix, from features (``from_features``, fused k-NN) or any faiss index (``from_faiss``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _io, ops

__all__ = ["GalleryGraph"]


class GalleryGraph:
    """Neighbour lists of a gallery: ``neighbors[i, r] = n_i(r)``.

    Args:
        neighbors: (G, K) integer tensor, row i = the K nearest other items of item i, nearest first.
        values: optional (G, K) float tensor, the similarity (``largest=True``) or distance of each neighbour.
        largest: whether ``values`` are similarities (True) or distances (False).

    Attributes:
        neighbors: (G, K) int32, contiguous.
        values: (G, K) float32 or None.
    """

    def __init__(self, neighbors: Tensor, values: Optional[Tensor] = None, *, largest: bool = False):
        if not isinstance(neighbors, Tensor):
            raise TypeError(f"neighbors must be a torch.Tensor; got {type(neighbors).__name__}")
        if neighbors.dtype.is_floating_point or neighbors.dtype.is_complex or neighbors.dtype == torch.bool:
            raise TypeError(f"neighbors must be an integer tensor; got {neighbors.dtype}")
        if neighbors.dim() != 2:
            raise ValueError(f"neighbors must be 2-D (G, K); got shape {tuple(neighbors.shape)}")
        G, K = neighbors.shape
        if G < 2:
            raise ValueError(f"a gallery graph needs at least 2 items; got G = {G}")
        if not 1 <= K <= G - 1:
            raise ValueError(f"neighbors per item must be in [1, G - 1] = [1, {G - 1}]; got {K}")
        lo, hi = int(neighbors.min()), int(neighbors.max())
        if lo < 0 or hi >= G:
            raise ValueError(f"gallery graph ids must be in [0, G - 1] = [0, {G - 1}]; got ids in [{lo}, {hi}]")
        rows = torch.arange(G, device=neighbors.device)[:, None]
        if bool((neighbors == rows).any()):
            raise ValueError("a gallery item must not be its own neighbour (DESIGN §2 excludes it by index)")
        if values is not None:
            if not isinstance(values, Tensor) or not values.dtype.is_floating_point:
                raise TypeError("values must be a floating tensor or None")
            if values.shape != neighbors.shape:
                raise ValueError(f"values must have neighbors' shape {tuple(neighbors.shape)}; "
                                 f"got {tuple(values.shape)}")
            values = values.to(torch.float32).contiguous()
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
        if isinstance(gg, Tensor) and gg.dim() == 2 and gg.shape[0] != gg.shape[1]:
            raise ValueError(f"gg must be a square (G, G) matrix; got shape {tuple(gg.shape)}")
        if isinstance(gg, Tensor) and gg.dim() == 2 and gg.shape[0] < 2:
            raise ValueError(f"the gallery must hold at least 2 items; got G = {gg.shape[0]}")
        values, indices = ops.dense_topk(gg, k, largest, True, 0)
        return cls._trusted(indices, values, largest)

    @classmethod
    def _trusted(cls, neighbors: Tensor, values: Optional[Tensor], largest: bool) -> "GalleryGraph":
        """Wrap lists built by our own kernels (already valid): skips the O(G K) checks of ``__init__``."""
        g = object.__new__(cls)
        g.neighbors = neighbors.to(torch.int32).contiguous()
        g.values = None if values is None else values.to(torch.float32).contiguous()
        g.largest = bool(largest)
        return g

    @classmethod
    def from_neighbors(cls, neighbors: Tensor, values: Optional[Tensor] = None, *, largest: bool = False):
        """From precomputed neighbour lists (e.g. an approximate k-NN library's output)."""
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
        _io.atomic_save({"format": "icfrr_fast.GalleryGraph/1", "neighbors": self.neighbors.cpu(),
                         "values": None if self.values is None else self.values.cpu(),
                         "largest": self.largest}, path)

    @classmethod
    def load(cls, path, device="cpu") -> "GalleryGraph":
        """Load a graph written by :meth:`save` (``weights_only=True``: nothing in the file can run code)."""
        d = _io.load_tensor_file(path)
        if not isinstance(d, dict) or d.get("format") != "icfrr_fast.GalleryGraph/1":
            raise ValueError(f"{path}: not a GalleryGraph file (expected format 'icfrr_fast.GalleryGraph/1')")
        g = cls(d["neighbors"], d["values"], largest=bool(d["largest"]))
        return g.to(device) if torch.device(device) != g.device else g
