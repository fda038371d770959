"""k-reciprocal re-ranking: the sparse implementation against the dense oracle (bit for bit on the dense-distance
path), against an independent float32 numpy rendering of the shared re-ID function's published steps, properties,
and every argument check."""

import importlib

import numpy as np
import pytest
import torch

import _assertions
from icfrr_fast import reference
from icfrr_fast.rerankers import k_reciprocal, k_reciprocal_features

kr_module = importlib.import_module("icfrr_fast.rerankers.k_reciprocal")


def _clustered(n: int, d: int, classes: int = 6, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(classes, d, generator=gen)
    return centres[torch.randint(0, classes, (n,), generator=gen)] + torch.randn(n, d, generator=gen)


def _distances(Q: int, G: int, d: int = 8, seed: int = 0):
    x = _clustered(Q + G, d, seed=seed)
    q, g = x[:Q], x[Q:]
    return q, g, torch.cdist(q, g), torch.cdist(q, q), torch.cdist(g, g)


def _shared_numpy(q_g, q_q, g_g, k1, k2, lam):
    """The shared re-ID function's steps as published, in numpy float32 (own rendering, stable argsort): returns the
    (Q, G) final distance matrix."""
    Q, G = q_g.shape
    N = Q + G
    full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32) ** 2
    original = (full / full.max(axis=0)).T  # columns divided by their maximum, read as rows
    rank = np.argsort(original, axis=1, kind="stable")

    def recip(i, width):
        fwd = rank[i, :width]
        return fwd[[i in rank[j, :width] for j in fwd]]

    V = np.zeros((N, N), dtype=np.float32)
    half = int(np.around(k1 / 2.0)) + 1
    for i in range(N):
        r = recip(i, k1 + 1)
        exp = list(r)
        for c in r:
            rc = recip(c, half)
            if len(np.intersect1d(rc, r)) > 2.0 / 3.0 * len(rc):
                exp.extend(rc)
        exp = np.unique(np.array(exp))
        w = np.exp(-original[i, exp])
        V[i, exp] = w / np.sum(w)
    if k2 != 1:
        V = np.stack([V[rank[i, :k2]].mean(axis=0) for i in range(N)]).astype(np.float32)
    jac = np.zeros((Q, N), dtype=np.float32)
    for i in range(Q):
        t = np.minimum(V[i][None, :], V).sum(axis=1)
        jac[i] = 1.0 - t / (2.0 - t)
    return ((1 - lam) * jac + lam * original[:Q])[:, Q:]


@pytest.mark.parametrize("Q,G,k1,k2,lam", [(6, 40, 6, 3, 0.3), (10, 60, 20, 6, 0.3), (5, 30, 3, 1, 0.0),
                                           (8, 50, 5, 10, 1.0), (4, 25, 30, 2, 0.5)])
@pytest.mark.parametrize("k", [None, 5])
def test_dense_matches_oracle_bit_for_bit(Q, G, k1, k2, lam, k):
    _, _, qg, qq, gg = _distances(Q, G, seed=Q + G)
    v, i = k_reciprocal(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam, k=k)
    rv, ri = reference.k_reciprocal(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam, k=k)
    _assertions.assert_rankings_equal(i, ri)
    _assertions.assert_values_equal(v, rv)


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (6, 1, 0.5), (4, 3, 0.0)])
def test_matches_shared_function_float32(k1, k2, lam):
    _, _, qg, qq, gg = _distances(8, 50, seed=3)
    expected = torch.from_numpy(_shared_numpy(qg.numpy(), qq.numpy(), gg.numpy(), k1, k2, lam))
    v, i = k_reciprocal(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    torch.testing.assert_close(v, torch.gather(expected, 1, i), atol=1e-5, rtol=0)
    # same order: the shared function's matrix, sorted (no near-ties on this data: checked below)
    s = torch.sort(expected, dim=1, stable=True)
    assert float((s.values[:, 1:] - s.values[:, :-1]).min()) > 1e-6 or lam == 0.0
    if lam > 0:
        _assertions.assert_rankings_equal(i, s.indices)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("Q,G,k1,k2,k", [(6, 40, 6, 3, 7), (10, 70, 20, 6, 12), (3, 20, 4, 1, 20)])
def test_features_match_oracle(metric, Q, G, k1, k2, k):
    x = _clustered(Q + G, 12, seed=G)
    v, i = k_reciprocal_features(x[:Q], x[Q:], metric=metric, k1=k1, k2=k2, k=k)
    rv, ri = reference.k_reciprocal_features(x[:Q], x[Q:], metric=metric, k1=k1, k2=k2, k=k)
    _assertions.assert_knn_equal_with_ties(v, i, rv, ri, atol=1e-5, rtol=0)


def test_features_agree_with_dense_path_on_the_same_distances():
    q, g, *_ = _distances(6, 40, seed=5)
    v, i = k_reciprocal_features(q, g, k1=8, k2=4, k=10)
    x = torch.cat([q, g])
    d = torch.cdist(x.double(), x.double())
    d.fill_diagonal_(0.0)
    rv, ri = k_reciprocal(d[:6, 6:], d[:6, :6], d[6:, 6:], k1=8, k2=4, k=10)
    _assertions.assert_knn_equal_with_ties(v, i, rv, ri, atol=1e-5, rtol=0)


def test_lambda_one_is_the_original_order_and_k_is_a_prefix():
    _, _, qg, qq, gg = _distances(7, 45, seed=1)
    v, i = k_reciprocal(qg, qq, gg, k1=5, k2=3, lambda_value=1.0)
    _assertions.assert_rankings_equal(i, torch.sort(qg, dim=1, stable=True).indices)
    v5, i5 = k_reciprocal(qg, qq, gg, k1=5, k2=3, lambda_value=0.3, k=5)
    vall, iall = k_reciprocal(qg, qq, gg, k1=5, k2=3, lambda_value=0.3)
    _assertions.assert_rankings_equal(i5, iall[:, :5])
    assert bool((vall[:, 1:] >= vall[:, :-1]).all())
    assert bool((vall >= 0).all()) and bool((vall <= 1).all())


def test_invariant_to_scale_and_gallery_permutation():
    _, _, qg, qq, gg = _distances(5, 40, seed=2)
    v, i = k_reciprocal(qg, qq, gg, k1=6, k2=3)
    v2, i2 = k_reciprocal(2 * qg, 2 * qq, 2 * gg, k1=6, k2=3)  # rows are normalised by their maximum
    _assertions.assert_rankings_equal(i2, i)
    _assertions.assert_values_equal(v2, v)
    perm = torch.randperm(40)
    v3, i3 = k_reciprocal(qg[:, perm], qq, gg[perm][:, perm], k1=6, k2=3)
    _assertions.assert_rankings_equal(perm[i3], i)
    torch.testing.assert_close(v3, v, atol=1e-6, rtol=0)


def test_ties_go_to_the_original_distance_then_the_smaller_id():
    # lambda = 0: every gallery item sharing nothing with a query has J = 1; they come in original-distance order
    _, _, qg, qq, gg = _distances(4, 30, seed=4)
    v, i = k_reciprocal(qg, qq, gg, k1=2, k2=1, lambda_value=0.0)
    for q in range(4):
        ones = (v[q] == 1.0).nonzero().squeeze(1)
        ids = i[q, ones]
        assert bool((qg[q, ids][1:] >= qg[q, ids][:-1]).all())


def test_memory_is_sparse(monkeypatch):
    # the features path never builds a dense score matrix: no knn_scores call, and every k-NN call returns at most
    # max(k1 + 1, k2) or the per-query list length columns
    q, g, *_ = _distances(20, 200, seed=6)
    calls = []
    real = kr_module.ops.knn_topk

    def spy(x, y, k, *args, **kwargs):
        calls.append(k)
        return real(x, y, k, *args, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("knn_scores called")

    monkeypatch.setattr(kr_module.ops, "knn_topk", spy)
    monkeypatch.setattr(kr_module.ops, "knn_scores", forbidden)
    monkeypatch.setattr(kr_module, "_list_length", lambda k, G: min(G, k + 5))
    k_reciprocal_features(q, g, k1=6, k2=3, k=10)
    assert sorted(calls) == [1, 6, 15]


@pytest.mark.parametrize("extra", [0, 1, 4])
def test_short_candidate_lists_give_the_same_top_k(monkeypatch, extra):
    # the final top-k from a list of the k + extra nearest plus the overlapping items it cannot exclude (the
    # pruning bound) equals the full re-ranking's first k
    monkeypatch.setattr(kr_module, "_list_length", lambda k, G: min(G, k + extra))
    q, g, qg, qq, gg = _distances(8, 60, seed=9)
    for lam in (0.0, 0.3, 0.9):
        v, i = k_reciprocal(qg, qq, gg, k1=6, k2=3, lambda_value=lam, k=6)
        rv, ri = reference.k_reciprocal(qg, qq, gg, k1=6, k2=3, lambda_value=lam, k=6)
        _assertions.assert_rankings_equal(i, ri)
        _assertions.assert_values_equal(v, rv)
        v, i = k_reciprocal_features(q, g, k1=6, k2=3, lambda_value=lam, k=6)
        rv, ri = reference.k_reciprocal_features(q, g, k1=6, k2=3, lambda_value=lam, k=6)
        _assertions.assert_knn_equal_with_ties(v, i, rv, ri, atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    _, _, qg, qq, gg = _distances(6, 40, seed=7)
    v, i = k_reciprocal(qg, qq, gg, k1=6, k2=3, k=10)
    vc, ic = k_reciprocal(qg.cuda(), qq.cuda(), gg.cuda(), k1=6, k2=3, k=10)
    _assertions.assert_rankings_equal(ic.cpu(), i)
    _assertions.assert_values_equal(vc.cpu(), v)


def _bad_calls():
    _, _, qg, qq, gg = _distances(3, 10, d=4, seed=8)
    x = torch.randn(13, 4)
    nan = qg.clone()
    nan[0, 0] = float("nan")
    return [
        (dict(q_g=qg.numpy()), TypeError, "q_g must be a torch.Tensor"),
        (dict(q_q=qq.long()), TypeError, "q_q must be a floating tensor"),
        (dict(g_g=gg[:5]), ValueError, r"g_g must be \(G, G\)"),
        (dict(q_q=qq[:, :2]), ValueError, r"q_q must be \(Q, Q\)"),
        (dict(q_g=nan), ValueError, "q_g must be finite"),
        (dict(k1=0), ValueError, r"k1 must be in >= 1"),
        (dict(k1=2.0), TypeError, "k1 must be an int"),
        (dict(k2=0), ValueError, r"k2 must be in >= 1"),
        (dict(lambda_value=1.5), ValueError, r"lambda_value must be finite and in \[0.0, 1.0\]"),
        (dict(lambda_value="a"), TypeError, "lambda_value must be a float"),
        (dict(k=11), ValueError, r"k must be in \[1, 10\]"),
        (dict(q_g=torch.zeros(3, 10), q_q=torch.zeros(3, 3), g_g=torch.zeros(10, 10)), ValueError,
         "all its squared distances equal to 0"),
        (dict(features=True, query=x[:3], gallery=x[3:, :3]), ValueError, "same feature dimension"),
        (dict(features=True, query=x[:3], gallery=x[3:], metric="ip"), ValueError, "metric must be one of"),
        (dict(features=True, query=x[:3], gallery=x[3:], k=11), ValueError, r"k must be in \[1, 10\]"),
        (dict(features=True, query=x[:3].int(), gallery=x[3:]), TypeError, "query must be a floating tensor"),
    ], (qg, qq, gg, x)


@pytest.mark.parametrize("case", range(16))
def test_bad_input(case):
    cases, (qg, qq, gg, x) = _bad_calls()
    kwargs, exc, match = cases[case]
    kwargs = dict(kwargs)
    with pytest.raises(exc, match=match):
        if kwargs.pop("features", False):
            args = dict(query=kwargs.pop("query"), gallery=kwargs.pop("gallery"))
            k_reciprocal_features(**args, **kwargs)
        else:
            mats = dict(q_g=kwargs.pop("q_g", qg), q_q=kwargs.pop("q_q", qq), g_g=kwargs.pop("g_g", gg))
            k_reciprocal(mats["q_g"], mats["q_q"], mats["g_g"], **kwargs)
