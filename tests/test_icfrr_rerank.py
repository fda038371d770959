"""icfrr_rerank: the fused kernels against the reference (docs/design.md §2), the reference against an exact rational
transcription of the paper's formula, properties, registration (opcheck, torch.compile) and bad input."""

from __future__ import annotations

import os
import signal
import threading
import time
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import icfrr_fast
from icfrr_fast import GalleryGraph, icfrr, ops, reference
from icfrr_fast.testing import available_devices, cross_domain_features
from _assertions import assert_rankings_equal, assert_values_equal

DEVICES = available_devices()


def _graph(G: int, K: int, gen: torch.Generator, dim: int = 3) -> torch.Tensor:
    """(G, K) int32 neighbour lists of random points (self excluded, ties to the smaller index)."""
    g = torch.randn(G, dim, generator=gen, dtype=torch.float64)
    _, nb = reference.dense_topk(torch.cdist(g, g), K, largest=False, exclude_self=True)
    return nb.to(torch.int32)


def _scores(Q: int, G: int, gen: torch.Generator, dtype=torch.float64, tied: bool = False) -> torch.Tensor:
    if tied:  # few distinct values: many exact ties, in the initial order and in the keys
        return torch.randint(0, 4, (Q, G), generator=gen).to(dtype)
    return torch.randn(Q, G, generator=gen, dtype=dtype)


def _both(scores, nb, **kw):
    """(kernel result, reference result) for the same arguments."""
    kw = dict(kw)
    G = scores.shape[1]
    depth = kw.pop("depth", None) or G
    k = kw.pop("k", None) or depth
    args = (scores, nb, kw["k_q"], kw["beta"], kw["iters"], kw.get("semantics", "reference"), kw.get("largest", True),
            depth, k, True, kw.get("early_stop", False))
    got = ops.icfrr_rerank(*args)
    want = reference.icfrr_rerank(scores.cpu(), nb.cpu(), k_q=kw["k_q"], beta=kw["beta"], iters=kw["iters"],
                                  semantics=kw.get("semantics", "reference"), largest=kw.get("largest", True),
                                  depth=depth, k=k, return_history=True, early_stop=kw.get("early_stop", False))
    return got, want


def _assert_same(got, want):
    assert_rankings_equal(got[1].cpu(), want[1], "indices")
    assert_values_equal(got[0].cpu(), want[0], "values")
    assert_rankings_equal(got[2].cpu(), want[2], "history")


# ------------------------------------------------------------------------------------------------------------------
# parity with the reference
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("semantics", ["reference", "paper"])
@pytest.mark.parametrize("seed", range(12))
def test_matches_reference_random_configs(device, semantics, seed):
    gen = torch.Generator().manual_seed(seed)
    G = int(torch.randint(2, 80, (), generator=gen))
    Q = int(torch.randint(1, 5, (), generator=gen))
    K = int(torch.randint(1, G, (), generator=gen))
    k_q = int(torch.randint(1, G + 4, (), generator=gen))
    depth = G if seed % 3 else int(torch.randint(1, G + 1, (), generator=gen))
    k = int(torch.randint(1, depth + 1, (), generator=gen))
    iters = int(torch.randint(0, 7, (), generator=gen))
    beta = [0.5, 0.0, 2.0, 1e-3, 7.5][seed % 5]
    dtype = [torch.float64, torch.float32][seed % 2]
    scores = _scores(Q, G, gen, dtype, tied=seed % 4 == 0).to(device)
    nb = _graph(G, K, gen).to(device)
    got, want = _both(scores, nb, k_q=k_q, beta=beta, iters=iters, semantics=semantics, largest=seed % 5 != 1,
                      depth=depth, k=k, early_stop=seed % 6 == 0)
    _assert_same(got, want)


@pytest.mark.parametrize("semantics", ["reference", "paper"])
def test_matches_reference_on_clustered_features(semantics):
    """Realistic structure: many votes per item, long merges, the default-like setting at a small size."""
    d = cross_domain_features(12, 600, 32, 12, seed=3)
    qg = torch.cdist(d.queries.double(), d.gallery.double())
    gg = torch.cdist(d.gallery.double(), d.gallery.double())
    nb = reference.dense_topk(gg, 64, largest=False, exclude_self=True)[1].to(torch.int32)
    got, want = _both(qg, nb, k_q=50, beta=0.5, iters=5, semantics=semantics, largest=False)
    _assert_same(got, want)


EDGE_CASES = {
    "T=0": dict(G=30, Q=3, K=5, k_q=4, iters=0),
    "Q=1": dict(G=30, Q=1, K=5, k_q=4, iters=3),
    "G=2": dict(G=2, Q=3, K=1, k_q=1, iters=3),
    "k_q>=G": dict(G=20, Q=2, K=6, k_q=50, iters=4),
    "k_q=G": dict(G=20, Q=2, K=6, k_q=20, iters=4),
    "K_g=G-1": dict(G=25, Q=2, K=24, k_q=7, iters=4),
    "depth<G": dict(G=40, Q=3, K=8, k_q=5, iters=4, depth=9),
    "depth=1": dict(G=40, Q=3, K=8, k_q=5, iters=4, depth=1),
    "depth<k_q": dict(G=40, Q=3, K=8, k_q=30, iters=4, depth=12),
    "k<depth": dict(G=40, Q=3, K=8, k_q=5, iters=4, depth=20, k=3),
    "k=1": dict(G=40, Q=3, K=8, k_q=5, iters=4, k=1),
    "tied": dict(G=40, Q=4, K=8, k_q=5, iters=5, tied=True),
    "all-equal": dict(G=33, Q=2, K=8, k_q=5, iters=5, constant=True),
    "large-k_q*K_g (64-bit packing)": dict(G=300, Q=2, K=299, k_q=300, iters=2),
    "G=257 (block size + 1)": dict(G=257, Q=2, K=31, k_q=17, iters=3),
    "sparse path (k_q K_g < L)": dict(G=200, Q=3, K=3, k_q=4, iters=6),
    "sparse path with depth": dict(G=200, Q=3, K=3, k_q=4, iters=6, depth=150),
    "dense path, many voter changes": dict(G=60, Q=3, K=40, k_q=9, iters=8),
    # the coarse-key sort: one outlier crowds all other keys into a few coarse buckets (runs longer than 32)
    "outlier crowds the keys": dict(G=300, Q=2, K=20, k_q=30, iters=4, outlier=1e9),
    # keys whose range overflows to inf (no scale factor): the exact 64-bit path
    "range overflows": dict(G=80, Q=2, K=10, k_q=12, iters=3, outlier=1.5e308),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("semantics", ["reference", "paper"])
@pytest.mark.parametrize("case", list(EDGE_CASES), ids=list(EDGE_CASES))
def test_edge_cases(device, semantics, case):
    c = dict(EDGE_CASES[case])
    gen = torch.Generator().manual_seed(7)
    scores = _scores(c["Q"], c["G"], gen, tied=c.get("tied", False))
    if c.get("constant"):
        scores = torch.full_like(scores, 0.25)
    if c.get("outlier"):
        scores = scores * 1e-12
        scores[:, 3] = c["outlier"]
        scores[:, 5] = -c["outlier"]
    nb = _graph(c["G"], c["K"], gen)
    for early_stop in (False, True):
        got, want = _both(scores.to(device), nb.to(device), k_q=c["k_q"], beta=0.5, iters=c["iters"],
                          semantics=semantics, depth=c.get("depth"), k=c.get("k"), early_stop=early_stop)
        _assert_same(got, want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64],
                         ids=lambda d: f"dtype={str(d).split('.')[-1]}")
def test_input_dtypes(dtype):
    """Half precision is widened exactly to float32 before the kernel: same result as the reference on the
    widened scores; values come back in the scores' dtype, like torch.topk."""
    gen = torch.Generator().manual_seed(1)
    scores = _scores(3, 50, gen, torch.float32).to(dtype)
    nb = _graph(50, 9, gen)
    got = ops.icfrr_rerank(scores, nb, 6, 0.5, 3, "reference", True, 50, 50, True, False)
    assert got[0].dtype == dtype
    wide = scores.to(torch.float64 if dtype == torch.float64 else torch.float32)
    want = reference.icfrr_rerank(wide, nb, k_q=6, beta=0.5, iters=3, return_history=True)
    _assert_same(got, (want[0].to(dtype), want[1], want[2]))
    _assert_same(got, reference.icfrr_rerank(scores, nb, k_q=6, beta=0.5, iters=3, return_history=True))


def test_non_contiguous_inputs():
    gen = torch.Generator().manual_seed(2)
    big = _scores(6, 120, gen)
    scores = big[::2, ::2]  # (3, 60), strides (240, 2)
    wide_nb = _graph(60, 12, gen)
    nb = wide_nb[:, :7]  # view with row stride 12
    assert not scores.is_contiguous() and not nb.is_contiguous()
    got, want = _both(scores, nb, k_q=5, beta=0.5, iters=4)
    _assert_same(got, want)
    got_c, _ = _both(scores.contiguous(), nb.contiguous(), k_q=5, beta=0.5, iters=4)
    _assert_same(got, got_c)


def test_empty_query_batch():
    gen = torch.Generator().manual_seed(0)
    nb = _graph(10, 3, gen)
    v, i, h = ops.icfrr_rerank(torch.empty(0, 10), nb, 3, 0.5, 2, "reference", True, 10, 10, True, False)
    assert v.shape == (0, 10) and i.shape == (0, 10) and h.shape == (0, 3, 10)


# ------------------------------------------------------------------------------------------------------------------
# the reference itself, against an exact transcription of the paper's formula
# ------------------------------------------------------------------------------------------------------------------
def _paper_formula_exact(scores, neighbors, k_q, beta, iters, semantics):
    """Literal docs/design.md §2 in exact rational arithmetic, one query, plain Python lists: alpha(r) = 1 - r/(G-1),
    delta_j = mean over the voters of alpha(rank of j in N_i), keys by slot (reference) or accumulated (paper),
    stable sort. Scores are converted exactly (Fraction of a float64)."""
    G = len(scores)
    beta = Fraction(beta)
    s = [Fraction(float(v)) for v in scores]
    order = sorted(range(G), key=lambda j: -s[j])  # Python's sort is stable: ties keep index order
    slot = [s[j] for j in order]
    cur = dict((j, s[j]) for j in range(G))
    nbrs = [list(map(int, row)) for row in neighbors]
    for _ in range(iters):
        kq = min(k_q, G)
        voters = order[:kq]
        delta = {j: Fraction(0) for j in range(G)}
        for i in voters:
            for r, j in enumerate(nbrs[i]):
                delta[j] += (1 - Fraction(r, G - 1)) / kq
        if semantics == "reference":
            keyed = [(slot[p] + beta * delta[j], p, j) for p, j in enumerate(order)]
        else:
            for j in range(G):
                cur[j] = cur[j] + beta * delta[j]
            keyed = [(cur[j], p, j) for p, j in enumerate(order)]
        keyed.sort(key=lambda t: (-t[0], t[1]))
        order = [j for _, _, j in keyed]
    return order


@pytest.mark.parametrize("semantics", ["reference", "paper"])
@pytest.mark.parametrize("seed", range(6))
def test_reference_equals_exact_rational_formula(semantics, seed):
    """On random float64 scores the float64 keys order exactly like exact rationals (no near-ties)."""
    gen = torch.Generator().manual_seed(100 + seed)
    G, K = 24, 6
    scores = _scores(1, G, gen)[0]
    nb = _graph(G, K, gen)
    want = _paper_formula_exact(scores.tolist(), nb.tolist(), k_q=5, beta=0.5, iters=4, semantics=semantics)
    _, idx, _ = reference.icfrr_rerank(scores[None], nb, k_q=5, beta=0.5, iters=4, semantics=semantics)
    assert idx[0].tolist() == want


def test_rank_weight_uses_the_whole_gallery_size():
    """alpha(r) = 1 - r/(G-1) with G the gallery size, not K_g: two items voted by one voter at ranks 0 and 1
    get delta 1 and 1 - 1/(G-1)."""
    G = 10
    nb = torch.tensor([[(i + 1) % G, (i + 2) % G] for i in range(G)], dtype=torch.int32)
    scores = torch.linspace(0, -1, G, dtype=torch.float64)[None]  # item 0 best
    v, i, _ = reference.icfrr_rerank(scores, nb, k_q=1, beta=1.0, iters=1)
    # voter = item 0; item 1 (rank 0): -1/9 + 1 ; item 2 (rank 1): -2/9 + (1 - 1/9); slots: item at position p keeps v_p
    keys = dict(zip(i[0].tolist(), v[0].tolist()))
    assert keys[1] == pytest.approx(float(scores[0, 1] + 1.0))
    assert keys[2] == pytest.approx(float(scores[0, 2] + 1.0 - 1.0 / (G - 1)))


# ------------------------------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(G=st.integers(2, 40), Q=st.integers(1, 3), data=st.data())
def test_properties(G, Q, data):
    K = data.draw(st.integers(1, G - 1))
    k_q = data.draw(st.integers(1, G + 2))
    iters = data.draw(st.integers(0, 4))
    seed = data.draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    scores = _scores(Q, G, gen, torch.float32, tied=data.draw(st.booleans()))
    nb = _graph(G, K, gen)
    v, i, h = ops.icfrr_rerank(scores, nb, k_q, 0.5, iters, "reference", True, G, G, True, False)
    # the output is a permutation of the gallery, and so is every step of the history
    assert torch.equal(torch.sort(i, dim=1).values, torch.arange(G).expand(Q, G))
    assert torch.equal(torch.sort(h, dim=2).values, torch.arange(G).expand(Q, iters + 1, G))
    # keys are sorted best first
    assert bool((v[:, :-1] >= v[:, 1:]).all())
    # T = 1: both semantics agree
    a = ops.icfrr_rerank(scores, nb, k_q, 0.5, 1, "reference", True, G, G, False, False)
    b = ops.icfrr_rerank(scores, nb, k_q, 0.5, 1, "paper", True, G, G, False, False)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    # T = 0 is the stable initial ranking
    c = ops.icfrr_rerank(scores, nb, k_q, 0.5, 0, "paper", True, G, G, False, False)
    assert torch.equal(c[1], torch.sort(scores, dim=1, descending=True, stable=True).indices)
    # largest=False on negated scores gives the same ranking
    d = ops.icfrr_rerank(-scores, nb, k_q, 0.5, iters, "reference", False, G, G, False, False)
    assert torch.equal(d[1], i)


@pytest.mark.parametrize("semantics", ["reference", "paper"])
def test_results_do_not_depend_on_thread_count(semantics):
    d = cross_domain_features(40, 700, 32, 10, seed=5)
    qg = torch.cdist(d.queries, d.gallery)
    nb = GalleryGraph.from_distances(torch.cdist(d.gallery, d.gallery), 50).neighbors
    outs = []
    for n in (1, 2, 3):
        icfrr_fast.set_num_threads(n)
        outs.append(ops.icfrr_rerank(qg, nb, 40, 0.5, 5, semantics, False, 700, 700, True, False))
    for o in outs[1:]:
        _assert_same(o, outs[0])


def test_fixed_points_are_final_and_skipping_them_is_exact():
    """Semantics "reference": keys depend only on the order, so once an iteration leaves the order unchanged every
    later one does too. The kernel skips those iterations; the reference runs them all: both must agree. (Orders
    may also cycle instead of converging; then nothing is skipped.)"""
    d = cross_domain_features(8, 300, 16, 6, seed=9)
    qg = torch.cdist(d.queries.double(), d.gallery.double())
    nb = GalleryGraph.from_distances(torch.cdist(d.gallery, d.gallery), 30).neighbors
    got, want = _both(qg, nb, k_q=20, beta=0.5, iters=25, semantics="reference", largest=False)
    _assert_same(got, want)
    h = want[2]
    converged = 0
    for q in range(h.shape[0]):
        same = [bool(torch.equal(h[q, t], h[q, t + 1])) for t in range(h.shape[1] - 1)]
        if True in same:
            first = same.index(True)
            assert all(same[first:]), f"query {q}: order changed again after a fixed point"
            converged += 1
    assert converged > 0, "no query reached a fixed point: the test data no longer exercises the skip"


# ------------------------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------------------------
def test_public_api_dense_and_graph_agree_with_reference_backend():
    d = cross_domain_features(5, 200, 16, 5, seed=4)
    qg, gg = torch.cdist(d.queries, d.gallery), torch.cdist(d.gallery, d.gallery)
    res = icfrr(qg, gg, k_g=20, k_q=15, largest=False, return_history=True)
    values, indices = res  # unpacks like torch.topk
    assert res.history.shape == (5, 6, 200)
    graph = GalleryGraph.from_distances(gg, 32)
    res_graph = icfrr(qg, graph, k_g=20, k_q=15, largest=False)
    res_ref = icfrr(qg, gg, k_g=20, k_q=15, largest=False, backend="reference")
    assert torch.equal(res_graph.indices, indices) and torch.equal(res_ref.indices, indices)
    assert torch.equal(res_ref.values, values)
    assert res_graph.history is None
    # largest=False: values are re-ranked distances, ascending
    assert bool((values[:, :-1] <= values[:, 1:]).all())


def test_public_api_similarities_and_k():
    d = cross_domain_features(4, 150, 16, 5, seed=8)
    s, gs = d.queries @ d.gallery.T, d.gallery @ d.gallery.T
    res = icfrr(s, gs, k_g=10, k_q=8, k=7)
    assert res.indices.shape == (4, 7) and res.values.dtype == torch.float32
    full = icfrr(s, gs, k_g=10, k_q=8)
    assert torch.equal(full.indices[:, :7], res.indices)


# ------------------------------------------------------------------------------------------------------------------
# registration: opcheck, torch.compile, fake tensors
# ------------------------------------------------------------------------------------------------------------------
def test_opcheck():
    gen = torch.Generator().manual_seed(0)
    nb = _graph(30, 5, gen)
    for args in [(_scores(3, 30, gen, torch.float32), nb, 4, 0.5, 3, "reference", True, 30, 30, True, False),
                 (_scores(2, 30, gen), nb, 4, 0.5, 2, "paper", False, 12, 5, False, True)]:
        torch.library.opcheck(torch.ops.icfrr_fast.icfrr_rerank.default, args)


def test_torch_compile_fullgraph():
    gen = torch.Generator().manual_seed(0)
    nb = _graph(40, 6, gen)
    scores = _scores(3, 40, gen, torch.float32)

    def f(s):
        v, i, _ = torch.ops.icfrr_fast.icfrr_rerank(s * 2.0, nb, 5, 0.5, 3, "reference", True, 40, 10, False, False)
        return v + 1.0, i

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    v, i = compiled(scores)
    v0, i0 = f(scores)
    assert torch.equal(i, i0) and torch.equal(v, v0)


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        s = torch.empty(4, 50)
        nb = torch.empty(50, 8, dtype=torch.int32)
        v, i, h = torch.ops.icfrr_fast.icfrr_rerank(s, nb, 5, 0.5, 3, "paper", True, 20, 7, True, False)
    assert v.shape == (4, 7) and i.shape == (4, 7) and h.shape == (4, 4, 7)
    assert v.dtype == torch.float32 and i.dtype == torch.int64


# ------------------------------------------------------------------------------------------------------------------
# bad input: one check per rule, each naming the argument
# ------------------------------------------------------------------------------------------------------------------
def _call(scores=None, gallery=None, **kw):
    gen = torch.Generator().manual_seed(0)
    scores = _scores(2, 20, gen, torch.float32) if scores is None else scores
    gallery = torch.cdist(torch.randn(20, 3), torch.randn(20, 3)) if gallery is None else gallery
    kw.setdefault("k_g", 5)
    kw.setdefault("k_q", 4)
    return icfrr(scores, gallery, **kw)


BAD_INPUT = [
    (dict(scores=torch.randn(20)), ValueError, "scores must be 2-D"),
    (dict(scores=[[1.0, 2.0]]), TypeError, "scores must be a torch.Tensor"),
    (dict(scores=torch.randint(0, 5, (2, 20))), TypeError, "scores must be a floating tensor"),
    (dict(scores=torch.randn(2, 20, dtype=torch.complex64)), TypeError, "scores must be a floating tensor"),
    (dict(gallery=torch.randn(20, 19)), ValueError, "square"),
    (dict(gallery=torch.randn(21, 21)), ValueError, "scores has G = 20"),
    (dict(gallery="graph"), TypeError, "gallery must be a GalleryGraph"),
    (dict(scores=torch.randn(2, 1), gallery=torch.randn(1, 1), k_g=1), ValueError, "at least 2 items"),
    (dict(k_g=20), ValueError, r"k_g must be in \[1, G - 1\]"),
    (dict(k_g=0), ValueError, "k must be in|k_g must be in"),
    (dict(k_q=0), ValueError, "k_q must be in"),
    (dict(k_q=2.5), TypeError, "k_q must be an int"),
    (dict(iters=-1), ValueError, "iters must be in"),
    (dict(beta=float("nan")), ValueError, "beta must be finite"),
    (dict(beta=float("inf")), ValueError, "beta must be finite"),
    (dict(beta=-0.5), ValueError, "beta must be finite and >= 0"),
    (dict(semantics="released"), ValueError, "semantics must be one of"),
    (dict(depth=0), ValueError, "depth must be in"),
    (dict(depth=21), ValueError, "depth must be in"),
    (dict(k=0), ValueError, "k must be in"),
    (dict(k=21), ValueError, "k must be in"),
    (dict(depth=5, k=6), ValueError, "k must be in"),
    (dict(backend="gpu"), ValueError, "backend must be one of"),
    (dict(largest="yes"), TypeError, "largest must be a bool"),
    (dict(scores=torch.tensor([[float("nan")] + [0.0] * 19] * 2)), ValueError, "scores must be finite"),
    (dict(scores=torch.tensor([[float("inf")] + [0.0] * 19] * 2)), ValueError, "scores must be finite"),
    (dict(gallery=torch.full((20, 20), float("nan"))), ValueError, "gallery: .*must be finite"),
]


@pytest.mark.parametrize("kw,exc,match", BAD_INPUT, ids=[m for _, _, m in BAD_INPUT])
def test_bad_input(kw, exc, match):
    with pytest.raises(exc, match=match):
        _call(**kw)


def test_bad_input_reference_backend_is_checked_too():
    with pytest.raises(ValueError, match="k_q must be in"):
        _call(k_q=0, backend="reference")
    with pytest.raises(ValueError, match="scores must be finite"):
        _call(scores=torch.full((2, 20), float("nan")), backend="reference")


def test_bad_graph_ids_are_rejected_before_the_kernel():
    nb = torch.randint(0, 20, (20, 4), dtype=torch.int32)
    nb[3, 2] = 20
    with pytest.raises(ValueError, match=r"ids must be in \[0, G - 1\]"):
        ops.icfrr_rerank(torch.randn(2, 20), nb, 4, 0.5, 2, "reference", True, 20, 20, False, False)
    nb[3, 2] = -1
    with pytest.raises(ValueError, match=r"ids must be in \[0, G - 1\]"):
        ops.icfrr_rerank(torch.randn(2, 20), nb, 4, 0.5, 2, "reference", True, 20, 20, False, False)
    with pytest.raises(TypeError, match="neighbors must be an int32 tensor"):
        ops.icfrr_rerank(torch.randn(2, 20), nb.long(), 4, 0.5, 2, "reference", True, 20, 20, False, False)
    with pytest.raises(ValueError, match="one row per gallery item"):
        ops.icfrr_rerank(torch.randn(2, 20), nb[:10], 4, 0.5, 2, "reference", True, 20, 20, False, False)


def test_graph_with_too_few_neighbours():
    graph = GalleryGraph.from_distances(torch.cdist(torch.randn(30, 3), torch.randn(30, 3)), 5)
    with pytest.raises(ValueError, match="this graph stores 5 neighbours"):
        icfrr(torch.randn(2, 30), graph, k_g=8, k_q=3)
    with pytest.raises(ValueError, match="the gallery graph has G = 30"):
        icfrr(torch.randn(2, 31), graph, k_g=5, k_q=3)


# ------------------------------------------------------------------------------------------------------------------
# Ctrl-C
# ------------------------------------------------------------------------------------------------------------------
def test_ctrl_c_stops_a_long_call_promptly():
    """SIGINT during a long kernel call raises KeyboardInterrupt within a fraction of a second."""
    G = 20000
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(3000, G, generator=gen)
    # distinct ids per row, none the row's own: offsets from 64 disjoint strata of [1, G - 1]
    width = (G - 1) // 64
    offsets = 1 + torch.randint(0, width, (G, 64), generator=gen) + width * torch.arange(64)
    nb = ((torch.arange(G)[:, None] + offsets) % G).to(torch.int32)
    icfrr_fast.set_num_threads(2)
    fired = {}

    def interrupt():
        fired["t"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(0.3, interrupt)
    start = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        ops.icfrr_rerank(scores, nb, 250, 0.5, 30, "paper", True, G, 10, False, False)
    stopped = time.perf_counter()
    timer.cancel()
    assert "t" in fired, "the call finished before the interrupt: make it longer"
    assert stopped - fired["t"] < 1.0, f"took {stopped - fired['t']:.2f} s to stop after SIGINT"
    assert stopped - start < 30
