"""A faiss index as the first stage: the candidate rule, GalleryGraph.from_faiss, FaissICFRR.search.

Index stand-ins (``_FakeIndex``) return exactly the results a test needs (repeated ids, ``-1`` padding anywhere, the
item itself at any position, the exact k-NN through ``icfrr_fast.knn``); real faiss indexes (Flat, IVF, HNSW, PQ)
check that the same code runs on what faiss returns.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import icfrr_fast
from icfrr_fast import FaissICFRR, GalleryGraph, ICFRRIndex, reference
from icfrr_fast.faiss_stage import dedupe_candidates
from icfrr_fast.testing import cross_domain_features

from _assertions import assert_knn_equal_with_ties, assert_rankings_equal, assert_values_equal

faiss = pytest.importorskip("faiss")


class _FakeIndex:
    """The part of a faiss index that icfrr_fast uses. ``answer(xq, n)`` -> (D, I) numpy arrays."""

    def __init__(self, x, answer, metric_type=1):
        self.x, self.answer, self.metric_type = x, answer, metric_type
        self.ntotal, self.d = x.shape

    def search(self, xq, n):
        assert isinstance(xq, np.ndarray) and xq.dtype == np.float32  # faiss' numpy interface
        return self.answer(xq, n)

    def reconstruct_n(self, i0, n):
        return self.x[i0:i0 + n].numpy()


def _exact_index(x, metric="l2sq"):
    """A stand-in whose search is the fused exact k-NN (squared L2 like IndexFlatL2, or inner product)."""

    def answer(xq, n):
        v, i = icfrr_fast.knn(torch.from_numpy(xq), x, n, metric=metric)
        return v.numpy(), i.numpy()

    return _FakeIndex(x, answer, metric_type=1 if metric == "l2sq" else 0)


def _data(Q=30, G=400, D=16, seed=0):
    return cross_domain_features(Q, G, dim=D, num_classes=8, seed=seed)


def _assert_valid_graph(graph, G, k):
    n = graph.neighbors.long()
    assert n.shape == (G, k) and bool((n >= 0).all()) and bool((n < G).all())
    assert not bool((n == torch.arange(G)[:, None]).any())
    assert bool((torch.sort(n, dim=1).values.diff(dim=1) != 0).all()), "a row holds an id twice"


# ---- the candidate rule ---------------------------------------------------------------------------------------
def _dedupe_oracle(ids, values):
    out_i, out_v, counts = [], [], []
    for row_i, row_v in zip(ids.tolist(), values.tolist()):
        seen, ki, kv = set(), [], []
        for i, v in zip(row_i, row_v):
            if i >= 0 and i not in seen:
                seen.add(i)
                ki.append(i)
                kv.append(v)
        counts.append(len(ki))
        out_i.append(ki + [-1] * (len(row_i) - len(ki)))
        out_v.append(kv + [0.0] * (len(row_i) - len(kv)))
    return torch.tensor(out_i), torch.tensor(out_v, dtype=values.dtype), torch.tensor(counts)


@settings(max_examples=60, deadline=None)
@given(B=st.integers(1, 4), n=st.integers(1, 12), top=st.integers(0, 6), seed=st.integers(0, 2**16))
def test_dedupe_candidates_matches_oracle(B, n, top, seed):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(-1, top + 1, (B, n), generator=gen)  # few distinct ids: repeats and -1 anywhere
    values = torch.randn(B, n, generator=gen)
    got = dedupe_candidates(ids, values)
    want = _dedupe_oracle(ids, values)
    for g, w, what in zip(got, want, ("ids", "values", "counts")):
        assert_values_equal(g, w, what)


def test_dedupe_candidates_keeps_first_occurrence_and_order():
    ids = torch.tensor([[9, -1, 3, 9, -1, 5, 3], [-1, -1, -1, -1, -1, -1, -1], [6, 0, 2, 1, 3, 4, 5]])
    vals = torch.arange(21, dtype=torch.float32).view(3, 7)
    i, v, n = dedupe_candidates(ids, vals)
    assert i.tolist() == [[9, 3, 5, -1, -1, -1, -1], [-1] * 7, [6, 0, 2, 1, 3, 4, 5]]
    assert v.tolist() == [[0.0, 2.0, 5.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 7, list(range(14, 21))]
    assert n.tolist() == [3, 0, 7]
    assert ids[0].tolist() == [9, -1, 3, 9, -1, 5, 3] and vals[0, 1] == 1  # the inputs are left as they were
    i, v, n = dedupe_candidates(ids[2:], vals[2:])  # nothing to drop
    assert i.tolist() == [[6, 0, 2, 1, 3, 4, 5]] and n.tolist() == [7]


# ---- GalleryGraph.from_faiss ----------------------------------------------------------------------------------
def _table_index(x, table, sq_dist):
    """Stand-in answering row i of x with table[i] (ids) and sq_dist[i] (squared distances), whatever the batch."""

    def answer(xq, n):
        rows = torch.cdist(torch.from_numpy(xq), x).argmin(dim=1)  # the rows of x being searched
        assert n == table.shape[1]
        return sq_dist[rows].numpy(), table[rows].numpy()

    return _FakeIndex(x, answer)


@pytest.mark.parametrize("batch_size", [None, 1, 3])
def test_from_faiss_rule_on_duplicates_padding_and_self_anywhere(batch_size):
    G, k = 10, 3
    x = _data(G=G, D=4).gallery
    table = torch.full((G, k + 1), -1, dtype=torch.int64)
    table[0] = torch.tensor([3, 0, 3, 5])     # self second, 3 repeated -> [3, 5] + one exact fill
    table[1] = torch.tensor([2, 4, 1, 6])     # self third -> [2, 4, 6]
    table[2] = torch.tensor([5, -1, 6, -1])   # padding in the middle and at the end -> [5, 6] + fill
    table[3] = torch.tensor([4, 5, 6, 7])     # self not returned -> first k: [4, 5, 6]
    table[4] = torch.tensor([7, 7, 7, 7])     # one id four times -> [7] + two fills
    table[5] = torch.tensor([8, 9, 0, 1])     # a clean row, self absent
    # rows 6..9: all padding -> filled exactly
    sq = torch.arange(G * (k + 1), dtype=torch.float32).view(G, k + 1) / 7  # faiss' squared distances, any values
    graph = GalleryGraph.from_faiss(_table_index(x, table, sq), k, batch_size=batch_size)
    _assert_valid_graph(graph, G, k)
    assert graph.largest is False

    ev, ei = reference.knn_topk(x, x, G - 1, "l2", exclude_self=True)  # exact order of the others, for fills
    expect_kept = {0: [(3, 0)], 1: [(2, 0), (4, 1), (6, 3)], 2: [(5, 0), (6, 2)], 3: [(4, 0), (5, 1), (6, 2)],
                   4: [(7, 0)], 5: [(8, 0), (9, 1), (0, 2)]}
    expect_kept[0].append((5, 3))
    for i in range(G):
        kept = expect_kept.get(i, [])
        ids = [j for j, _ in kept]
        vals = [float(sq[i, c].sqrt()) for _, c in kept]  # faiss' values: sqrt of its squared distances
        for j, v in zip(ei[i].tolist(), ev[i].tolist()):
            if len(ids) == k:
                break
            if j not in ids:
                ids.append(j)
                vals.append(v)
        assert graph.neighbors[i].tolist() == ids, f"row {i}"
        torch.testing.assert_close(graph.values[i], torch.tensor(vals, dtype=torch.float32), atol=1e-5, rtol=1e-5)

    with pytest.raises(ValueError, match=r"fewer than k = 3 distinct neighbours .* for 7 items"):
        GalleryGraph.from_faiss(_table_index(x, table, sq), k, fill_exact=False)


def test_from_faiss_inner_product_values_are_similarities():
    x = _data(G=60, D=8).gallery
    graph = GalleryGraph.from_faiss(_exact_index(x, "ip"), 5)
    ref = GalleryGraph.from_features(x, 5, metric="ip")
    assert graph.largest is True
    assert_rankings_equal(graph.neighbors, ref.neighbors)
    assert_values_equal(graph.values, ref.values)


def test_from_faiss_real_indexes_give_valid_graphs():
    x = _data(G=500, D=16).gallery
    xs = x.numpy()
    hnsw = faiss.IndexHNSWFlat(16, 8)
    hnsw.hnsw.efSearch = 4  # below k + 1: faiss searches with max(efSearch, k)
    hnsw.add(xs)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(16), 16, 25)
    ivf.train(xs)
    ivf.add(xs)
    ivf.nprobe = 1  # short result lists (-1 padding) for k + 1 = 41
    ivfpq = faiss.IndexIVFPQ(faiss.IndexFlatL2(16), 16, 10, 4, 4)
    ivfpq.train(xs)
    ivfpq.add(xs)
    ivfpq.make_direct_map()  # x=None: reconstruct_n needs it
    ivfpq.nprobe = 3
    pq = faiss.IndexPQ(16, 4, 4, faiss.METRIC_INNER_PRODUCT)
    pq.train(xs)
    pq.add(xs)
    for index, x_arg in ((hnsw, None), (ivf, x), (ivfpq, None), (pq, xs)):
        graph = GalleryGraph.from_faiss(index, 40, x=x_arg)
        _assert_valid_graph(graph, 500, 40)
        assert graph.largest == (index is pq)


def test_from_faiss_hnsw_recall_against_exact():
    x = _data(G=500, D=16).gallery
    hnsw = faiss.IndexHNSWFlat(16, 16)
    hnsw.hnsw.efSearch = 64
    hnsw.add(x.numpy())
    graph = GalleryGraph.from_faiss(hnsw, 20)
    exact = GalleryGraph.from_features(x, 20, metric="l2")
    hits = sum(len(set(a) & set(b)) for a, b in zip(graph.neighbors.tolist(), exact.neighbors.tolist()))
    assert hits / (500 * 20) > 0.9  # an approximate graph, but close to the exact one


def test_from_faiss_validation():
    x = _data(G=40, D=4).gallery
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(4), 4, 2)
    ivf.train(x.numpy())
    ivf.add(x.numpy())
    no_reconstruct = _FakeIndex(x, None)
    no_reconstruct.reconstruct_n = lambda i0, n: (_ for _ in ()).throw(RuntimeError("direct map not initialized"))
    with pytest.raises(ValueError, match="reconstruct_n failed .*direct map not initialized.*make_direct_map"):
        GalleryGraph.from_faiss(no_reconstruct, 3)
    with pytest.raises(TypeError, match="index must be a faiss index .* lacks ntotal"):
        GalleryGraph.from_faiss(object(), 3)
    with pytest.raises(ValueError, match="index must use METRIC_L2 or METRIC_INNER_PRODUCT"):
        GalleryGraph.from_faiss(_FakeIndex(x, None, metric_type=2), 3)
    with pytest.raises(ValueError, match="index must hold at least 2 vectors"):
        GalleryGraph.from_faiss(_FakeIndex(x[:1], None), 1)
    with pytest.raises(ValueError, match=r"k must be in \[1, G - 1\] = \[1, 39\]"):
        GalleryGraph.from_faiss(ivf, 40, x=x)
    with pytest.raises(ValueError, match="x must be the"):
        GalleryGraph.from_faiss(ivf, 3, x=x[:10])
    with pytest.raises(ValueError, match="x must have the index's dimension D = 4"):
        GalleryGraph.from_faiss(ivf, 3, x=torch.randn(40, 5))
    with pytest.raises(ValueError, match="x must be finite"):
        GalleryGraph.from_faiss(ivf, 3, x=x.index_fill(0, torch.tensor([3]), float("nan")))
    with pytest.raises(ValueError, match="batch_size must be in"):
        GalleryGraph.from_faiss(ivf, 3, x=x, batch_size=0)
    with pytest.raises(TypeError, match="fill_exact must be a bool"):
        GalleryGraph.from_faiss(ivf, 3, x=x, fill_exact=1)
    far = _FakeIndex(x, lambda xq, n: (np.zeros((len(xq), n), np.float32), np.full((len(xq), n), 40)))
    with pytest.raises(ValueError, match=r"index returned ids in \[40, 40\].*IndexIDMap"):
        GalleryGraph.from_faiss(far, 3)
    bad_shape = _FakeIndex(x, lambda xq, n: (np.zeros((len(xq), 1), np.float32), np.zeros((len(xq), 1), np.int64)))
    with pytest.raises(ValueError, match="index.search returned shapes"):
        GalleryGraph.from_faiss(bad_shape, 3)


# ---- FaissICFRR.search ----------------------------------------------------------------------------------------
def _oracle(index_answer, queries, neighbors, G, L, k, largest, **kw):
    """Per query: the rule applied by hand, then the dense float64 reference with depth = the query's count."""
    d, ids = index_answer(queries.numpy(), L)
    d, ids = torch.from_numpy(d), torch.from_numpy(ids)
    iters = kw["iters"]
    V = torch.full((len(queries), k), float("-inf") if largest else float("inf"))
    I = torch.full((len(queries), k), -1, dtype=torch.int64)
    H = torch.full((len(queries), iters + 1, k), -1, dtype=torch.int64)
    for q in range(len(queries)):
        seen = {}
        for j, v in zip(ids[q].tolist(), d[q].tolist()):
            if j >= 0 and j not in seen:
                seen[j] = v if largest else max(v, 0.0) ** 0.5
        n = len(seen)
        if n == 0:
            continue
        dense = torch.full((1, G), -1e300 if largest else 1e300, dtype=torch.float64)
        for j, v in seen.items():
            dense[0, j] = float(torch.tensor(v, dtype=torch.float32))  # the float32 score the kernel sees
        kk = min(k, n)
        v, i, h = reference.icfrr_rerank(dense, neighbors, largest=largest, depth=n, k=kk, return_history=True, **kw)
        V[q, :kk], I[q, :kk], H[q, :, :kk] = v[0], i[0], h[0]
    return V, I, H


@pytest.mark.parametrize("semantics", ["reference", "paper"])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_exact_first_stage_equals_icfrr_index_depth_search(semantics, metric):
    d = _data(Q=25, G=300)
    index = ICFRRIndex(d.gallery, k_g=20, metric=metric)
    fake = _exact_index(d.gallery, "l2sq" if metric == "l2" else "ip")
    searcher = FaissICFRR(fake, index.graph)
    for early_stop in (False, True):
        kw = dict(k_q=15, beta=0.5, iters=4, semantics=semantics, return_history=True, early_stop=early_stop)
        D, I, H = searcher.search(d.queries, 30, depth=60, batch_size=7, **kw)
        D2, I2, H2 = index.search(d.queries, 30, depth=60, **kw)
        assert_rankings_equal(I, I2)
        assert_rankings_equal(H, H2, "history")
        assert_values_equal(D, D2)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_index_flat_first_stage_equals_icfrr_index_up_to_rounding(metric):
    d = _data(Q=20, G=300)
    flat = faiss.IndexFlatL2(16) if metric == "l2" else faiss.IndexFlatIP(16)
    flat.add(d.gallery.numpy())
    index = ICFRRIndex(d.gallery, k_g=20, metric=metric)
    D, I = FaissICFRR(flat, index.graph).search(d.queries, 25, depth=50, k_q=15, iters=3)
    D2, I2 = index.search(d.queries, 25, depth=50, k_q=15, iters=3)
    # faiss' BLAS distances differ from the fused kernel's in the last bits: equal up to near-ties
    assert_knn_equal_with_ties(D, I, D2, I2, atol=1e-5, rtol=1e-5)


def test_search_applies_the_candidate_rule():
    d = _data(Q=12, G=200)
    graph = GalleryGraph.from_features(d.gallery, 12, metric="l2")
    exact = _exact_index(d.gallery)

    def messy(xq, n):  # the exact results with repeats, -1 in the middle and short lists
        dist, ids = exact.search(xq, n)
        dist, ids = dist.copy(), ids.copy()
        ids[:, 3] = ids[:, 1]  # a repeat, worse than its first occurrence
        ids[1::2, 5] = -1  # padding in the middle
        ids[2, 8:] = -1  # a short list: 8 real candidates
        ids[4, :] = -1  # no candidate at all
        ids[5, 1:] = ids[5, 0]  # one id, n times
        return dist, ids

    fake = _FakeIndex(d.gallery, messy)
    kw = dict(k_q=6, beta=0.5, iters=3, semantics="reference", early_stop=False)
    D, I, H = FaissICFRR(fake, graph).search(d.queries, 10, depth=20, return_history=True, **kw)
    V, J, HH = _oracle(messy, d.queries, graph.neighbors, 200, 20, 10, False, **kw)
    assert_rankings_equal(I, J)
    assert_rankings_equal(H, HH, "history")
    torch.testing.assert_close(D, V, atol=0, rtol=0, equal_nan=False)
    assert I[2, 8:].tolist() == [-1, -1] and bool(torch.isinf(D[2, 8:]).all())
    assert I[4].tolist() == [-1] * 10 and I[5, 1:].tolist() == [-1] * 9
    assert all(len(set(r) - {-1}) == sum(v >= 0 for v in r) for r in I.tolist())


def test_real_approximate_indexes_return_valid_results():
    d = _data(Q=40, G=600)
    g = d.gallery.numpy()
    hnsw = faiss.IndexHNSWFlat(16, 8)
    hnsw.add(g)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(16), 16, 30, faiss.METRIC_INNER_PRODUCT)
    ivf.train(g)
    ivf.add(g)
    ivf.nprobe = 1  # some queries get fewer than depth candidates
    for index in (hnsw, ivf):
        searcher = FaissICFRR(index, k_g=15, x=g)
        D, I = searcher.search(d.queries, 40, depth=80, k_q=20, iters=3)
        assert D.shape == I.shape == (40, 40) and D.dtype == torch.float32 and I.dtype == torch.int64
        real = I >= 0
        assert bool((I < 600).all()) and bool(real[:, 0].all())
        assert bool((real[:, :-1] | ~real[:, 1:]).all()), "padding only at the end"
        for row in I.tolist():
            row = [i for i in row if i >= 0]
            assert len(set(row)) == len(row)
        Dr = torch.where(real, D, torch.zeros_like(D))
        if searcher.largest:
            assert bool((Dr[:, :-1] >= Dr[:, 1:]).all() | ~real[:, 1:].all())
        else:
            assert bool((D[:, 1:] >= D[:, :-1]).all())
        assert bool(torch.isinf(D[~real]).all())


def test_search_batches_and_empty_query_set():
    d = _data(Q=17, G=150)
    flat = faiss.IndexFlatL2(16)
    flat.add(d.gallery.numpy())
    s = FaissICFRR(flat, k_g=10)
    assert s.graph.k == 10 and s.ntotal == 150 and s.d == 16 and not s.largest and "G=150" in repr(s)
    a = s.search(d.queries, 9, depth=30, k_q=8)
    b = s.search(d.queries.numpy().astype(np.float64), 9, depth=30, k_q=8, batch_size=4)
    assert_rankings_equal(a[1], b[1])
    assert_values_equal(a[0], b[0])
    D, I = s.search(torch.zeros(0, 16), 5, depth=10)
    assert D.shape == I.shape == (0, 5)
    D, I = s.search(d.queries, 150, depth=10**6, k_q=8)  # depth clipped to G
    assert sorted(I[0].tolist()) == list(range(150))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(k=0), ValueError, r"k must be in \[1, 20\]"),
        (dict(k=21), ValueError, r"k must be in \[1, 20\]"),
        (dict(depth=0), ValueError, "depth must be in"),
        (dict(depth=2.5), TypeError, "depth must be an int"),
        (dict(k_q=0), ValueError, "k_q must be in"),
        (dict(iters=-1), ValueError, "iters must be in"),
        (dict(beta=float("nan")), ValueError, "beta must be finite"),
        (dict(semantics="x"), ValueError, "semantics must be one of"),
        (dict(k_g=11), ValueError, r"k_g must be in \[1, 10\]"),
        (dict(batch_size=0), ValueError, "batch_size must be in"),
        (dict(queries=torch.randn(3, 5)), ValueError, "queries must have the index's dimension D = 16"),
        (dict(queries=torch.full((3, 16), float("inf"))), ValueError, "queries must be finite"),
        (dict(queries=torch.zeros(3, 16, dtype=torch.int32)), TypeError, "queries must be a floating tensor"),
        (dict(queries="abc"), TypeError, "queries must be a"),
    ],
)
def test_search_validation(kwargs, exc, match):
    d = _data(Q=3, G=100)
    flat = faiss.IndexFlatL2(16)
    flat.add(d.gallery.numpy())
    s = FaissICFRR(flat, k_g=10)
    args = dict(queries=d.queries, k=5, depth=20)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        s.search(args.pop("queries"), args.pop("k"), **args)


def test_constructor_validation():
    d = _data(Q=3, G=100)
    flat = faiss.IndexFlatL2(16)
    flat.add(d.gallery.numpy())
    with pytest.raises(ValueError, match="graph has G = 50 items but the index holds ntotal = 100"):
        FaissICFRR(flat, GalleryGraph.from_features(d.gallery[:50], 5))
    with pytest.raises(TypeError, match="graph must be a GalleryGraph"):
        FaissICFRR(flat, torch.zeros(100, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match="k_g must be in"):
        FaissICFRR(flat, k_g=0)
    assert FaissICFRR(flat, k_g=500).graph.k == 99  # clipped to G - 1


def test_docs_scale_example_runs():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "scale.md").read_text()
    (code,) = [p.split("```", 1)[0] for p in text.split("```python\n")[1:]]
    d = _data(Q=5, G=300)
    scope = {"D": 16, "gallery": d.gallery.numpy(), "queries": d.queries.numpy()}
    exec(compile(code, "docs/scale.md", "exec"), scope)
    assert scope["I"].shape == (5, 100) and bool((scope["I"] >= 0).all())
    assert scope["searcher"].graph.k == 64
