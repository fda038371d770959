"""ClusterRetri (icfrr_fast.cluster_retrieve) and its k-means / product quantiser, against direct implementations."""

import subprocess
import sys

import pytest
import torch

import icfrr_fast
from icfrr_fast.quantization import ProductQuantizer, kmeans


def _blobs(n_per: int, centres: torch.Tensor, spread: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(centres)).repeat_interleave(n_per)
    x = centres[labels] + spread * torch.randn(len(labels), centres.shape[1], generator=gen, dtype=centres.dtype)
    return x, labels


def _direct_cluster_retrieve(q, g, pq: ProductQuantizer, fusion: float):
    """The module docstring's formula, one (query, item) pair at a time, sorted by (d, d_direct, index)."""
    M = pq.num_subspaces
    out = []
    for qi in q:
        q_parts = torch.tensor_split(qi, M)
        keys = []
        for j, gj in enumerate(g):
            proxy = sum(float(((q_parts[m] - pq.centroids[m][pq.codes[j, m]]) ** 2).sum()) for m in range(M))
            direct = float(((qi - gj) ** 2).sum())
            keys.append(((1 - fusion) * proxy + fusion * direct, direct, j))
        out.append([j for _, _, j in sorted(keys)])
    return torch.tensor(out)


# -- k-means -----------------------------------------------------------------------------------------------------------
def test_kmeans_recovers_separated_blobs():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]], dtype=torch.float64)
    x, labels = _blobs(15, centres, 0.5, seed=1)
    c, a = kmeans(x, 4, seed=3)
    # same partition as the ground truth, up to a relabelling
    mapping = {int(t): int(p) for t, p in zip(labels, a)}
    assert len(set(mapping.values())) == 4
    assert torch.equal(torch.tensor([mapping[int(t)] for t in labels]), a)
    # centroids are the means of their clusters
    for k in range(4):
        torch.testing.assert_close(c[k], x[a == k].mean(0))


def test_kmeans_is_deterministic_and_every_cluster_is_used():
    x = torch.randn(60, 5, dtype=torch.float64)
    c1, a1 = kmeans(x, 7, seed=5)
    c2, a2 = kmeans(x, 7, seed=5)
    assert torch.equal(a1, a2) and torch.equal(c1, c2)
    assert torch.bincount(a1, minlength=7).min() >= 1
    # Lloyd's fixed point: every point is assigned to its nearest centroid
    assert torch.equal(a1, torch.cdist(x, c1).argmin(1))


def test_kmeans_with_duplicate_points_and_k_equal_n():
    x = torch.tensor([[1.0, 1.0]] * 3 + [[2.0, 2.0]], dtype=torch.float64)
    c, a = kmeans(x, 4)
    assert a.shape == (4,) and int(a.max()) < 4
    torch.testing.assert_close(c[a], x)


# -- product quantiser -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("M", [1, 3], ids=lambda m: f"M={m}")
def test_asymmetric_distances_match_reconstruction(M):
    g = torch.randn(40, 10, dtype=torch.float64)  # D = 10 is not a multiple of 3: uneven sub-vectors
    q = torch.randn(6, 10, dtype=torch.float64)
    pq = ProductQuantizer.fit(g, 5, M, seed=2)
    assert pq.codes.shape == (40, M) and pq.num_clusters == 5
    expected = ((q[:, None, :] - pq.reconstruct()[None, :, :]) ** 2).sum(-1)
    torch.testing.assert_close(pq.asymmetric_distances(q), expected)


# -- ClusterRetri ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("M, K, fusion", [(1, 4, 0.0), (1, 6, 0.25), (3, 5, 0.0), (3, 5, 0.6)],
                         ids=["kmeans", "kmeans-lambda=0.25", "pq-M=3", "pq-M=3-lambda=0.6"])
def test_cluster_retrieve_matches_direct_implementation(M, K, fusion):
    centres = torch.randn(4, 10, dtype=torch.float64) * 3
    g, _ = _blobs(12, centres, 1.0, seed=4)
    q, _ = _blobs(2, centres, 1.5, seed=5)
    pq = ProductQuantizer.fit(g, K, M, seed=0)
    values, indices = icfrr_fast.cluster_retrieve(q, g, num_clusters=K, num_subspaces=M, fusion=fusion, seed=0)
    expected = _direct_cluster_retrieve(q, g, pq, fusion)
    assert torch.equal(indices, expected), f"{int((indices != expected).sum())} positions differ"
    # values are the fused distances, ascending
    assert torch.all(values[:, 1:] >= values[:, :-1])
    # passing the fitted quantiser gives the same ranking; k truncates it
    v2, i2 = icfrr_fast.cluster_retrieve(q, g, num_clusters=K, fusion=fusion, quantizer=pq, k=7, chunk_size=3)
    assert torch.equal(i2, expected[:, :7])
    torch.testing.assert_close(v2, values[:, :7])


def test_pure_proxy_groups_clusters_and_orders_inside_by_direct_distance():
    g = torch.tensor([[0.0, 0.0], [0.0, 0.3], [0.0, -0.2], [5.0, 5.0], [5.2, 5.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.25]], dtype=torch.float64)
    _, idx = icfrr_fast.cluster_retrieve(q, g, num_clusters=2)
    assert idx.tolist() == [[1, 0, 2, 3, 4]]


def test_fusion_one_is_plain_nearest_neighbour():
    g = torch.randn(30, 8)
    q = torch.randn(4, 8)
    _, idx = icfrr_fast.cluster_retrieve(q, g, num_clusters=3, fusion=1.0)
    assert torch.equal(idx, torch.sort(torch.cdist(q, g), dim=1, stable=True).indices)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(queries=[[0.0]]), TypeError, "queries"),
    (dict(gallery=torch.ones(5, 4, dtype=torch.int64)), TypeError, "gallery"),
    (dict(queries=torch.randn(3, 5)), ValueError, "feature size D"),
    (dict(queries=torch.full((2, 4), float("nan"))), ValueError, "queries holds NaN"),
    (dict(num_clusters=0), ValueError, "num_clusters"),
    (dict(num_clusters=21), ValueError, "num_clusters"),
    (dict(num_clusters=2.5), TypeError, "num_clusters"),
    (dict(num_subspaces=5), ValueError, "num_subspaces"),
    (dict(fusion=1.5), ValueError, "fusion"),
    (dict(fusion="0.5"), TypeError, "fusion"),
    (dict(k=0), ValueError, "k must be"),
    (dict(iters=0), ValueError, "iters"),
    (dict(quantizer="pq"), TypeError, "quantizer"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_arguments_name_the_argument(kwargs, exc, match):
    args = dict(queries=torch.randn(2, 4), gallery=torch.randn(20, 4), num_clusters=3)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        icfrr_fast.cluster_retrieve(args.pop("queries"), args.pop("gallery"), **args)


def test_quantizer_of_another_gallery_is_refused():
    pq = ProductQuantizer.fit(torch.randn(10, 4), 2)
    with pytest.raises(ValueError, match="quantizer was fitted to 10 items"):
        icfrr_fast.cluster_retrieve(torch.randn(2, 4), torch.randn(12, 4), num_clusters=2, quantizer=pq)


def test_import_stays_free_of_faiss_and_sklearn():
    code = ("import sys, icfrr_fast; icfrr_fast.cluster_retrieve; "
            "bad = [m for m in ('faiss', 'sklearn', 'matplotlib', 'efficientnet_lite_pytorch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
