"""ICFRRIndex: search equals icfrr() on dense scores and a dense gallery graph; add() equals a rebuild."""

import pytest
import torch

import icfrr_fast
from icfrr_fast import GalleryGraph, ICFRRIndex, ops, reference
from icfrr_fast.testing import cross_domain_features

from _assertions import assert_rankings_equal, assert_values_equal


@pytest.fixture
def data():
    return cross_domain_features(12, 160, dim=16, num_classes=8, seed=3)


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
@pytest.mark.parametrize("semantics", ["reference", "paper"])
def test_search_equals_dense_icfrr(data, metric, semantics):
    q, g = data.queries, data.gallery
    index = ICFRRIndex(g, k_g=20, metric=metric)
    D, I = index.search(q, 30, k_q=15, beta=0.5, iters=3, semantics=semantics)
    largest = metric != "l2"
    # the released code's path: dense float64 Q x G scores and G x G distances, dense graph, reference ICFRR
    scores = reference.knn_scores(q, g, metric)
    gg = reference.knn_scores(g, g, metric)
    res = icfrr_fast.icfrr(scores, gg, k_g=20, k_q=15, beta=0.5, iters=3, semantics=semantics, largest=largest,
                           k=30, backend="reference")
    assert D.dtype == torch.float32 and I.dtype == torch.int64 and D.shape == (12, 30)
    assert_rankings_equal(I, res.indices)
    torch.testing.assert_close(D, res.values.to(D.dtype), atol=1e-5, rtol=1e-5)
    if metric == "l2":
        assert bool((D[:, 1:] >= D[:, :-1]).all()), "l2: re-ranked distances ascend"


def test_search_with_depth_and_history(data):
    q, g = data.queries, data.gallery
    index = ICFRRIndex(g, k_g=20)
    D, I, H = index.search(q, 10, k_q=15, iters=4, depth=40, return_history=True)
    assert H.shape == (12, 5, 10) and H.dtype == torch.int64
    assert_rankings_equal(H[:, -1], I)
    assert_rankings_equal(H[:, 0], icfrr_fast.knn(q, g, 10, metric="l2").indices)
    scores = ops.knn_scores(q, g, "l2", "fp32")
    res = icfrr_fast.icfrr(scores, index.graph, k_g=20, k_q=15, iters=4, largest=False, k=10, depth=40)
    assert_rankings_equal(I, res.indices)
    assert_values_equal(D, res.values)


def test_search_iters_0_is_the_knn_ranking(data):
    index = ICFRRIndex(data.gallery, k_g=5, metric="cosine")
    D, I = index.search(data.queries, 7, iters=0)
    v, i = icfrr_fast.knn(data.queries, data.gallery, 7, metric="cosine")
    assert_rankings_equal(I, i)
    assert_values_equal(D, v)


def test_search_batches_do_not_change_results(data):
    index = ICFRRIndex(data.gallery, k_g=12)
    D, I = index.search(data.queries, 20, k_q=9)
    D2, I2 = index.search(data.queries, 20, k_q=9, batch_size=5)
    assert_rankings_equal(I2, I)
    assert_values_equal(D2, D)
    D3, I3 = index.search(data.queries.numpy(), 20, k_q=9, k_g=6)  # numpy queries; fewer voters' neighbours
    assert I3.shape == (12, 20)


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_add_equals_rebuild(data, metric):
    g = data.gallery
    index = ICFRRIndex(g[:100], k_g=25, metric=metric)
    index.add(g[100:101])
    index.add(g[101:], batch_size=13)
    rebuilt = ICFRRIndex(g, k_g=25, metric=metric)
    assert index.ntotal == 160
    assert_rankings_equal(index.graph.neighbors, rebuilt.graph.neighbors, "neighbours")
    assert_values_equal(index.graph.values, rebuilt.graph.values, "values")
    D, I = index.search(data.queries, 10, k_q=10)
    D2, I2 = rebuilt.search(data.queries, 10, k_q=10)
    assert_rankings_equal(I, I2)


def test_add_equals_rebuild_with_ties():
    # integer features: many exactly equal distances, the tie rule (smaller id) decides every list
    g = torch.randint(-2, 3, (90, 3), generator=torch.Generator().manual_seed(5)).float()
    index = ICFRRIndex(g[:50], k_g=12)
    index.add(g[50:])
    rebuilt = ICFRRIndex(g, k_g=12)
    assert_rankings_equal(index.graph.neighbors, rebuilt.graph.neighbors)
    dense = GalleryGraph.from_distances(reference.knn_scores(g, g, "l2sq"), 12)
    assert_rankings_equal(index.graph.neighbors, dense.neighbors)


def test_save_load_round_trip(data, tmp_path):
    index = ICFRRIndex(data.gallery, k_g=9, metric="cosine")
    index.save(tmp_path / "index.pth")
    back = ICFRRIndex.load(tmp_path / "index.pth")
    assert (back.metric, back.precision, back.ntotal, back.k_g) == ("cosine", "fp32", 160, 9)
    assert_rankings_equal(back.graph.neighbors, index.graph.neighbors)
    assert_values_equal(back.graph.values, index.graph.values)
    D, I = index.search(data.queries, 8, k_q=6)
    D2, I2 = back.search(data.queries, 8, k_q=6)
    assert_rankings_equal(I2, I)
    assert_values_equal(D2, D)
    torch.save({"format": "something else"}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not an ICFRRIndex file"):
        ICFRRIndex.load(tmp_path / "bad.pth")


def test_l2_graph_values_are_squared_distances(data):
    index = ICFRRIndex(data.gallery, k_g=5)
    v = icfrr_fast.knn(data.gallery, data.gallery, 5, metric="l2sq", exclude_self=True).values
    assert_values_equal(index.graph.values, v)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda g, q: ICFRRIndex(g, k_g=160), ValueError, r"k_g must be in \[1, G - 1\]"),
        (lambda g, q: ICFRRIndex(g, k_g=0), ValueError, r"k_g must be in \[1, G - 1\]"),
        (lambda g, q: ICFRRIndex(g, k_g=2.5), TypeError, "k_g must be an int"),
        (lambda g, q: ICFRRIndex(g[:1], k_g=1), ValueError, "at least 2 items"),
        (lambda g, q: ICFRRIndex(g, metric="l1"), ValueError, "metric must be one of"),
        (lambda g, q: ICFRRIndex(g, k_g=5, precision="int8"), ValueError, "precision must be one of"),
        (lambda g, q: ICFRRIndex(g.long(), k_g=5), TypeError, "floating tensor"),
        (lambda g, q: ICFRRIndex(g, k_g=5).search(q[:, :3], 5), ValueError, "feature dimension D = 16"),
        (lambda g, q: ICFRRIndex(g, k_g=5).search(q.index_fill(0, torch.tensor([0]), float("nan")), 5), ValueError,
         "queries must be finite"),
        (lambda g, q: ICFRRIndex(g, k_g=5).search(q, 0), ValueError, r"k must be in \[1, 160\]"),
        (lambda g, q: ICFRRIndex(g, k_g=5).search(q, 11, depth=10), ValueError, r"k must be in \[1, 10\]"),
        (lambda g, q: ICFRRIndex(g, k_g=5).search(q, 5, depth=161), ValueError, r"depth must be in \[1, 160\]"),
        (lambda g, q: ICFRRIndex(g, k_g=5).search(q, 5, k_q=0), ValueError, "k_q must be in"),
        (lambda g, q: ICFRRIndex(g, k_g=5).search(q, 5, semantics="x"), ValueError, "semantics must be one of"),
        (lambda g, q: ICFRRIndex(g, k_g=5).search(q, 5, k_g=6), ValueError, r"k_g must be in \[1, 5\]"),
        (lambda g, q: ICFRRIndex(g, k_g=5).add(q[:, :4]), ValueError, "feature dimension D = 16"),
    ],
)
def test_validation(data, call, exc, match):
    with pytest.raises(exc, match=match):
        call(data.gallery, data.queries)
