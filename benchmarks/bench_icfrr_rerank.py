"""How much faster is icfrr_fast than the plain algorithm (icfrr_fast.reference), end to end from dense distances?

The setting: G = 10,000 gallery, Q = 500 queries, K_g = 256, K_q = 250, beta = 0.5, T = 5, semantics
"reference", inputs = dense (Q, G) and (G, G) Euclidean distance matrices (the released code's cache format),
features from icfrr_fast.testing.cross_domain_features (clustered, 100 classes, D = 64).

Work count (the floor): votes Q T K_q K_g = 1.6e8 integer updates; the dense inputs are 4e8 + 2e7 bytes, read once.
The reference does Q T K_q G = 1.25e10 gathers plus a full sort per query and iteration, and sorts every row of gg.

Run:  pytest benchmarks/bench_icfrr_rerank.py --benchmark-enable -p no:cacheprovider
(ICFRR_BENCH_REF_QUERIES=N times the reference on the first N queries only and scales by Q / N; default: all.)
"""

from __future__ import annotations

import os

import pytest
import torch

import icfrr_fast
from icfrr_fast import GalleryGraph, icfrr, ops, reference
from icfrr_fast.testing import cross_domain_features

G, Q, K_G, K_Q, BETA, T = 10_000, 500, 256, 250, 0.5, 5
GROUP_E2E = f"end to end from dense distances: G={G} Q={Q} K_g={K_G} K_q={K_Q} T={T}"
GROUP_KERNEL = f"ICFRR iterations only (graph given): G={G} Q={Q} K_g={K_G} K_q={K_Q} T={T}"
GROUP_GRAPH = f"gallery graph from a dense G x G matrix: G={G} K_g={K_G}"


@pytest.fixture(scope="module")
def data():
    d = cross_domain_features(Q, G, 64, 100, spread=1.0, seed=0)
    qg = torch.cdist(d.queries, d.gallery)
    gg = torch.cdist(d.gallery, d.gallery)
    graph = GalleryGraph.from_distances(gg, K_G)
    ref_nb = reference.dense_topk(gg, K_G, largest=False, exclude_self=True)[1]
    assert torch.equal(graph.neighbors.long(), ref_nb), "graph differs from the reference"
    return qg, gg, graph


def _ref_queries() -> int:
    return min(Q, int(os.environ.get("ICFRR_BENCH_REF_QUERIES", Q)))


def _check_against_reference(qg, gg, fast):
    n = min(20, Q)
    nb = reference.dense_topk(gg, K_G, largest=False, exclude_self=True)[1]
    want = reference.icfrr_rerank(qg[:n], nb, k_q=K_Q, beta=BETA, iters=T, largest=False)
    assert torch.equal(fast.indices[:n], want[1]), "icfrr_fast differs from the reference"


def test_end_to_end_icfrr_fast(benchmark, record, data):
    qg, gg, _ = data
    benchmark.group = GROUP_E2E
    record("icfrr_fast")
    res = benchmark.pedantic(lambda: icfrr(qg, gg, k_g=K_G, k_q=K_Q, beta=BETA, iters=T, largest=False),
                             rounds=3, iterations=1, warmup_rounds=1)
    _check_against_reference(qg, gg, res)


def test_end_to_end_reference(benchmark, record, data):
    qg, gg, _ = data
    n = _ref_queries()
    benchmark.group = GROUP_E2E
    record("reference", baseline=True, reference_queries=n)

    def run():
        nb = reference.dense_topk(gg, K_G, largest=False, exclude_self=True)[1]
        reference.icfrr_rerank(qg[:n], nb, k_q=K_Q, beta=BETA, iters=T, largest=False)

    if n < Q:  # graph once, then the per-query loop (linear in Q) on n queries, scaled to Q
        import time

        t0 = time.perf_counter()
        nb = reference.dense_topk(gg, K_G, largest=False, exclude_self=True)[1]
        t_graph = time.perf_counter() - t0
        benchmark.pedantic(lambda: reference.icfrr_rerank(qg[:n], nb, k_q=K_Q, beta=BETA, iters=T, largest=False),
                           rounds=1, iterations=1)
        benchmark.extra_info["seconds"] = t_graph + benchmark.stats.stats.median * Q / n
    else:
        benchmark.pedantic(run, rounds=1, iterations=1)


@pytest.mark.parametrize("threads", [None, 1], ids=["threads=all", "threads=1"])
def test_kernel_icfrr_fast(benchmark, record, data, threads):
    qg, _, graph = data
    icfrr_fast.set_num_threads(threads)
    nb = graph.neighbors
    args = (qg, nb, K_Q, BETA, T, "reference", False, G, G, False, False)
    record(f"icfrr_fast ({'all' if threads is None else threads} threads)")
    benchmark.group = GROUP_KERNEL
    benchmark.pedantic(lambda: ops.icfrr_rerank(*args), rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["metric_updates_per_ns"] = Q * T * K_Q * K_G / benchmark.stats.stats.median / 1e9
    icfrr_fast.set_num_threads(None)


def test_kernel_reference(benchmark, record, data):
    """The reference's per-query loop is linear in Q: it is timed on 50 queries and scaled to Q (recorded as
    extra_info["seconds"], which the summary uses)."""
    qg, _, graph = data
    n = min(_ref_queries(), 50)
    nb = graph.neighbors.long()
    record(f"reference ({n} queries, scaled)", baseline=True, reference_queries=n)
    benchmark.group = GROUP_KERNEL
    benchmark.pedantic(lambda: reference.icfrr_rerank(qg[:n], nb, k_q=K_Q, beta=BETA, iters=T, largest=False),
                       rounds=1, iterations=1)
    benchmark.extra_info["seconds"] = benchmark.stats.stats.median * Q / n


@pytest.mark.parametrize("provider", ["icfrr_fast", "torch.topk", "reference"])
def test_graph_from_dense(benchmark, record, data, provider):
    _, gg, _ = data
    benchmark.group = GROUP_GRAPH
    record(provider, baseline=provider == "reference")
    if provider == "icfrr_fast":
        benchmark.pedantic(lambda: ops.dense_topk(gg, K_G, False, True, 0), rounds=3, iterations=1,
                           warmup_rounds=1)
    elif provider == "torch.topk":  # self excluded by masking the diagonal, as a user would
        def run():
            m = gg.clone()
            m.fill_diagonal_(float("inf"))
            return torch.topk(m, K_G, dim=1, largest=False, sorted=True)

        benchmark.pedantic(run, rounds=1, iterations=1)
    else:
        benchmark.pedantic(lambda: reference.dense_topk(gg, K_G, largest=False, exclude_self=True), rounds=1,
                           iterations=1)
