"""Database-side augmentation (DBA; Arandjelovic & Zisserman, "Three things everyone should know to improve object
retrieval", CVPR 2012; Gordo, Almazan, Revaud & Larlus, IJCV 2017; alpha-weighted as in Radenovic, Tolias & Chum,
TPAMI 2018), on the fused k-NN gallery graph.

Every gallery descriptor is replaced by the weighted sum of itself and its ``top`` nearest other gallery items
(inner product; pass L2-normalised descriptors), self excluded by index:

    g'_j = normalise(g_j + sum_{i=1..top} w_i g_{n_j(i)}),   w_i = max(g_j . g_{n_j(i)}, 0)^alpha   (alpha = 0: 1)

and the queries are searched against the augmented gallery (inner product). Sums in float64, rounded to float32.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .. import _checks as checks
from .. import ops
from ..graph import GalleryGraph
from ._checks import check_features, check_real
from .query_expansion import expand

__all__ = ["dba"]


def _validate_dba(query: Tensor, gallery: Tensor, top: int, alpha: float, k: int, batch_size: int) -> None:
    check_features(query, gallery, min_gallery=2)
    G = gallery.shape[0]
    checks.check_k_g(top, G, name="top")
    check_real("alpha", alpha, 0.0)
    checks.check_int("k", k, 1, G, " (the gallery size)")
    checks.check_int("batch_size", batch_size, 1)


def augment(gallery: Tensor, *, top: int, alpha: float, batch_size: int = 4096) -> Tensor:
    """The augmented gallery g' (G, D) float32 (module docstring); arguments as :func:`dba`."""
    g32 = gallery.to(torch.float32)
    nbr = GalleryGraph.from_features(g32, top, metric="ip", keep_values=False).neighbors.long()
    out = torch.empty_like(g32)
    for a in range(0, g32.shape[0], batch_size):
        out[a:a + batch_size] = expand(g32[a:a + batch_size], g32, nbr[a:a + batch_size], alpha)
    return out


def dba(query: Tensor, gallery: Tensor, *, top: int = 10, alpha: float = 0.0, k: int = 100,
        batch_size: int = 4096) -> Tuple[Tensor, Tensor]:
    """Search the DBA-augmented gallery (module docstring).

    Args:
        query: (Q, D) float query descriptors (L2-normalised).
        gallery: (G, D) float gallery descriptors (L2-normalised), G >= 2, same D and device.
        top: neighbours averaged into each gallery item, in [1, G - 1].
        alpha: weight exponent >= 0 (0 = plain average; alpha-DBA otherwise).
        k: results per query, in [1, G].
        batch_size: gallery rows per float64 augmentation block.

    Returns:
        values (Q, k) float32 similarities q . g', descending, indices (Q, k) int64 gallery ids (ties -> smaller id).

    Cost: the fused k-NN graph of the gallery (G^2 D / 2 FMAs with the symmetric build) + G top D + one fused search
    (Q G D); memory O(G (top + D) + Q k).

    Example:
        >>> import torch
        >>> from icfrr_fast.rerankers import dba
        >>> g = torch.nn.functional.normalize(torch.randn(50, 8), dim=1)
        >>> dba(g[:2], g, top=3, k=4)[1].shape
        torch.Size([2, 4])
    """
    _validate_dba(query, gallery, top, alpha, k, batch_size)
    g2 = augment(gallery, top=top, alpha=alpha, batch_size=batch_size)
    return ops.knn_topk(query.to(torch.float32), g2, k=k, metric="ip", largest=True, exclude_self=False, row_offset=0,
                        precision="fp32")
