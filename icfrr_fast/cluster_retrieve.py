"""ClusterRetri: cluster-then-retrieve, a gallery-side baseline that ICFRR is compared with.

Wu, Song, Zhao, Chen & Ma, "Distribution Aligned Feature Clustering for Zero-Shot Sketch-Based Image Retrieval"
(arXiv:2301.06685, 2023) cluster the gallery features and retrieve with the query's distance to each gallery item's
cluster centroid as a proxy for its distance to the item: items of a cluster the query is close to come first, as a
group, which pulls in same-class items whose own features are far from the sketch. This module implements that idea
with a product-quantised gallery (M = 1: plain k-means) and an optional fusion with the direct distance:

    d_proxy(q, j)  = sum_{m=1..M} || q^m - c^m_{code_m(j)} ||^2        (PQ asymmetric distance; M = 1: ||q - c(j)||^2)
    d_direct(q, j) = || q - g_j ||^2
    d(q, j)        = (1 - lambda) * d_proxy(q, j) + lambda * d_direct(q, j)

Items are ranked by d ascending; ties (with lambda = 0, every item of one cluster ties) are broken by d_direct, then by
the smaller index, so the ranking within a cluster is the plain nearest-neighbour order.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ._checks import check_feature_matrix, check_int
from .quantization import ProductQuantizer

__all__ = ["cluster_retrieve"]


def cluster_retrieve(
    queries: Tensor,
    gallery: Tensor,
    *,
    num_clusters: int,
    num_subspaces: int = 1,
    fusion: float = 0.0,
    k: Optional[int] = None,
    iters: int = 25,
    seed: int = 0,
    quantizer: Optional[ProductQuantizer] = None,
    chunk_size: int = 1024,
) -> Tuple[Tensor, Tensor]:
    """Rank the gallery for each query by ClusterRetri's fused centroid-proxy distance (module docstring).

    Args:
        queries: (Q, D) float query features.
        gallery: (G, D) float gallery features (same D).
        num_clusters: K, centroids per sub-space, in [1, G] (the paper clusters into as many groups as there are
            test classes).
        num_subspaces: M, product-quantisation sub-spaces, in [1, D] (1 = k-means on the whole vector).
        fusion: lambda in [0, 1], the weight of the direct distance (0 = pure cluster proxy, 1 = plain k-NN).
        k: results per query, in [1, G] (default: all G).
        iters: k-means (Lloyd) iterations.
        seed: k-means++ seed.
        quantizer: a :class:`~icfrr_fast.quantization.ProductQuantizer` already fitted to ``gallery`` (then
            num_clusters, num_subspaces, iters and seed are not used for fitting, and the quantizer's G must match).
        chunk_size: queries per block (bounds memory to chunk_size x G).

    Returns:
        values (Q, k) float32 fused distances, ascending, and indices (Q, k) int64 gallery ids, like
        ``torch.topk(..., largest=False)``.

    Raises:
        TypeError: non-tensor or non-float features, non-int sizes, non-real fusion.
        ValueError: shape mismatch, NaN/inf, a size out of range, fusion outside [0, 1].

    Example:
        >>> import torch, icfrr_fast
        >>> g = torch.tensor([[0.0, 0.0], [0.0, 0.2], [4.0, 4.0], [4.2, 4.0]])
        >>> q = torch.tensor([[1.0, 1.0]])
        >>> icfrr_fast.cluster_retrieve(q, g, num_clusters=2)[1]
        tensor([[1, 0, 2, 3]])
    """
    check_feature_matrix("queries", queries)
    check_feature_matrix("gallery", gallery)
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries and gallery must have the same feature size D; got {queries.shape[1]} and "
                         f"{gallery.shape[1]}")
    G = gallery.shape[0]
    if G < 1:
        raise ValueError("gallery must hold at least one item")
    if isinstance(fusion, bool) or not isinstance(fusion, (int, float)):
        raise TypeError(f"fusion must be a real number; got {type(fusion).__name__}")
    if not 0.0 <= float(fusion) <= 1.0:
        raise ValueError(f"fusion (lambda) must be in [0, 1]; got {fusion}")
    k_out = G if k is None else k
    check_int("k", k_out, 1, G)
    check_int("chunk_size", chunk_size, 1)
    if quantizer is None:
        check_int("num_clusters", num_clusters, 1, G)
        check_int("num_subspaces", num_subspaces, 1, gallery.shape[1])
        quantizer = ProductQuantizer.fit(gallery, num_clusters, num_subspaces, iters=iters, seed=seed)
    elif not isinstance(quantizer, ProductQuantizer):
        raise TypeError(f"quantizer must be a ProductQuantizer or None; got {type(quantizer).__name__}")
    elif quantizer.codes.shape[0] != G:
        raise ValueError(f"quantizer was fitted to {quantizer.codes.shape[0]} items but gallery has G = {G}")

    lam = float(fusion)
    dtype = torch.promote_types(queries.dtype, torch.float32)
    gal = gallery.to(dtype)
    values = torch.empty(queries.shape[0], k_out, dtype=torch.float32, device=queries.device)
    indices = torch.empty(queries.shape[0], k_out, dtype=torch.int64, device=queries.device)
    for start in range(0, queries.shape[0], chunk_size):
        q = queries[start:start + chunk_size].to(dtype)
        direct = ((q * q).sum(1, keepdim=True) - 2.0 * (q @ gal.T) + (gal * gal).sum(1)[None, :]).clamp_min_(0.0)
        proxy = quantizer.asymmetric_distances(q)
        fused = direct if lam == 1.0 else (proxy if lam == 0.0 else (1.0 - lam) * proxy + lam * direct)
        # lexicographic order (fused, direct, index): stable sort by the tie-breaker first, then by the key
        by_direct = torch.sort(direct, dim=1, stable=True).indices
        by_fused = torch.sort(torch.gather(fused, 1, by_direct), dim=1, stable=True).indices
        order = torch.gather(by_direct, 1, by_fused)[:, :k_out]
        values[start:start + chunk_size] = torch.gather(fused, 1, order).to(torch.float32)
        indices[start:start + chunk_size] = order
    return values, indices
