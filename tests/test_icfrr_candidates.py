"""icfrr_candidates: ICFRR over (Q, L) candidate lists against the reference (random lists in any order, padding,
candidates that are not the top-L, -1 graph entries), bit-identity with icfrr_rerank(dense, depth=L) on the exact
top-L, thread-count independence, properties, registration (opcheck, torch.compile, fakes) and bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import icfrr_fast
from icfrr_fast import GalleryGraph, _native, ops, reference
from icfrr_fast.testing import cross_domain_features
from _assertions import assert_rankings_equal, assert_values_equal


def _graph(N: int, K: int, gen: torch.Generator, holes: float = 0.0) -> torch.Tensor:
    """(N, K) int32 neighbour lists of random points (self excluded); a fraction ``holes`` of entries set to -1."""
    g = torch.randn(N, 3, generator=gen, dtype=torch.float64)
    nb = reference.dense_topk(torch.cdist(g, g), K, largest=False, exclude_self=True)[1].to(torch.int32)
    if holes:
        nb[torch.rand(nb.shape, generator=gen) < holes] = -1
    return nb


def _candidates(Q: int, L: int, N: int, gen: torch.Generator, *, dtype=torch.float32, id_dtype=torch.int64,
                pad: bool = True, tied: bool = False):
    """(Q, L) random candidate lists: distinct random ids per row (not any top-L), random scores, rows of random
    length L_q in [0, L] (padding -1, its scores NaN) when ``pad``."""
    ids = torch.stack([torch.randperm(N, generator=gen)[:L] for _ in range(Q)])
    if tied:
        scores = torch.randint(0, 4, (Q, L), generator=gen).to(dtype)
    else:
        scores = torch.randn(Q, L, generator=gen, dtype=torch.float64).to(dtype)
    if pad:
        lengths = torch.randint(0, L + 1, (Q,), generator=gen)
        lengths[0] = L  # one full row
        cut = torch.arange(L)[None, :] >= lengths[:, None]
        ids[cut] = -1
        scores[cut] = float("nan")
    return scores, ids.to(id_dtype)


def _both(scores, ids, nb, G, *, k_q, beta, iters, semantics="reference", largest=True, k=None, history=True,
          early_stop=False):
    k = k or ids.shape[1]
    got = ops.icfrr_candidates(scores, ids, nb, G, k_q, beta, iters, semantics, largest, k, history, early_stop)
    want = reference.icfrr_candidates(scores, ids, nb, gallery_size=G, k_q=k_q, beta=beta, iters=iters,
                                      semantics=semantics, largest=largest, k=k, return_history=history,
                                      early_stop=early_stop)
    return got, want


def _assert_same(got, want):
    assert_rankings_equal(got[1], want[1], "indices")
    assert_values_equal(got[0], want[0], "values")
    if want[2] is not None:
        assert_rankings_equal(got[2], want[2], "history")


# ------------------------------------------------------------------------------------------------------------------
# parity with the reference
# ------------------------------------------------------------------------------------------------------------------
CASES = [
    pytest.param(dict(Q=6, L=30, N=80, K=8, k_q=10, iters=4), id="padded-int64"),
    pytest.param(dict(Q=6, L=30, N=80, K=8, k_q=10, iters=4, id_dtype=torch.int32, semantics="paper"),
                 id="padded-int32-paper"),
    pytest.param(dict(Q=5, L=25, N=60, K=12, k_q=6, iters=6, early_stop=True, k=9), id="early-stop-k<L"),
    pytest.param(dict(Q=5, L=25, N=60, K=12, k_q=6, iters=6, early_stop=True, semantics="paper", largest=False),
                 id="early-stop-paper-distances"),
    pytest.param(dict(Q=4, L=40, N=40, K=39, k_q=50, iters=3, dtype=torch.float64, pad=False), id="float64-all-N"),
    pytest.param(dict(Q=4, L=20, N=50, K=6, k_q=4, iters=3, G=1000, holes=0.3), id="holes-G>N"),
    pytest.param(dict(Q=4, L=20, N=50, K=6, k_q=4, iters=5, tied=True, semantics="paper"), id="tied-paper"),
    pytest.param(dict(Q=3, L=24, N=30, K=5, k_q=8, iters=3, dtype=torch.float16), id="float16"),
    pytest.param(dict(Q=3, L=24, N=30, K=5, k_q=8, iters=3, dtype=torch.bfloat16, largest=False), id="bfloat16"),
    pytest.param(dict(Q=3, L=200, N=600, K=40, k_q=60, iters=4), id="sparse-and-dense-vote-paths"),
    pytest.param(dict(Q=2, L=1, N=5, K=2, k_q=3, iters=2), id="L=1"),
    pytest.param(dict(Q=3, L=12, N=20, K=4, k_q=3, iters=0), id="iters=0"),
]


@pytest.mark.parametrize("case", CASES)
def test_matches_reference(case):
    c = dict(case)
    gen = torch.Generator().manual_seed(c.pop("N") * 7 + c["L"])
    Q, L, K = c.pop("Q"), c.pop("L"), c.pop("K")
    N = case["N"]
    G = c.pop("G", N)
    nb = _graph(N, K, gen, holes=c.pop("holes", 0.0))
    scores, ids = _candidates(Q, L, N, gen, dtype=c.pop("dtype", torch.float32),
                              id_dtype=c.pop("id_dtype", torch.int64), pad=c.pop("pad", True),
                              tied=c.pop("tied", False))
    got, want = _both(scores, ids, nb, G, beta=0.5, **c)
    _assert_same(got, want)
    assert got[0].dtype == scores.dtype and got[1].dtype == torch.int64


def test_padding_outputs_and_empty_rows():
    gen = torch.Generator().manual_seed(3)
    nb = _graph(30, 5, gen)
    scores, ids = _candidates(3, 10, 30, gen, pad=False)
    ids[1, 4:] = -1
    ids[2, :] = -1  # a row without candidates
    scores[2] = float("inf")  # padding's scores are ignored
    for largest in (True, False):
        v, i, h = ops.icfrr_candidates(scores, ids, nb, 30, 3, 0.5, 2, "reference", largest, 8, True, False)
        assert torch.equal(i[1, 4:], torch.full((4,), -1)) and torch.equal(i[2], torch.full((8,), -1))
        pad = float("-inf") if largest else float("inf")
        assert bool((v[1, 4:] == pad).all()) and bool((v[2] == pad).all())
        assert bool((h[1, :, 4:] == -1).all()) and bool((h[2] == -1).all())
        assert set(i[1, :4].tolist()) == set(ids[1, :4].tolist())
        _assert_same((v, i, h), reference.icfrr_candidates(scores, ids, nb, gallery_size=30, k_q=3, beta=0.5,
                                                           iters=2, largest=largest, k=8, return_history=True))


@pytest.mark.parametrize("L", [20, 100], ids=["short-tie-run", "long-tie-run"])
def test_equal_scores_order_by_id(L):
    """All scores equal in shuffled rows: the initial order is by id (runs of more than 32 equal keys take the
    radix path of the tie ordering), and ICFRR from there matches the reference."""
    gen = torch.Generator().manual_seed(L)
    N = 3 * L
    nb = _graph(N, 8, gen)
    ids = torch.stack([torch.randperm(N, generator=gen)[:L] for _ in range(3)])
    scores = torch.full((3, L), 0.25)
    scores[1, ::3] = -0.0  # -0.0 ties with +0.0
    scores[1, 1::3] = 0.0
    v, i, _ = ops.icfrr_candidates(scores, ids, nb, N, 5, 0.5, 0, "reference", True, L, False, False)
    assert torch.equal(i[0], torch.sort(ids[0]).values) and torch.equal(i[2], torch.sort(ids[2]).values)
    _assert_same(*_both(scores, ids, nb, N, k_q=5, beta=0.5, iters=3))


def test_no_queries():
    nb = _graph(10, 3, torch.Generator().manual_seed(0))
    v, i, h = ops.icfrr_candidates(torch.empty(0, 4), torch.empty(0, 4, dtype=torch.int64), nb, 10, 2, 0.5, 2,
                                   "reference", True, 3, True, False)
    assert v.shape == (0, 3) and i.shape == (0, 3) and h.shape == (0, 3, 3)


def test_non_contiguous_inputs():
    gen = torch.Generator().manual_seed(5)
    nb = _graph(50, 6, gen)
    scores, ids = _candidates(5, 16, 50, gen)
    s_t, i_t = scores.T.contiguous().T, ids.T.contiguous().T  # column-major
    s_w = torch.full((5, 32), float("nan"))[:, ::2]
    s_w.copy_(scores)
    wide = torch.zeros(50, 12, dtype=torch.int32)
    wide[:, :6] = nb
    for s, i, g in ((s_t, i_t, nb), (s_w, ids, wide[:, :6]), (scores, ids[:, :], nb.T.contiguous().T)):
        _assert_same(ops.icfrr_candidates(s, i, g, 50, 5, 0.5, 3, "paper", True, 16, True, False),
                     ops.icfrr_candidates(scores, ids, nb, 50, 5, 0.5, 3, "paper", True, 16, True, False))


# ------------------------------------------------------------------------------------------------------------------
# the exact top-L as candidates: bit-identical to icfrr_rerank(dense, depth=L)
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("semantics", ["reference", "paper"])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("tied", [False, True])
def test_exact_top_l_equals_dense_depth(semantics, shuffle, tied):
    gen = torch.Generator().manual_seed(11)
    G, L, Q = 120, 35, 6
    nb = _graph(G, 10, gen)
    dense = torch.randint(0, 5, (Q, G), generator=gen).float() if tied else torch.randn(Q, G, generator=gen)
    for largest, early_stop in ((True, False), (False, True)):
        want = ops.icfrr_rerank(dense, nb, 8, 0.5, 5, semantics, largest, L, 20, True, early_stop)
        cv, ci = ops.dense_topk(dense, L, largest, False, 0)
        if shuffle:
            perm = torch.stack([torch.randperm(L, generator=gen) for _ in range(Q)])
            cv, ci = cv.gather(1, perm), ci.gather(1, perm)
        got = ops.icfrr_candidates(cv, ci, nb, G, 8, 0.5, 5, semantics, largest, 20, True, early_stop)
        _assert_same(got, want)


@pytest.mark.parametrize("semantics", ["reference", "paper"])
def test_dense_core_top_l_route_agrees(semantics):
    """The core's dense route (a sort of all G scores, top-L kept; what the CUDA build runs) and the op's CPU route
    (dense_topk, then the candidate kernel) give the same bits."""
    gen = torch.Generator().manual_seed(4)
    G, L, Q, k = 90, 25, 5, 12
    nb = _graph(G, 7, gen)
    dense = torch.randint(0, 6, (Q, G), generator=gen).float()  # ties
    want = ops.icfrr_rerank(dense, nb, 6, 0.5, 4, semantics, False, L, k, True, True)
    got = tuple(torch.empty_like(t) for t in want)
    _native.load().icfrr_rerank(
        scores=dense.data_ptr(), scores_is_double=False, score_stride=G, largest=False, neighbors=nb.data_ptr(),
        nbr_stride=nb.stride(0), Q=Q, G=G, K_g=7, k_q=6, beta=0.5, iters=4, paper=semantics == "paper", depth=L,
        k=k, early_stop=True, out_values=got[0].data_ptr(), out_indices=got[1].data_ptr(),
        out_history=got[2].data_ptr(), num_threads=2)
    _assert_same(got, want)


def test_results_do_not_depend_on_thread_count():
    d = cross_domain_features(40, 500, 32, 10, seed=5)
    qg = torch.cdist(d.queries, d.gallery)
    nb = GalleryGraph.from_distances(torch.cdist(d.gallery, d.gallery), 40).neighbors
    gen = torch.Generator().manual_seed(2)
    ids = torch.stack([torch.randperm(500, generator=gen)[:150] for _ in range(40)])
    scores = qg.gather(1, ids)
    outs = []
    for n in (1, 2, 3):
        icfrr_fast.set_num_threads(n)
        outs.append(ops.icfrr_candidates(scores, ids, nb, 500, 30, 0.5, 5, "paper", False, 150, True, False))
    for o in outs[1:]:
        _assert_same(o, outs[0])


# ------------------------------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(N=st.integers(2, 30), Q=st.integers(1, 3), data=st.data())
def test_properties(N, Q, data):
    L = data.draw(st.integers(1, N))
    K = data.draw(st.integers(1, N - 1))
    G = N + data.draw(st.integers(0, 5))
    k_q = data.draw(st.integers(1, L + 2))
    iters = data.draw(st.integers(0, 4))
    k = data.draw(st.integers(1, L))
    semantics = data.draw(st.sampled_from(["reference", "paper"]))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    nb = _graph(N, K, gen, holes=data.draw(st.sampled_from([0.0, 0.3])))
    scores, ids = _candidates(Q, L, N, gen, tied=data.draw(st.booleans()))
    got, want = _both(scores, ids, nb, G, k_q=k_q, beta=0.5, iters=iters, semantics=semantics, k=k)
    _assert_same(got, want)
    v, i, h = got
    for q in range(Q):  # each row's output: its real candidates (as a set when k covers them), best first
        real = ids[q][ids[q] >= 0]
        n = min(k, real.numel())
        assert set(i[q, :n].tolist()) <= set(real.tolist()) and bool((i[q, n:] == -1).all())
        assert bool((v[q, :n][:-1] >= v[q, :n][1:]).all())
    # the row order of the input does not matter
    perm = torch.randperm(L, generator=gen)
    real_first = torch.sort((ids[:, perm] < 0).to(torch.int8), dim=1, stable=True).indices  # padding stays a suffix
    ps, pi = scores[:, perm].gather(1, real_first), ids[:, perm].gather(1, real_first)
    _assert_same(ops.icfrr_candidates(ps, pi, nb, G, k_q, 0.5, iters, semantics, True, k, True, False), got)


# ------------------------------------------------------------------------------------------------------------------
# public API: icfrr(..., ids=...) and ICFRRIndex.search(depth=L)
# ------------------------------------------------------------------------------------------------------------------
def test_public_api_with_ids():
    d = cross_domain_features(5, 200, 16, 5, seed=4)
    qg, gg = torch.cdist(d.queries, d.gallery), torch.cdist(d.gallery, d.gallery)
    graph = GalleryGraph.from_distances(gg, 32)
    dense = icfrr_fast.icfrr(qg, graph, k_g=20, k_q=15, largest=False, depth=40, k=10, return_history=True)
    cv, ci = ops.dense_topk(qg, 40, False, False, 0)
    perm = torch.randperm(40)
    for gallery in (graph, graph.neighbors):  # a GalleryGraph or its (G, K_g) int32 tensor
        res = icfrr_fast.icfrr(cv[:, perm], gallery, ids=ci[:, perm].to(torch.int32), k_g=20, k_q=15,
                               largest=False, k=10, return_history=True)
        _assert_same((res.values, res.indices, res.history), (dense.values, dense.indices, dense.history))
    ref = icfrr_fast.icfrr(cv, graph, ids=ci, k_g=20, k_q=15, largest=False, k=10, backend="reference")
    assert torch.equal(ref.indices, dense.indices) and torch.equal(ref.values, dense.values)
    half = icfrr_fast.icfrr(cv.to(torch.float16), graph, ids=ci, k_g=20, k_q=15, largest=False)
    assert half.values.dtype == torch.float16 and half.indices.shape == (5, 40) and half.history is None


@pytest.mark.parametrize("kw,exc,match", [
    (dict(depth=10), ValueError, "depth cannot be combined with ids"),
    (dict(gallery="graph"), TypeError, "with ids, gallery must be a GalleryGraph or a \\(G, K_g\\) int32"),
    (dict(gallery=torch.zeros(20, 20)), TypeError, "with ids, gallery must be a GalleryGraph"),
    (dict(k_g=5), ValueError, r"k_g must be in \[1, 4\] \(the neighbour tensor holds 4"),
    (dict(ids=[[0, 1]]), TypeError, "ids must be a torch.Tensor"),
    (dict(ids=torch.zeros(2, 10, dtype=torch.int64)), ValueError, "ids must be distinct in each row"),
    (dict(ids=torch.zeros(2, 10, dtype=torch.int64), backend="reference"), ValueError, "ids must be distinct"),
])
def test_public_api_with_ids_bad_input(kw, exc, match):
    gen = torch.Generator().manual_seed(0)
    scores, ids = _candidates(2, 10, 20, gen, pad=False)
    a = dict(gallery=_graph(20, 4, gen), ids=ids, k_g=4, k_q=3)
    a.update(kw)
    with pytest.raises(exc, match=match):
        icfrr_fast.icfrr(scores, a.pop("gallery"), **a)


def test_index_search_depth_feeds_knn_topk_into_candidates():
    """search(depth=L) = knn_topk's (values, ids) handed to icfrr_candidates = icfrr_rerank over the dense scores
    with depth L (the dense op's own path: dense_topk, then the same candidate kernel)."""
    d = cross_domain_features(6, 150, 16, 5, seed=1)
    index = icfrr_fast.ICFRRIndex(d.gallery, k_g=12, metric="l2")
    D, I, H = index.search(d.queries, 10, k_q=8, iters=4, depth=30, return_history=True, batch_size=4)
    dense = ops.knn_scores(d.queries, d.gallery, "l2", "fp32")
    v, i, h = ops.icfrr_rerank(dense, index.graph.neighbors, 8, 0.5, 4, "reference", False, 30, 10, True, False)
    _assert_same((D, I, H), (v, i, h))


# ------------------------------------------------------------------------------------------------------------------
# registration: opcheck, torch.compile, fake tensors
# ------------------------------------------------------------------------------------------------------------------
def test_opcheck():
    gen = torch.Generator().manual_seed(0)
    nb = _graph(30, 5, gen, holes=0.2)
    s1, i1 = _candidates(3, 12, 30, gen)
    s2, i2 = _candidates(2, 12, 30, gen, dtype=torch.float64, id_dtype=torch.int32, pad=False)
    for args in [(s1, i1, nb, 30, 4, 0.5, 3, "reference", True, 12, True, False),
                 (s2, i2, nb, 64, 4, 0.5, 2, "paper", False, 5, False, True)]:
        torch.library.opcheck(torch.ops.icfrr_fast.icfrr_candidates.default, args)


def test_torch_compile_fullgraph():
    gen = torch.Generator().manual_seed(0)
    nb = _graph(40, 6, gen)
    scores, ids = _candidates(3, 15, 40, gen)

    def f(s, i):
        v, idx, _ = torch.ops.icfrr_fast.icfrr_candidates(s * 2.0, i, nb, 40, 5, 0.5, 3, "reference", True, 10,
                                                          False, False)
        return v + 1.0, idx

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    v, i = compiled(scores, ids)
    v0, i0 = f(scores, ids)
    assert torch.equal(i, i0) and torch.equal(v, v0)


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        s = torch.empty(4, 50, dtype=torch.bfloat16)
        ids = torch.empty(4, 50, dtype=torch.int32)
        nb = torch.empty(80, 8, dtype=torch.int32)
        v, i, h = torch.ops.icfrr_fast.icfrr_candidates(s, ids, nb, 100, 5, 0.5, 3, "paper", True, 7, True, False)
    assert v.shape == (4, 7) and i.shape == (4, 7) and h.shape == (4, 4, 7)
    assert v.dtype == torch.bfloat16 and i.dtype == torch.int64


# ------------------------------------------------------------------------------------------------------------------
# bad input: one case per check
# ------------------------------------------------------------------------------------------------------------------
def _call(**kw):
    gen = torch.Generator().manual_seed(0)
    scores, ids = _candidates(2, 10, 20, gen, pad=False)
    a = dict(scores=scores, ids=ids, neighbors=_graph(20, 4, gen), gallery_size=20, k_q=4, beta=0.5, iters=2,
             semantics="reference", largest=True, k=10, return_history=False, early_stop=False)
    a.update(kw)
    tensors = [a[n] for n in ("scores", "ids", "neighbors")]
    if not all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in tensors) or \
            type(a["gallery_size"]) is not int or type(a["largest"]) is not bool:
        # the op's schema (or the dispatcher, for mixed devices) rejects these before any kernel: check the
        # validator's own message
        return ops.validate_icfrr_candidates(*a.values(), check_data=True)
    return ops.icfrr_candidates(*a.values())


def _ids(edit):
    ids = _candidates(2, 10, 20, torch.Generator().manual_seed(0), pad=False)[1].clone()
    edit(ids)
    return ids


def _set(t, idx, value):
    t = t.clone()
    t[idx] = value
    return t


_S = _candidates(2, 10, 20, torch.Generator().manual_seed(0), pad=False)[0]
BAD_INPUT = [
    (dict(scores=torch.zeros(2, 10, dtype=torch.int32)), TypeError, "scores must be a floating tensor"),
    (dict(ids=torch.zeros(2, 10)), TypeError, "ids must be an int32 or int64 tensor"),
    (dict(ids=torch.arange(20).view(2, 10)[:, :9]), ValueError, r"ids must have scores' shape"),
    (dict(ids=[[0, 1]]), TypeError, "ids must be a torch.Tensor"),
    (dict(neighbors=torch.zeros(20, 4, dtype=torch.int64)), TypeError, "neighbors must be an int32 tensor"),
    (dict(neighbors=torch.zeros(20, dtype=torch.int32)), ValueError, r"neighbors must be 2-D \(N, K_g\)"),
    (dict(ids=torch.zeros(2, 10, dtype=torch.int64, device="meta")), ValueError, "ids must be on scores' device"),
    (dict(neighbors=torch.zeros(20, 4, dtype=torch.int32, device="meta")), ValueError,
     "neighbors must be on scores' device"),
    (dict(neighbors=torch.zeros(0, 4, dtype=torch.int32)), ValueError, "neighbors must have between 1 and"),
    (dict(gallery_size=19), ValueError, r"gallery_size must be in \[20, "),
    (dict(gallery_size=20.0), TypeError, "gallery_size must be an int"),
    (dict(neighbors=torch.zeros(20, 20, dtype=torch.int32)), ValueError, r"k_g must be in \[1, G - 1\]"),
    (dict(k_q=0), ValueError, "k_q must be in"),
    (dict(beta=float("nan")), ValueError, "beta must be finite"),
    (dict(iters=-1), ValueError, "iters must be in"),
    (dict(semantics="both"), ValueError, "semantics must be one of"),
    (dict(k=11), ValueError, r"k must be in \[1, 10\] \(the candidates per row L\)"),
    (dict(largest="yes"), TypeError, "largest must be a bool"),
    (dict(ids=_ids(lambda t: t.__setitem__((0, 3), 20))), ValueError, r"ids must be in \[-1, N - 1"),
    (dict(ids=_ids(lambda t: t.__setitem__((1, 3), -2))), ValueError, r"ids must be in \[-1, N - 1"),
    (dict(ids=_ids(lambda t: t.__setitem__((1, 3), t[1, 7].item()))), ValueError,
     "ids must be distinct in each row; row 1 repeats"),
    (dict(ids=_ids(lambda t: t.__setitem__((1, 2), -1))), ValueError, "padding \\(-1\\) must be a row's suffix; row 1"),
    (dict(scores=_set(_S, (1, 4), float("nan"))), ValueError, r"scores of the candidates .* must be finite"),
    (dict(scores=_set(_S, (0, 0), float("-inf"))), ValueError, r"scores of the candidates .* must be finite"),
    (dict(neighbors=torch.full((20, 4), 20, dtype=torch.int32)), ValueError,
     r"gallery graph ids must be in \[-1, N - 1\]"),
]


@pytest.mark.parametrize("kw,exc,match", BAD_INPUT, ids=[m for _, _, m in BAD_INPUT])
def test_bad_input(kw, exc, match):
    with pytest.raises(exc, match=match):
        _call(**kw)


def test_padding_scores_may_be_nan():
    ids = _ids(lambda t: t[1, 6:].fill_(-1))
    v, i, _ = _call(ids=ids, scores=_set(_S, (1, slice(6, None)), float("nan")))
    assert bool((i[1, 6:] == -1).all()) and not bool(v[:, :6].isnan().any())


def test_vote_accumulator_capacity_is_checked():
    """K_q' = min(k_q, L) >= 2^24 voters overflow the packed counts: shapes only (meta tensors, no data)."""
    L = 2**24
    with pytest.raises(ValueError, match=r"min\(k_q, L\) \* \(k_g - 1\) must be < 2\^40 .* vote accumulators"):
        ops.validate_icfrr_candidates(torch.empty(1, L, device="meta"), torch.empty(1, L, dtype=torch.int64,
                                       device="meta"), torch.empty(L, 4, dtype=torch.int32, device="meta"), L, L,
                                       0.5, 2, "reference", True, 10, False, False)
