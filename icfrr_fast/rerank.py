"""Public ICFRR entry point: ``icfrr(scores, gallery, ...)`` -> ``(values, indices)`` like ``torch.topk``.

ICFRR (Iterative Cluster-free Re-ranking; "If At First You Don't Succeed: Test Time Re-ranking for Zero-shot,
Cross-domain Retrieval") lets each query's top-K_q gallery items vote for their own K_g nearest gallery neighbours
and re-sorts, for T iterations. docs/design.md §2 defines it; this module validates the call and dispatches to the
registered op ``torch.ops.icfrr_fast.icfrr_rerank`` (C++ on CPU tensors, Triton/CUDA on GPU tensors, the reference
anywhere else) or, with ``backend="reference"``, explicitly to ``icfrr_fast.reference``.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from . import ops, reference
from . import _checks as checks
from .graph import GalleryGraph
from .params import ICFRRParams

__all__ = ["icfrr", "ICFRRResult"]

BACKENDS = ("auto", "reference")


class ICFRRResult(tuple):
    """``(values, indices)`` like ``torch.topk``'s result, plus ``history`` (None unless requested).

    Attributes:
        values: (Q, k) final keys with the scores' dtype, best first (for ``largest=False``: re-ranked distances,
            ascending); with candidate lists (``ids``) padded with -inf (+inf for distances).
        indices: (Q, k) int64 gallery ids, best first (-1 past a row's candidates).
        history: (Q, T + 1, k) int64 order after every iteration ([:, 0] = initial ranking) or None.
    """

    def __new__(cls, values: Tensor, indices: Tensor, history: Optional[Tensor] = None):
        self = super().__new__(cls, (values, indices))
        self.history = history
        return self

    @property
    def values(self) -> Tensor:
        return self[0]

    @property
    def indices(self) -> Tensor:
        return self[1]

    def __repr__(self) -> str:
        h = None if self.history is None else tuple(self.history.shape)
        return f"ICFRRResult(values={tuple(self.values.shape)}, indices={tuple(self.indices.shape)}, history={h})"


def icfrr(
    scores: Tensor,
    gallery: Union[GalleryGraph, Tensor],
    *,
    ids: Optional[Tensor] = None,
    k_g: int = 256,
    k_q: int = 250,
    beta: float = 0.5,
    iters: int = 5,
    semantics: str = "reference",
    largest: bool = True,
    k: Optional[int] = None,
    depth: Optional[int] = None,
    return_history: bool = False,
    early_stop: bool = False,
    backend: str = "auto",
) -> ICFRRResult:
    """Re-rank every query's gallery ranking with ICFRR (docs/design.md §2).

    For T iterations, the first ``K_q' = min(k_q, L)`` items of the current order vote; item j gets
    ``delta_j = mean over voters i of alpha(rank of j in N_i)``, ``alpha(r) = 1 - r / (G - 1)`` (0 outside N_i),
    accumulated exactly in integers. ``semantics="reference"`` (the authors' released code): the item at position p
    gets key ``v_p + beta * delta`` where v is the initial scores sorted descending. ``semantics="paper"``:
    ``s^(t+1) = s^(t) + beta * delta^(t)``. A stable sort gives the next order (ties keep the current order).

    With ``ids``, ``scores`` and ``ids`` are (Q, L) candidate lists from any first stage (an exact or approximate
    k-NN index, a vector database): row q holds gallery ids in any order, possibly ending in padding -1 (its scores
    are ignored). ICFRR then runs over exactly those candidates, as ``depth`` does over the top-L (votes for items
    outside the list are dropped; alpha uses the whole gallery's G); the initial order sorts each row best first,
    ties to the smaller id. On the exact top-L this equals ``depth=L`` bit for bit. A row with fewer than ``k``
    candidates is padded with index -1 and value -inf (+inf for ``largest=False``).

    Args:
        scores: (Q, G) float16/bfloat16/float32/float64 query-gallery scores, larger is better; with
            ``largest=False`` they are distances (e.g. ``torch.cdist``, as in the released code). With ``ids``:
            the (Q, L) scores of the candidates.
        gallery: a :class:`GalleryGraph`, or a dense (G, G) gallery-gallery matrix of the same kind as ``scores``.
            With ``ids``: a :class:`GalleryGraph` or a (G, K_g) int32 neighbour tensor (entries in [-1, G - 1];
            -1 = no neighbour).
        ids: (Q, L) int32/int64 candidate gallery ids, distinct per row, padding -1 only as a row's suffix; None
            (default): ``scores`` are dense.
        k_g: neighbours per gallery item, in [1, G - 1] (published: TU-Berlin 512, Sketchy-21 125).
        k_q: voters per iteration, >= 1 (clipped to L; published: TU-Berlin 512, Sketchy-21 100).
        beta: vote weight, finite and >= 0.
        iters: iterations T >= 0 (0 returns the initial ranking).
        semantics: "reference" or "paper".
        largest: True when scores are similarities, False for distances.
        k: results per query (default: all L).
        depth: L, re-rank only the top-L of the initial ranking (default: all G, exact). A smaller L is an
            approximation: votes for items outside it are dropped and only those L items are returned. Not with
            ``ids`` (the candidate lists set L).
        return_history: also return the order after every iteration as ``result.history``.
        early_stop: stop a query once an iteration leaves its voter set unchanged (the paper's "until
            convergence"; this can change results compared with running all T iterations).
        backend: "auto" (the registered op for the tensors' device) or "reference" (the dense oracle).

    Returns:
        :class:`ICFRRResult` ``(values, indices)`` with ``history``; values have ``scores``' dtype.

    Raises:
        TypeError: non-tensor, sparse or integer/complex inputs, arguments of the wrong type.
        ValueError: shape mismatches, G < 2, k_g not in [1, G - 1], k_q < 1, iters < 0, non-finite or negative
            beta, NaN/inf scores, unknown semantics, out-of-range graph ids, a graph row listing an id twice or
            its own id; with ``ids``: ids out of range, repeated in a row or with padding before a candidate,
            NaN/inf scores of a candidate, ``depth`` given.
        MemoryError: the (Q, k) outputs (and history) do not fit; the message gives the bytes (ask for a smaller
            ``k`` or ``depth``).

    Example:
        >>> import torch, icfrr_fast
        >>> g = torch.randn(50, 8); q = torch.randn(3, 8)
        >>> res = icfrr_fast.icfrr(torch.cdist(q, g), torch.cdist(g, g), k_g=10, k_q=5, largest=False)
        >>> res.indices.shape
        torch.Size([3, 50])
    """
    checks.check_dense_tensor("scores", scores)
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D (Q, G); got shape {tuple(scores.shape)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if not isinstance(largest, bool):
        raise TypeError(f"largest must be a bool; got {type(largest).__name__}")
    if ids is not None and depth is not None:
        raise ValueError(f"depth cannot be combined with ids: the candidate lists set L (ids.shape[1]); "
                         f"got depth={depth}")
    checks.check_bool("return_history", return_history)
    params = ICFRRParams(k_g=k_g, k_q=k_q, beta=beta, iters=iters, semantics=semantics, depth=depth,
                         early_stop=early_stop)
    if ids is not None:
        return _icfrr_candidates(scores, ids, gallery, params, largest=largest, k=k, return_history=return_history,
                                 backend=backend)
    G = scores.shape[1]
    checks.check_gallery_size(G, detail=" (scores.shape[1] >= 2)")
    if isinstance(gallery, GalleryGraph):
        graph = gallery
    elif isinstance(gallery, Tensor):
        if gallery.dim() != 2 or gallery.shape[0] != gallery.shape[1]:
            raise ValueError(f"gallery must be a GalleryGraph or a square (G, G) matrix; got shape "
                             f"{tuple(gallery.shape)}")
        if gallery.shape[0] != G:
            raise ValueError(f"gallery matrix is {gallery.shape[0]} x {gallery.shape[0]} but scores has G = {G} "
                             f"columns")
        checks.check_k_g(k_g, G)  # before the op schema sees it
        try:
            graph = GalleryGraph.from_distances(gallery, k_g, largest=largest)
        except (ValueError, TypeError) as e:
            raise type(e)(f"gallery: {e}") from None
    else:
        raise TypeError(f"gallery must be a GalleryGraph or a (G, G) tensor; got {type(gallery).__name__}")
    if graph.num_items != G:
        raise ValueError(f"the gallery graph has G = {graph.num_items} items but scores has {G} columns")
    checks.check_k_g(k_g, graph.num_items)
    neighbors = graph.neighbors_for(k_g)
    if neighbors.device != scores.device:
        raise ValueError(f"the gallery graph is on {neighbors.device} but scores are on {scores.device}; "
                         f"move one with .to()")
    L = G if depth is None else depth
    k_out = L if k is None else k
    # argument types and ranges first (the op schema would reject a float k_q with a less helpful RuntimeError);
    # the data checks run once, inside the kernel, or here for the reference
    args = dict(params.op_kwargs(), largest=largest, depth=L, k=k_out, return_history=return_history)
    ops.validate_icfrr_rerank(scores, neighbors, **args, check_data=backend == "reference")
    rerank = reference.icfrr_rerank if backend == "reference" else ops.icfrr_rerank
    v, i, h = rerank(scores, neighbors, **args)
    return ICFRRResult(v, i, h if return_history else None)


def _icfrr_candidates(scores: Tensor, ids: Tensor, gallery: Union[GalleryGraph, Tensor], params: ICFRRParams, *,
                      largest: bool, k: Optional[int], return_history: bool, backend: str) -> ICFRRResult:
    """``icfrr`` with candidate lists: the graph's first k_g neighbours, then ``icfrr_candidates``."""
    k_g = params.k_g
    if isinstance(gallery, GalleryGraph):
        neighbors = gallery.neighbors_for(k_g)
    elif isinstance(gallery, Tensor) and gallery.dtype == torch.int32 and gallery.dim() == 2:
        if isinstance(k_g, bool) or not isinstance(k_g, int):
            raise TypeError(f"k_g must be an int; got {type(k_g).__name__}")
        if not 1 <= k_g <= gallery.shape[1]:
            raise ValueError(f"k_g must be in [1, {gallery.shape[1]}] (the neighbour tensor holds "
                             f"{gallery.shape[1]} neighbours per item); got {k_g}")
        neighbors = gallery[:, :k_g]
    else:
        what = f"a {tuple(gallery.shape)} {gallery.dtype} tensor" if isinstance(gallery, Tensor) else \
            type(gallery).__name__
        raise TypeError(f"with ids, gallery must be a GalleryGraph or a (G, K_g) int32 neighbour tensor; got {what}")
    if neighbors.device != scores.device:
        raise ValueError(f"the gallery graph is on {neighbors.device} but scores are on {scores.device}; "
                         f"move one with .to()")
    G = neighbors.shape[0]
    k_out = scores.shape[1] if k is None else k
    args = dict(params.op_kwargs(), gallery_size=G, largest=largest, k=k_out, return_history=return_history)
    ops.validate_icfrr_candidates(scores, ids, neighbors, **args, check_data=backend == "reference")
    candidates = reference.icfrr_candidates if backend == "reference" else ops.icfrr_candidates
    v, i, h = candidates(scores, ids, neighbors, **args)
    return ICFRRResult(v, i, h if return_history else None)
