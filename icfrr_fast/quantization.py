"""k-means and product quantisation in plain PyTorch (seeded, deterministic; no faiss or scikit-learn import).

* ``kmeans``: Lloyd's algorithm (Lloyd, "Least squares quantization in PCM", 1982) from a k-means++ start (Arthur &
  Vassilvitskii, "k-means++: The Advantages of Careful Seeding", SODA 2007). Assignment ties go to the smaller
  centroid index; an emptied cluster is re-seeded with the point farthest from its centroid.
* ``ProductQuantizer``: the D feature dimensions are split into M contiguous sub-vectors and each sub-space gets its
  own K-means codebook (Jegou, Douze & Schmid, "Product Quantization for Nearest Neighbor Search", TPAMI 2011). M = 1
  is plain k-means. Its ``asymmetric_distances`` are PQ's asymmetric distance computation (ADC): the squared
  Euclidean distance from an unquantised query to each item's reconstruction, sum_m ||q^m - c^m_{code_m(j)}||^2.

Used by :func:`icfrr_fast.cluster_retrieve` (ClusterRetri).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import torch
from torch import Tensor

from ._checks import check_feature_matrix, check_int

__all__ = ["kmeans", "ProductQuantizer"]


def _sq_dists(x: Tensor, c: Tensor) -> Tensor:
    """(N, K) squared Euclidean distances, exact form |x|^2 - 2 x.c + |c|^2 clamped at 0."""
    return ((x * x).sum(1, keepdim=True) - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]).clamp_min_(0.0)


def kmeans(x: Tensor, k: int, *, iters: int = 25, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """Cluster the rows of ``x`` into ``k`` groups.

    Args:
        x: (N, D) float features.
        k: clusters, in [1, N].
        iters: Lloyd iterations (>= 1); stops early once no assignment changes.
        seed: seed of the k-means++ start.

    Returns:
        centroids (k, D) of x's dtype, assignment (N,) int64 in [0, k).

    Raises:
        TypeError / ValueError: naming the argument (non-float x, k out of range, NaN/inf, ...).

    Example:
        >>> import torch
        >>> x = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
        >>> c, a = kmeans(x, 2)
        >>> bool(a[0] == a[1]) and bool(a[2] == a[3]) and bool(a[0] != a[2])
        True
    """
    check_feature_matrix("x", x)
    check_int("k", k, 1, x.shape[0])
    check_int("iters", iters, 1)
    check_int("seed", seed, 0)
    n = x.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    # k-means++: each next centre drawn with probability proportional to the squared distance to the nearest one
    first = int(torch.randint(n, (1,), generator=gen))
    centres = [first]
    d2 = _sq_dists(x, x[first:first + 1]).squeeze(1)
    for _ in range(1, k):
        w = d2.double().cpu()
        nxt = int(torch.multinomial(w, 1, generator=gen)) if float(w.sum()) > 0 else int(torch.argmax(w))
        centres.append(nxt)
        d2 = torch.minimum(d2, _sq_dists(x, x[nxt:nxt + 1]).squeeze(1))
    c = x[centres].clone()
    assign = torch.argmin(_sq_dists(x, c), dim=1)  # argmin: ties -> the first (smaller) index
    for _ in range(iters):
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        c = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None].to(x.dtype), c)
        for e in torch.nonzero(counts == 0).flatten().tolist():  # re-seed an empty cluster with the worst-fit point
            err = ((x - c[assign]) ** 2).sum(1)
            far = int(torch.argmax(err))
            c[e] = x[far]
            assign[far] = e
        new_assign = torch.argmin(_sq_dists(x, c), dim=1)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
    # centroids consistent with the final assignment
    sums = torch.zeros_like(c).index_add_(0, assign, x)
    counts = torch.bincount(assign, minlength=k)
    c = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None].to(x.dtype), c)
    return c, assign


@dataclass
class ProductQuantizer:
    """A product quantiser fitted to a gallery.

    Attributes:
        centroids: M codebooks, codebook m is (K, D_m) (the sub-vector widths D_m follow ``torch.tensor_split``:
            they differ by at most one when M does not divide D).
        codes: (G, M) int64, ``codes[j, m]`` = the centroid of item j in sub-space m.
    """

    centroids: List[Tensor]
    codes: Tensor

    @property
    def num_subspaces(self) -> int:
        return len(self.centroids)

    @property
    def num_clusters(self) -> int:
        return self.centroids[0].shape[0]

    @classmethod
    def fit(cls, gallery: Tensor, num_clusters: int, num_subspaces: int = 1, *, iters: int = 25,
            seed: int = 0) -> "ProductQuantizer":
        """k-means (``num_clusters`` = K centroids) in each of ``num_subspaces`` = M contiguous sub-spaces.

        Args:
            gallery: (G, D) float features.
            num_clusters: K in [1, G].
            num_subspaces: M in [1, D].
            iters: Lloyd iterations per sub-space.
            seed: k-means++ seed (sub-space m uses seed + m).
        """
        check_feature_matrix("gallery", gallery)
        check_int("num_clusters", num_clusters, 1, gallery.shape[0])
        check_int("num_subspaces", num_subspaces, 1, gallery.shape[1])
        centroids, codes = [], []
        for m, part in enumerate(torch.tensor_split(gallery, num_subspaces, dim=1)):
            c, a = kmeans(part, num_clusters, iters=iters, seed=seed + m)
            centroids.append(c)
            codes.append(a)
        return cls(centroids, torch.stack(codes, dim=1))

    def asymmetric_distances(self, queries: Tensor) -> Tensor:
        """(Q, G) ADC distances ``sum_m ||q^m - c^m_{codes[j, m]}||^2`` of queries (Q, D) to every item."""
        parts = torch.tensor_split(queries, self.num_subspaces, dim=1)
        out = None
        for m, (qm, cm) in enumerate(zip(parts, self.centroids)):
            table = _sq_dists(qm, cm.to(qm.dtype))  # (Q, K) query-to-centroid distances
            d = table[:, self.codes[:, m]]  # (Q, G) gather: each item takes its centroid's distance
            out = d if out is None else out + d
        return out

    def reconstruct(self) -> Tensor:
        """(G, D) the items as their centroids (concatenated over sub-spaces)."""
        return torch.cat([c[self.codes[:, m]] for m, c in enumerate(self.centroids)], dim=1)
