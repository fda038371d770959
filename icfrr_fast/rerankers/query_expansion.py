"""Query expansion: average query expansion (AQE; Chum, Philbin, Sivic, Isard & Zisserman, "Total Recall", ICCV
2007) and alpha-weighted query expansion (alpha-QE; Radenovic, Tolias & Chum, "Fine-tuning CNN Image Retrieval with
No Human Annotation", TPAMI 2018), on the fused k-NN.

With descriptors compared by inner product (pass L2-normalised descriptors, as every implementation assumes), query q
with its ``top`` nearest gallery items n_1..n_top and their similarities s_i = q . g_{n_i}:

    q' = normalise(q + sum_{i=1..top} w_i g_{n_i}),   w_i = max(s_i, 0)^alpha   (alpha = 0: w_i = 1, AQE)

and the gallery is searched again with q' (inner product). The new query vector is accumulated in float64 and
rounded to float32, so the result does not depend on the device's summation order.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .. import _checks as checks
from .. import ops
from ._checks import check_features, check_real, unit_rows

__all__ = ["aqe", "alpha_qe"]


def _validate_query_expansion(query: Tensor, gallery: Tensor, top: int, alpha: float, k: int) -> None:
    check_features(query, gallery)
    G = gallery.shape[0]
    checks.check_int("top", top, 1, G, " (the gallery size)")
    check_real("alpha", alpha, 0.0)
    checks.check_int("k", k, 1, G, " (the gallery size)")


def expand(x: Tensor, y: Tensor, ids: Tensor, alpha: float) -> Tensor:
    """normalise(x_i + sum_j max(x_i . y_{ids_ij}, 0)^alpha y_{ids_ij}) for every row i, float64 sums -> float32.

    x: (R, D) float, y: (G, D) float, ids: (R, top) int64 rows of y. Returns (R, D) float32.
    """
    x64 = x.to(torch.float64)
    nb = y[ids].to(torch.float64)  # (R, top, D)
    if alpha == 0:
        w = torch.ones(ids.shape, dtype=torch.float64, device=x.device)
    else:
        w = torch.einsum("rd,rtd->rt", x64, nb).clamp_min(0.0) ** float(alpha)
    out = x64 + torch.einsum("rt,rtd->rd", w, nb)
    return unit_rows(out).to(torch.float32)


def _search(q: Tensor, gallery: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    return ops.knn_topk(q, gallery.to(q.dtype), k=k, metric="ip", largest=True, exclude_self=False, row_offset=0,
                        precision="fp32")


def alpha_qe(query: Tensor, gallery: Tensor, *, top: int = 10, alpha: float = 3.0, k: int = 100,
             batch_size: int = 4096) -> Tuple[Tensor, Tensor]:
    """alpha-QE (module docstring): expand each query with its ``top`` nearest gallery items weighted by
    similarity^alpha, then search again.

    Args:
        query: (Q, D) float query descriptors (L2-normalised).
        gallery: (G, D) float gallery descriptors (L2-normalised), same D and device.
        top: gallery items that expand a query, in [1, G].
        alpha: weight exponent >= 0 (0 = AQE; 3 in Radenovic et al.).
        k: results per query, in [1, G].
        batch_size: queries per fused k-NN call (bounds the (batch, top, D) float64 gather).

    Returns:
        values (Q, k) float32 similarities q' . g, descending, indices (Q, k) int64 gallery ids (ties -> smaller id).

    Cost: two fused k-NN passes over the gallery (Q G D FMAs each) + Q top D; memory O(Q (top + k) + batch top D).

    Example:
        >>> import torch
        >>> from icfrr_fast.rerankers import alpha_qe
        >>> g = torch.nn.functional.normalize(torch.randn(50, 8), dim=1)
        >>> alpha_qe(g[:2], g, top=3, k=4)[1].shape
        torch.Size([2, 4])
    """
    _validate_query_expansion(query, gallery, top, alpha, k)
    checks.check_int("batch_size", batch_size, 1)
    g32 = gallery.to(torch.float32)
    values = torch.empty((query.shape[0], k), dtype=torch.float32, device=query.device)
    indices = torch.empty((query.shape[0], k), dtype=torch.int64, device=query.device)
    for a in range(0, query.shape[0], batch_size):
        q = query[a:a + batch_size].to(torch.float32)
        ids = _search(q, g32, top)[1]
        values[a:a + batch_size], indices[a:a + batch_size] = _search(expand(q, g32, ids, alpha), g32, k)
    return values, indices


def aqe(query: Tensor, gallery: Tensor, *, top: int = 10, k: int = 100,
        batch_size: int = 4096) -> Tuple[Tensor, Tensor]:
    """Average query expansion: :func:`alpha_qe` with alpha = 0 (the query and its ``top`` nearest gallery items
    averaged with equal weights, normalised, searched again). Same arguments, returns and cost."""
    return alpha_qe(query, gallery, top=top, alpha=0.0, k=k, batch_size=batch_size)
