"""AQE, alpha-QE, DBA, ECN and SuperGlobal: parity with their dense oracles (with and without candidate lists),
properties, hand-computed cases and argument checks. (k-reciprocal: tests/test_k_reciprocal.py.)"""

import pytest
import torch

import _assertions
from icfrr_fast import GalleryGraph, reference
from icfrr_fast.rerankers import alpha_qe, aqe, dba, ecn, superglobal


def _data(G=200, Q=12, D=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(8, D, generator=gen)
    g = centres[torch.randint(0, 8, (G,), generator=gen)] + torch.randn(G, D, generator=gen)
    q = centres[torch.randint(0, 8, (Q,), generator=gen)] + torch.randn(Q, D, generator=gen)
    return torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1)


def _candidates(Q, G, L, seed=1):
    gen = torch.Generator().manual_seed(seed)
    c = torch.stack([torch.randperm(G, generator=gen)[:L] for _ in range(Q)])
    c[1, L - 3:] = -1
    c[2, L // 2:] = -1
    return c


def _assert_padded_equal(v, i, rv, ri):
    _assertions.assert_rankings_equal(i, ri)
    real = ri >= 0
    assert bool((v[~real] == rv[~real]).all())
    torch.testing.assert_close(v[real], rv[real], atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("top,alpha", [(1, 0.0), (5, 0.0), (5, 3.0), (10, 1.5)])
def test_alpha_qe_matches_oracle(top, alpha):
    q, g = _data(seed=top)
    v, i = alpha_qe(q, g, top=top, alpha=alpha, k=25, batch_size=5)
    rv, ri = reference.alpha_qe(q, g, top=top, alpha=alpha, k=25)
    _assertions.assert_knn_equal_with_ties(v, i, rv, ri, atol=1e-5, rtol=0)


def test_aqe_is_alpha_qe_with_alpha_zero():
    q, g = _data(seed=3)
    v, i = aqe(q, g, top=4, k=10)
    v2, i2 = alpha_qe(q, g, top=4, alpha=0.0, k=10)
    _assertions.assert_values_equal(v, v2)
    _assertions.assert_rankings_equal(i, i2)
    rv, ri = reference.aqe(q, g, top=4, k=10)
    _assertions.assert_knn_equal_with_ties(v, i, rv, ri, atol=1e-5, rtol=0)


@pytest.mark.parametrize("top,alpha", [(1, 0.0), (4, 0.0), (6, 3.0)])
def test_dba_matches_oracle(top, alpha):
    q, g = _data(seed=10 + top)
    v, i = dba(q, g, top=top, alpha=alpha, k=25, batch_size=17)
    rv, ri = reference.dba(q, g, top=top, alpha=alpha, k=25)
    _assertions.assert_knn_equal_with_ties(v, i, rv, ri, atol=1e-5, rtol=0)


@pytest.mark.parametrize("t,qn,depth", [(3, 8, 30), (1, 1, 5), (2, 5, 60)])
def test_ecn_matches_oracle_from_features(t, qn, depth):
    q, g = _data(seed=20 + t)
    v, i = ecn(q, g, t=t, q=qn, depth=depth, k=min(depth, 20))
    rv, ri = reference.ecn(q, g, t=t, q=qn, depth=depth, k=min(depth, 20))
    _assert_padded_equal(v, i, rv, ri)


def test_ecn_matches_oracle_on_candidate_lists_and_a_given_graph():
    q, g = _data(seed=30)
    cand = _candidates(12, 200, 25)
    graph = reference.knn_topk(g, g, 10, metric="l2", exclude_self=True)[1].to(torch.int32)
    v, i = ecn(q, g, candidates=cand, graph=GalleryGraph(graph), t=2, q=6)
    rv, ri = reference.ecn(q, g, candidates=cand, graph=graph, t=2, q=6)
    _assert_padded_equal(v, i, rv, ri)
    assert bool((i[2, 12:] == -1).all()) and bool(torch.isinf(v[2, 12:]).all())


@pytest.mark.parametrize("M,K,beta", [(40, 9, 0.15), (10, 0, 0.5), (25, 3, 0.0)])
def test_superglobal_matches_oracle_from_features(M, K, beta):
    q, g = _data(seed=40 + M)
    v, i = superglobal(q, g, M=M, K=K, beta=beta)
    rv, ri = reference.superglobal(q, g, M=M, K=K, beta=beta)
    _assert_padded_equal(v, i, rv, ri)


@pytest.mark.parametrize("M", [10, 25, 100])
def test_superglobal_matches_oracle_on_candidate_lists(M):
    q, g = _data(seed=50)
    cand = _candidates(12, 200, 25, seed=M)
    v, i = superglobal(q, g, candidates=cand, M=M, K=4, k=min(M, 25) - 2)
    rv, ri = reference.superglobal(q, g, candidates=cand, M=M, K=4, k=min(M, 25) - 2)
    _assert_padded_equal(v, i, rv, ri)


# ---------------------------------------------------------------------------------------------------- properties
def test_alpha_qe_hand_computed():
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    q = torch.tensor([[1.0, 0.0]])
    v, i = aqe(q, g, top=2, k=3)  # neighbours g0 (1.0), g2 (0.8): q' = normalise((2.8, 0.6))
    qn = torch.tensor([2.8, 0.6]) / torch.tensor([2.8, 0.6]).norm()
    torch.testing.assert_close(v[0], torch.sort(g @ qn, descending=True).values, atol=1e-6, rtol=0)
    assert i.tolist() == [[0, 2, 1]]
    v, _ = alpha_qe(q, g, top=2, alpha=2.0, k=3)  # weights 1, 0.64: q' = normalise((1 + 1 + 0.512, 0.384))
    qa = torch.tensor([2.512, 0.384]) / torch.tensor([2.512, 0.384]).norm()
    torch.testing.assert_close(v[0], torch.sort(g @ qa, descending=True).values, atol=1e-6, rtol=0)


def test_dba_invariant_to_gallery_permutation():
    q, g = _data(seed=60)
    v, i = dba(q, g, top=3, k=15)
    perm = torch.randperm(200)
    v2, i2 = dba(q, g[perm], top=3, k=15)
    # items whose neighbourhoods coincide get identical augmented descriptors: ties, broken by id
    _assertions.assert_knn_equal_with_ties(v2, perm[i2], v, i, atol=1e-6, rtol=0)


def test_ecn_reranks_exactly_the_candidates():
    q, g = _data(seed=70)
    cand = _candidates(12, 200, 20, seed=3)
    v, i = ecn(q, g, candidates=cand, t=2, q=3)
    for r in range(12):
        assert set(i[r][i[r] >= 0].tolist()) == set(cand[r][cand[r] >= 0].tolist())
    assert bool((v[:, 1:] >= v[:, :-1]).all())


def test_superglobal_refuses_weights_that_sum_to_zero_or_less():
    # unnormalised descriptors: the shortlist item -10 v has its best other neighbour 0.5 v at similarity -5, so its
    # refinement weights are 1 and 0.5 * (-5): they sum to -1.5
    v = torch.tensor([[1.0, 0.0]])
    gallery = torch.cat([v, -10 * v, 0.5 * v])
    with pytest.raises(ValueError, match="refinement weights .* sum to <= 0"):
        superglobal(v, gallery, M=3, K=1, beta=0.5)
    values, _ = superglobal(v, torch.nn.functional.normalize(gallery, dim=1), M=3, K=1, beta=0.5)  # accepted
    assert bool(torch.isfinite(values).all())


def test_superglobal_without_neighbours_is_the_hand_formula():
    # K = 0: d'_i = d_i, s1 = q . d_i, q' = the best d_i: final = (q . d_i + d_best . d_i) / 2
    q, g = _data(seed=80)
    v, i = superglobal(q, g, M=15, K=0, beta=0.3)
    for r in range(12):
        s = (g @ q[r]).double()
        short = torch.sort(s, descending=True, stable=True).indices[:15]
        best = g[short[0]].double()
        final = (s[short] + g[short].double() @ best) / 2
        torch.testing.assert_close(v[r].double(), torch.sort(final, descending=True).values, atol=1e-6, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    q, g = _data(seed=90)
    cand = _candidates(12, 200, 25)
    for f, kw in ((ecn, dict(candidates=cand, t=2, q=4)), (superglobal, dict(candidates=cand, M=20, K=4)),
                  (alpha_qe, dict(top=4, k=10)), (dba, dict(top=4, k=10))):
        v, i = f(q, g, **kw)
        kwc = {n: (a.cuda() if torch.is_tensor(a) else a) for n, a in kw.items()}
        vc, ic = f(q.cuda(), g.cuda(), **kwc)
        _assertions.assert_rankings_equal(ic.cpu(), i, f.__name__)


# ---------------------------------------------------------------------------------------------------- bad input
_q, _g = _data(G=30, Q=3, seed=99)
_c = _candidates(3, 30, 8)
BAD = [
    (alpha_qe, dict(top=0), ValueError, r"top must be in \[1, 30\]"),
    (alpha_qe, dict(alpha=-1.0), ValueError, "alpha must be finite and in >= 0.0"),
    (alpha_qe, dict(alpha=True), TypeError, "alpha must be a float"),
    (alpha_qe, dict(k=31), ValueError, r"k must be in \[1, 30\]"),
    (alpha_qe, dict(batch_size=0, k=10), ValueError, "batch_size must be in >= 1"),
    (aqe, dict(query=_q.int()), TypeError, "query must be a floating tensor"),
    (aqe, dict(gallery=_g[:, :5]), ValueError, "same feature dimension"),
    (aqe, dict(gallery=_g.clone().fill_(float("inf"))), ValueError, "gallery must be finite"),
    (dba, dict(top=30), ValueError, r"top must be in \[1, G - 1\] = \[1, 29\]"),
    (dba, dict(gallery=_g[:1]), ValueError, "gallery must hold at least 2"),
    (dba, dict(top=2.0), TypeError, "top must be an int"),
    (ecn, dict(t=0), ValueError, r"t must be in \[1, G - 1\] = \[1, 29\]"),
    (ecn, dict(q=30), ValueError, r"q must be in \[1, G - 1\] = \[1, 29\]"),
    (ecn, dict(depth=2, t=3), ValueError, r"depth must be in \[3, 30\]"),
    (ecn, dict(candidates=_c.float()), TypeError, "candidates must be an int32 or int64"),
    (ecn, dict(candidates=_c[:2]), ValueError, r"candidates must be \(Q, L\)"),
    (ecn, dict(candidates=_c.clone().fill_(31)), ValueError, r"candidates must be gallery ids in \[0, 29\]"),
    (ecn, dict(candidates=torch.tensor([[1, -1, 2]] * 3)), ValueError, "padding only at the end"),
    (ecn, dict(candidates=torch.tensor([[1, 1, 2]] * 3)), ValueError, "distinct within a row"),
    (ecn, dict(candidates=torch.tensor([[1, 2, -1]] * 3), t=3), ValueError, "at least t = 3 ids"),
    (ecn, dict(graph=torch.zeros(30, 2, dtype=torch.int32)), ValueError, r"graph must be \(G, K_g\)"),
    (ecn, dict(graph=torch.full((30, 8), 30)), ValueError, r"graph ids must be in \[0, 29\]"),
    (ecn, dict(graph=[[1]]), TypeError, "graph must be a GalleryGraph"),
    (ecn, dict(k=31, depth=30), ValueError, r"k must be in \[1, 30\]"),
    (superglobal, dict(M=0), ValueError, r"M must be in \[1, 30\]"),
    (superglobal, dict(K=-1, M=10), ValueError, "K must be in >= 0"),
    (superglobal, dict(beta=float("nan"), M=10), ValueError, "beta must be finite"),
    (superglobal, dict(candidates=_c, M=5, k=6), ValueError, r"k must be in \[1, 5\]"),
    (superglobal, dict(candidates=_c.clone().fill_(-1)), ValueError, "at least one gallery id"),
]


@pytest.mark.parametrize("case", range(len(BAD)), ids=[f"{b[0].__name__}-{i}" for i, b in enumerate(BAD)])
def test_bad_input(case):
    f, kwargs, exc, match = BAD[case]
    kwargs = dict(kwargs)
    if f is ecn and "depth" not in kwargs and "candidates" not in kwargs:
        kwargs["depth"] = 30
    query, gallery = kwargs.pop("query", _q), kwargs.pop("gallery", _g)
    with pytest.raises(exc, match=match):
        f(query, gallery, **kwargs)


@pytest.mark.parametrize("module", ["k_reciprocal", "query_expansion", "dba", "ecn", "superglobal"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"icfrr_fast.rerankers.{module}"))
    assert result.attempted > 0 and result.failed == 0
