"""icfrr_rerank at full depth (depth == G) on CPU: the touched-set algorithm (csrc/include/icfrr/icfrr_rerank_full.h)
against the reference and against the merge kernel it replaces there, bit for bit, on random and adversarial inputs.

The hidden switch ``_C.set_full_depth_path`` picks the algorithm: 0 = by size (the default), 1 = touched-set,
2 = merge kernel. Each test forces one and restores the default.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import icfrr_fast
from icfrr_fast import _native, ops, reference
from _assertions import assert_rankings_equal, assert_values_equal

TOUCHED, MERGE = 1, 2


@pytest.fixture(autouse=True)
def _default_path_after():
    yield
    _native.load().set_full_depth_path(0)


def _run(path: int, scores, nb, k_q, beta, iters, semantics="reference", largest=True, k=None, early_stop=False,
         history=True):
    _native.load().set_full_depth_path(path)
    G = scores.shape[1]
    return ops.icfrr_rerank(scores, nb, k_q, beta, iters, semantics, largest, G, k or G, history, early_stop)


def _reference(scores, nb, k_q, beta, iters, semantics="reference", largest=True, k=None, early_stop=False):
    return reference.icfrr_rerank(scores, nb, k_q=k_q, beta=beta, iters=iters, semantics=semantics, largest=largest,
                                  k=k, return_history=True, early_stop=early_stop)


def _assert_same(got, want):
    assert_rankings_equal(got[1], want[1], "indices")
    assert_values_equal(got[0], want[0], "values")
    assert_rankings_equal(got[2], want[2], "history")


def _check(scores, nb, **kw):
    """Touched-set == merge kernel == reference, outputs and history."""
    got = _run(TOUCHED, scores, nb, **kw)
    _assert_same(got, _run(MERGE, scores, nb, **kw))
    _assert_same(got, _reference(scores, nb, **kw))


def _random_graph(G: int, K: int, gen: torch.Generator) -> torch.Tensor:
    """(G, K) int32 rows of K distinct random other items, in random order: voted items anywhere in the list."""
    keys = torch.rand(G, G, generator=gen)
    keys.fill_diagonal_(2.0)
    return keys.argsort(dim=1)[:, :K].to(torch.int32)


def _large_random_graph(G: int, K: int, gen: torch.Generator) -> torch.Tensor:
    """(G, K) int32 rows of K distinct random other items without a (G, G) temporary: item i's neighbours are
    i + o (mod G) for K distinct offsets o in [1, G - 1] drawn per row."""
    offsets = torch.stack([torch.randperm(G - 1, generator=gen)[:K] + 1 for _ in range(G)])
    return ((torch.arange(G)[:, None] + offsets) % G).to(torch.int32)


def _scores(Q: int, G: int, gen: torch.Generator, kind: str, dtype=torch.float64) -> torch.Tensor:
    if kind == "tied":  # few distinct integer values: ties in the initial order and among the keys
        return torch.randint(0, 4, (Q, G), generator=gen).to(dtype)
    if kind == "grid":  # a coarse grid of values: many ties, voted keys landing exactly on other scores
        return (torch.randint(0, 40, (Q, G), generator=gen) * 0.25).to(dtype)
    if kind == "constant":
        return torch.full((Q, G), 0.5, dtype=dtype)
    return torch.randn(Q, G, generator=gen, dtype=dtype)


@pytest.mark.parametrize("semantics", ["reference", "paper"])
@pytest.mark.parametrize("seed", range(16))
def test_random_configs(semantics, seed):
    gen = torch.Generator().manual_seed(100 + seed)
    G = int(torch.randint(2, 150, (), generator=gen))
    Q = int(torch.randint(1, 4, (), generator=gen))
    K = int(torch.randint(1, G, (), generator=gen))
    k_q = int(torch.randint(1, G + 4, (), generator=gen)) if seed % 3 == 0 else int(torch.randint(1, 6, (), generator=gen))
    kind = ["randn", "tied", "grid", "randn"][seed % 4]
    dtype = [torch.float64, torch.float32][seed % 2]
    scores = _scores(Q, G, gen, kind, dtype)
    _check(scores, _random_graph(G, K, gen), k_q=k_q, beta=[0.5, 0.0, 2.0, 1e-3, 7.5, 1e-17][seed % 6],
           iters=int(torch.randint(0, 7, (), generator=gen)), semantics=semantics, largest=seed % 5 != 1,
           k=int(torch.randint(1, G + 1, (), generator=gen)), early_stop=seed % 3 == 1)


CASES = {
    "G=2": dict(G=2, K=1, k_q=1, iters=3),
    "iters=0": dict(G=40, K=5, k_q=3, iters=0),
    "k_q>=G": dict(G=30, K=6, k_q=45, iters=4),
    "K_g=G-1": dict(G=30, K=29, k_q=3, iters=4),
    "k=1": dict(G=50, K=4, k_q=3, iters=5, k=1),
    "tied integers": dict(G=80, K=6, k_q=5, iters=6, kind="tied"),
    "grid ties": dict(G=80, K=6, k_q=5, iters=6, kind="grid"),
    "all equal (one bucket)": dict(G=60, K=5, k_q=4, iters=5, kind="constant"),
    "few voters, deep votes": dict(G=400, K=3, k_q=2, iters=8),
    "many iterations": dict(G=120, K=4, k_q=3, iters=30),
    # one outlier crowds every other score into the last bucket (a bucket of > 4096 items: the radix sort)
    "outlier crowds one bucket": dict(G=5000, K=3, k_q=2, iters=3, outlier=1e9),
    # a range that overflows to inf: no scale factor, one bucket
    "range overflows": dict(G=90, K=4, k_q=3, iters=3, outlier=1.5e308),
}


@pytest.mark.parametrize("semantics", ["reference", "paper"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_adversarial_cases(semantics, case):
    c = dict(CASES[case])
    gen = torch.Generator().manual_seed(7)
    G = c["G"]
    scores = _scores(2, G, gen, c.get("kind", "randn"))
    if c.get("outlier"):
        scores = scores * 1e-12
        scores[:, 3] = c["outlier"]
        scores[:, 5] = -c["outlier"]
    nb = _random_graph(G, c["K"], gen) if G <= 1000 else _large_random_graph(G, c["K"], gen)
    for early_stop in (False, True):
        for largest in (True, False):
            kw = dict(k_q=c["k_q"], beta=0.5, iters=c["iters"], semantics=semantics, largest=largest,
                      k=c.get("k"), early_stop=early_stop)
            if G <= 1000:
                _check(scores, nb, **kw)
            else:  # the reference's dense (G, G) rank matrix is too big here: the merge kernel is the oracle
                _assert_same(_run(TOUCHED, scores, nb, **kw), _run(MERGE, scores, nb, **kw))


@pytest.mark.parametrize("semantics", ["reference", "paper"])
def test_voted_items_move_from_deep_in_the_list(semantics):
    """The voters' neighbours are the worst-scored items: every voted item starts at the bottom."""
    G, K = 300, 8
    scores = torch.arange(G, 0, -1, dtype=torch.float64)[None].clone()  # item i at position i
    nb = torch.stack([torch.arange(G - K, G)] * G).to(torch.int32)  # everybody's neighbours: the last K items
    nb[G - K:] = torch.arange(K, dtype=torch.int32)[None]  # (no self-loops among the last K)
    for beta in (0.5, 1e3):
        _check(scores, nb, k_q=5, beta=beta, iters=4, semantics=semantics)


@pytest.mark.parametrize("semantics", ["reference", "paper"])
def test_float32_scores_and_default_dispatch(semantics):
    """float32 scores at a size where the default picks the touched-set algorithm (K_q' K_g <= G / 20)."""
    gen = torch.Generator().manual_seed(3)
    G, K = 5000, 4
    scores = torch.randn(3, G, generator=gen)
    nb = _large_random_graph(G, K, gen)
    kw = dict(k_q=40, beta=0.5, iters=5, semantics=semantics, k=50)
    default = _run(0, scores, nb, **kw)
    _assert_same(default, _run(TOUCHED, scores, nb, **kw))
    _assert_same(default, _run(MERGE, scores, nb, **kw))


def test_thread_count_does_not_change_results():
    gen = torch.Generator().manual_seed(4)
    G = 3000
    scores = torch.randn(6, G, generator=gen, dtype=torch.float64)
    nb = _large_random_graph(G, 6, gen)
    outs = []
    for threads in (1, 2):
        icfrr_fast.set_num_threads(threads)
        outs.append(_run(TOUCHED, scores, nb, k_q=10, beta=0.5, iters=5, k=40))
    _assert_same(outs[0], outs[1])


def test_switch_values():
    C = _native.load()
    for path in (0, 1, 2):
        C.set_full_depth_path(path)
        assert C.full_depth_path() == path


@settings(max_examples=25, deadline=None)
@given(G=st.integers(2, 40), K=st.integers(1, 39), k_q=st.integers(1, 45), iters=st.integers(0, 5),
       values=st.integers(1, 6), seed=st.integers(0, 2**16), paper=st.booleans(), early_stop=st.booleans())
def test_property_touched_equals_merge(G, K, k_q, iters, values, seed, paper, early_stop):
    """Hypothesis: any small shape, scores from a few integer values (ties everywhere)."""
    K = min(K, G - 1)
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, values, (2, G), generator=gen).to(torch.float64)
    nb = _random_graph(G, K, gen)
    kw = dict(k_q=k_q, beta=0.5, iters=iters, semantics="paper" if paper else "reference", early_stop=early_stop)
    _assert_same(_run(TOUCHED, scores, nb, **kw), _run(MERGE, scores, nb, **kw))


def test_empty_query_batch():
    nb = torch.randint(0, 5000, (5000, 3), dtype=torch.int32)
    v, i, h = _run(TOUCHED, torch.empty(0, 5000), nb, k_q=4, beta=0.5, iters=2, k=7)
    assert v.shape == (0, 7) and i.shape == (0, 7) and h.shape == (0, 3, 7)
