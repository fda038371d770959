"""Triton ICFRR kernels run eagerly under TRITON_INTERPRET=1 (conftest.py) on CPU tensors, against the CPU op (the
shared C++ core) and the reference: identical orders, identical float32 values, identical history, bit for bit.

Shapes are tiny (the interpreter runs every program in Python) but chosen so that every mask and loop is exercised:
sizes off the power-of-two blocks, several vote blocks and rank chunks, more queries than programs (per-program
scratch reused, hash table emptied between queries), query batches, both semantics, depth < G, k < L, k_q > L,
K_g = G - 1, iters = 0, early stop, distances, float64 and tied scores.
"""

from __future__ import annotations

import pytest
import torch
import triton  # noqa: F401  -- no skip: without triton these tests must fail, not vanish

from icfrr_fast import ops, reference
from icfrr_fast.testing import cross_domain_features
from icfrr_fast.triton import icfrr_candidates as tric
from icfrr_fast.triton import icfrr_rerank as tri
from _assertions import assert_rankings_equal, assert_values_equal


def _graph(G: int, K: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(G, 3, generator=gen, dtype=torch.float64)
    return reference.dense_topk(torch.cdist(g, g), K, largest=False, exclude_self=True)[1].to(torch.int32)


def _scores(Q: int, G: int, seed: int, dtype=torch.float32, tied: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if tied:  # few distinct values: exact ties in the initial order and in the keys
        return torch.randint(0, 4, (Q, G), generator=gen).to(dtype)
    return torch.randn(Q, G, generator=gen, dtype=torch.float64).to(dtype)


def _run_both(scores, nbr, *, k_q, beta, iters, semantics="reference", largest=True, depth=None, k=None,
              history=True, early_stop=False, batch=None):
    G = scores.shape[1]
    depth = depth or G
    k = k or depth
    args = (k_q, beta, iters, semantics, largest, depth, k, history, early_stop)
    got = tri.icfrr_rerank_triton(scores, nbr, *args, batch=batch, alloc=ops.alloc_output)
    want = ops.icfrr_rerank(scores, nbr, *args)  # CPU tensors: the C++ kernel
    return got, want


def _assert_same(got, want):
    assert_rankings_equal(got[1], want[1], "indices")
    # the Triton kernel writes float32 keys; the op returns the scores' dtype (float64 keys for float64 scores)
    assert_values_equal(got[0], want[0].to(got[0].dtype), "values")
    assert_rankings_equal(got[2], want[2], "history")


CASES = [
    pytest.param(dict(Q=2, G=37, K_g=5, k_q=20, beta=0.5, iters=3), id="G=37-three-vote-blocks"),
    pytest.param(dict(Q=5, G=45, K_g=7, k_q=5, beta=0.9, iters=4, semantics="paper", largest=False, depth=20, k=9),
                 id="paper-distances-depth=20-k=9"),
    pytest.param(dict(Q=2, G=25, K_g=24, k_q=40, beta=2.0, iters=3, k=10, early_stop=True),
                 id="early-stop-kq>L-Kg=G-1"),
    pytest.param(dict(Q=1, G=2, K_g=1, k_q=1, beta=0.5, iters=0), id="G=2-iters=0"),
    pytest.param(dict(Q=3, G=30, K_g=6, k_q=8, beta=0.25, iters=3, semantics="paper", dtype=torch.float64, tied=True),
                 id="paper-float64-tied"),
    pytest.param(dict(Q=2, G=80, K_g=70, k_q=3, beta=0.5, iters=2, depth=50), id="Kg=70-two-rank-chunks"),
]


@pytest.mark.parametrize("case", CASES)
def test_icfrr_rerank_triton_matches_cpu(case):
    case = dict(case)
    Q, G, K_g = case.pop("Q"), case.pop("G"), case.pop("K_g")
    scores = _scores(Q, G, seed=G, dtype=case.pop("dtype", torch.float32), tied=case.pop("tied", False))
    got, want = _run_both(scores, _graph(G, K_g, seed=K_g), **case)
    _assert_same(got, want)


def test_icfrr_rerank_triton_clustered_batches():
    """Clustered cross-domain features, where re-ranking moves items; 5 queries in batches of 2 (concatenation) on
    2 programs (each program re-ranks several queries with the same scratch)."""
    data = cross_domain_features(5, 48, dim=16, num_classes=4, seed=3)
    scores = data.queries @ data.gallery.T
    gg = data.gallery @ data.gallery.T
    nbr = reference.dense_topk(gg, 8, largest=True, exclude_self=True)[1].to(torch.int32)
    got, want = _run_both(scores, nbr, k_q=6, beta=0.5, iters=3, batch=2)
    _assert_same(got, want)
    assert not torch.equal(want[2][:, 0], want[2][:, -1]), "the data should make ICFRR change some orders"


def test_icfrr_candidates_triton_from_sorted_candidates():
    """The second stage alone, fed with (Q, L) candidates as the fused k-NN produces them (best first, ids int64,
    rows_sorted): the same result as the dense op with depth L."""
    Q, G, L = 4, 40, 24
    scores = _scores(Q, G, seed=7)
    nbr = _graph(G, 6, seed=8)
    cv, ci = reference.dense_topk(scores.to(torch.float64), L)
    got = tric.icfrr_candidates_triton(cv, ci, nbr, G, 7, 0.5, 3, "reference", True, 12, True, False,
                                       rows_sorted=True, out_dtype=torch.float32, alloc=ops.alloc_output)
    want = ops.icfrr_rerank(scores, nbr, 7, 0.5, 3, "reference", True, L, 12, True, False)
    _assert_same(got, want)


def test_icfrr_candidates_triton_rejects_too_deep():
    cv = torch.zeros(1, tric.MAX_DEPTH + 1, dtype=torch.float64)
    ci = torch.arange(tric.MAX_DEPTH + 1)[None]
    with pytest.raises(ValueError, match="at most 4096 candidates"):
        tric.icfrr_candidates_triton(cv, ci, torch.zeros(tric.MAX_DEPTH + 2, 1, dtype=torch.int32),
                                     tric.MAX_DEPTH + 2, 1, 0.5, 1, "reference", True, 1, False, False)


def test_icfrr_limits_agree_with_ops():
    """ops chooses the Triton path without importing triton, from constants that must match the kernels'."""
    from icfrr_fast.triton import dense_topk, knn_topk

    assert ops.TRITON_MAX_DEPTH == tri.MAX_DEPTH == tric.MAX_DEPTH
    assert ops.TRITON_MAX_K == dense_topk.MAX_K == knn_topk.MAX_K
    assert knn_topk.METRICS == ops.KNN_METRICS
