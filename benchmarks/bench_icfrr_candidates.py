"""What do candidate lists as the kernel boundary save? ICFRR with depth L < G, CPU, both routes in one run.

Setting: G = 100,000 gallery items, Q = 256 queries, L = 1,000 candidates, K_g = 64, K_q = 100, beta = 0.5, T = 5,
semantics "reference"; float32 scores N(0, 1), a random graph (every row K_g distinct other items). The work that
differs between the routes is the initial order: a radix sort of all G scores per query (the dense core) or one
top-L selection pass plus O(L) (dense_topk + icfrr_candidates); the iterations are the same code.

Groups:
  dense scores:    ``icfrr_rerank(depth=L)`` = dense_topk + icfrr_candidates  vs  the dense core (sorts all G),
                   which was this op's CPU route before candidate lists.
  candidate lists: (Q, L) lists handed to ``icfrr_candidates`` (rows sorted, as a top-k returns them, or shuffled)
                   vs  scattering them into a (Q, G) row with a filler and the dense core with depth L, which was
                   ``ICFRRIndex.search(depth=L)``'s route.
Every provider's result is checked bit-identical to the others.

Run:  pytest benchmarks/bench_icfrr_candidates.py --benchmark-enable -p no:cacheprovider
"""

from __future__ import annotations

import pytest
import torch

from icfrr_fast import _native, ops

G, Q, L, K_G, K_Q, BETA, T = 100_000, 256, 1_000, 64, 100, 0.5, 5
GROUP_DENSE = f"dense scores, depth L < G: G={G} Q={Q} L={L} K_g={K_G} K_q={K_Q} T={T}"
GROUP_CAND = f"(Q, L) candidate lists: G={G} Q={Q} L={L} K_g={K_G} K_q={K_Q} T={T}"


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(Q, G, generator=gen)
    nbr = torch.randint(0, G - 1, (G, K_G), generator=gen, dtype=torch.int32)
    nbr = torch.where(nbr >= torch.arange(G, dtype=torch.int32)[:, None], nbr + 1, nbr)  # never itself
    cv, ci = ops.dense_topk(scores, L, True, False, 0)
    perm = torch.stack([torch.randperm(L, generator=gen) for _ in range(Q)])
    return scores, nbr, cv, ci, cv.gather(1, perm), ci.gather(1, perm)


def _dense_core(scores: torch.Tensor, nbr: torch.Tensor, depth: int):
    """The dense per-query core called directly (radix sort of all G scores, top-``depth`` kept)."""
    values = torch.empty(Q, L, dtype=torch.float32)
    indices = torch.empty(Q, L, dtype=torch.int64)
    _native.load().icfrr_rerank(
        scores=scores.data_ptr(), scores_is_double=False, score_stride=scores.stride(0), largest=True,
        neighbors=nbr.data_ptr(), nbr_stride=nbr.stride(0), Q=Q, G=G, K_g=K_G, k_q=K_Q, beta=BETA, iters=T,
        paper=False, depth=depth, k=L, early_stop=False, out_values=values.data_ptr(),
        out_indices=indices.data_ptr(), out_history=0, num_threads=_native.get_num_threads())
    return values, indices


def _scattered(cv: torch.Tensor, ci: torch.Tensor) -> torch.Tensor:
    """(Q, G) scores whose top-L are the candidates; every other item gets a finite value worse than all of them."""
    s = torch.full((Q, G), -torch.finfo(cv.dtype).max, dtype=cv.dtype)
    return s.scatter_(1, ci, cv)


def _check(got, want):
    assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0]), "routes differ"


@pytest.mark.parametrize("provider", ["dense_topk + icfrr_candidates", "dense core"])
def test_dense_scores(benchmark, record, data, provider):
    scores, nbr = data[0], data[1]
    benchmark.group = GROUP_DENSE
    record(provider, baseline=provider == "dense core")
    if provider == "dense core":
        run = lambda: _dense_core(scores, nbr, L)  # noqa: E731
    else:
        run = lambda: ops.icfrr_rerank(scores, nbr, K_Q, BETA, T, "reference", True, L, L, False, False)  # noqa: E731
    got = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    _check(got, _dense_core(scores, nbr, L))


@pytest.mark.parametrize("provider", ["icfrr_candidates (sorted rows)", "icfrr_candidates (shuffled rows)",
                                      "scatter to (Q, G) + dense core"])
def test_candidate_lists(benchmark, record, data, provider):
    _, nbr, cv, ci, sv, si = data
    benchmark.group = GROUP_CAND
    record(provider, baseline=provider.startswith("scatter"))
    if provider.startswith("scatter"):
        run = lambda: _dense_core(_scattered(cv, ci), nbr, L)  # noqa: E731
    else:
        v, i = (cv, ci) if "sorted" in provider else (sv, si)
        run = lambda: ops.icfrr_candidates(v, i, nbr, G, K_Q, BETA, T, "reference", True, L, False, False)  # noqa: E731
    got = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    _check(got[:2], _dense_core(_scattered(cv, ci), nbr, L))
