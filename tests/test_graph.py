"""GalleryGraph built from features (fused k-NN), from faiss indexes, and saved/loaded."""

import pytest
import torch

import icfrr_fast
from icfrr_fast import GalleryGraph, reference
from icfrr_fast.testing import cross_domain_features

from _assertions import assert_knn_equal_with_ties, assert_rankings_equal, assert_values_equal


def _gallery(G=300, D=24, seed=0):
    return cross_domain_features(1, G, dim=D, num_classes=12, seed=seed).gallery


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_from_features_matches_float64_brute_force(metric):
    g = _gallery()
    graph = GalleryGraph.from_features(g, 16, metric=metric)
    rv, ri = reference.knn_topk(g, g, 16, metric, exclude_self=True)
    assert graph.neighbors.dtype == torch.int32 and graph.neighbors.shape == (300, 16)
    assert graph.largest == (metric != "l2")
    assert_knn_equal_with_ties(graph.values, graph.neighbors.long(), rv, ri, atol=1e-5, rtol=1e-5)


def test_from_features_k_equals_G_minus_1_and_G_2():
    g = _gallery(G=9)
    graph = GalleryGraph.from_features(g, 8)
    assert sorted(graph.neighbors[4].tolist()) == [0, 1, 2, 3, 5, 6, 7, 8]
    two = GalleryGraph.from_features(torch.tensor([[0.0], [1.0]]), 1)
    assert two.neighbors.tolist() == [[1], [0]]


def test_from_features_self_excluded_by_index_with_duplicates():
    g = _gallery(G=50)
    g[10] = g[20]
    graph = GalleryGraph.from_features(g, 3)
    assert int(graph.neighbors[10, 0]) == 20 and int(graph.neighbors[20, 0]) == 10
    assert not bool((graph.neighbors == torch.arange(50, dtype=torch.int32)[:, None]).any())


def test_from_features_batches_and_progress_do_not_change_the_graph():
    g = _gallery()
    a = GalleryGraph.from_features(g, 10)
    b = GalleryGraph.from_features(g, 10, batch_size=7, progress=True)
    assert_rankings_equal(b.neighbors, a.neighbors)
    assert_values_equal(b.values, a.values)
    c = GalleryGraph.from_features(g, 10, keep_values=False)
    assert c.values is None
    assert_rankings_equal(c.neighbors, a.neighbors)


def test_from_features_matches_from_distances_on_integer_data():
    # integer features: exact float32 distances, so the fused and dense paths must agree id for id (ties included)
    g = torch.randint(-3, 4, (120, 5), generator=torch.Generator().manual_seed(2)).float()
    fused = GalleryGraph.from_features(g, 30, metric="l2sq")
    dense = GalleryGraph.from_distances(reference.knn_scores(g, g, "l2sq"), 30)
    assert_rankings_equal(fused.neighbors, dense.neighbors)


def test_save_load_round_trip(tmp_path):
    graph = GalleryGraph.from_features(_gallery(), 12, metric="cosine")
    path = tmp_path / "graph.pth"
    graph.save(path)
    back = GalleryGraph.load(path)
    assert_rankings_equal(back.neighbors, graph.neighbors)
    assert_values_equal(back.values, graph.values)
    assert back.largest is True and back.neighbors.dtype == torch.int32


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda g: GalleryGraph.from_features(g[:1], 1), ValueError, "at least 2 items"),
        (lambda g: GalleryGraph.from_features(g, 0), ValueError, r"k must be in \[1, G - 1\] = \[1, 29\]"),
        (lambda g: GalleryGraph.from_features(g, 30), ValueError, r"k must be in \[1, G - 1\] = \[1, 29\]"),
        (lambda g: GalleryGraph.from_features(g, 3, metric="hamming"), ValueError, "metric must be one of"),
        (lambda g: GalleryGraph.from_features(g.long(), 3), TypeError, "floating tensor"),
        (lambda g: GalleryGraph.from_features(g.index_fill(0, torch.tensor([2]), float("nan")), 3), ValueError,
         "must be finite"),
        (lambda g: GalleryGraph.from_features(g, 3, batch_size=0), ValueError, "batch_size must be >= 1"),
    ],
)
def test_from_features_validation(call, exc, match):
    with pytest.raises(exc, match=match):
        call(_gallery(G=30))


# ---- faiss (optional dependency) ------------------------------------------------------------------------------
faiss = pytest.importorskip("faiss")


@pytest.mark.parametrize("kind", ["l2", "ip"])
def test_from_faiss_flat_equals_from_features(kind):
    g = _gallery()
    index = faiss.IndexFlatL2(g.shape[1]) if kind == "l2" else faiss.IndexFlatIP(g.shape[1])
    index.add(g.numpy())
    graph = GalleryGraph.from_faiss(index, 15)
    ref = GalleryGraph.from_features(g, 15, metric=kind)
    assert graph.largest == (kind == "ip")
    assert_knn_equal_with_ties(graph.values, graph.neighbors.long(), ref.values, ref.neighbors.long(),
                               atol=1e-4, rtol=1e-4)


def test_from_faiss_self_not_returned_among_duplicates():
    # three identical items: faiss may rank a copy before the item itself; the item is still removed by index
    g = _gallery(G=40)
    g[5] = g[6] = g[7]
    index = faiss.IndexFlatL2(g.shape[1])
    index.add(g.numpy())
    graph = GalleryGraph.from_faiss(index, 4)
    assert not bool((graph.neighbors == torch.arange(40, dtype=torch.int32)[:, None]).any())
    for i, others in ((5, {6, 7}), (6, {5, 7}), (7, {5, 6})):
        assert set(graph.neighbors[i, :2].tolist()) == others


def test_from_faiss_fills_minus_one_padding_exactly():
    g = _gallery(G=400, D=16)
    quantizer = faiss.IndexFlatL2(16)
    index = faiss.IndexIVFFlat(quantizer, 16, 40)
    index.train(g.numpy())
    index.add(g.numpy())
    index.nprobe = 1  # lists of ~10 items: most rows come back padded with -1 for k + 1 = 31
    dist, ids = index.search(g.numpy(), 31)
    assert (ids < 0).any()
    graph = GalleryGraph.from_faiss(index, 30, x=g)
    n = graph.neighbors.long()
    assert bool((n >= 0).all()) and not bool((n == torch.arange(400)[:, None]).any())
    assert all(len(set(row.tolist())) == 30 for row in n)
    with pytest.raises(ValueError, match="fewer than k = 30 distinct neighbours"):
        GalleryGraph.from_faiss(index, 30, x=g, fill_exact=False)


def test_from_faiss_validation():
    index = faiss.IndexFlatL2(4)
    index.add(torch.randn(10, 4).numpy())
    with pytest.raises(ValueError, match=r"k must be in \[1, G - 1\]"):
        GalleryGraph.from_faiss(index, 10)
    with pytest.raises(ValueError, match="x must be the"):
        GalleryGraph.from_faiss(index, 3, x=torch.randn(9, 4))


def test_faiss_is_not_imported_by_the_package():
    import subprocess
    import sys

    code = "import icfrr_fast, sys; assert 'faiss' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert icfrr_fast.GalleryGraph is GalleryGraph


def test_cli_graph_command(tmp_path, capsys):
    import numpy as np

    from icfrr_fast.cli import main

    g = _gallery(G=120)
    np.save(tmp_path / "g.npy", g.numpy())
    assert main(["graph", str(tmp_path / "g.npy"), "--k-g", "7", "--metric", "cosine", "--no-progress",
                 "--out", str(tmp_path / "graph.pth")]) == 0
    assert "G=120 k_g=7" in capsys.readouterr().out
    back = GalleryGraph.load(tmp_path / "graph.pth")
    want = GalleryGraph.from_features(g, 7, metric="cosine")
    assert_rankings_equal(back.neighbors, want.neighbors)
    assert_values_equal(back.values, want.values)
    assert main(["graph", str(tmp_path / "g.npy"), "--k-g", "120", "--no-progress"]) == 2  # k_g > G - 1
