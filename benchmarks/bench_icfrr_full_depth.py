"""Full depth at G = 10^6: is ICFRR cheaper than just sorting the score rows?

Setting: G = 1,000,000 gallery items, Q = 200 queries, K_g = 64, K_q = 250, beta = 0.5, T = 5, k = 100, depth = G
(``depth=None``: every item is a candidate), semantics "reference" and "paper", float32 scores (standard normal),
2 threads. The gallery graph is RANDOM: row i holds 64 distinct other items at random offsets (no feature data at
this size here); random graphs are the hard case for this kernel (the voted items are spread over the whole list).

Providers, in one run (only ratios from one run are quoted; the machine is shared):
  * torch.sort      - the baseline: ``torch.sort(rows, dim=1, descending=True, stable=True)`` of the same (Q, G)
                      rows (stable: the order an exact initial ranking needs), 25 rows at a time to bound memory;
  * touched-set     - icfrr_rerank as dispatched by default (csrc/include/icfrr/icfrr_rerank_full.h);
  * merge kernel    - the previous full-depth kernel (csrc/include/icfrr/icfrr_rerank_core.h), forced through the
                      hidden switch ``_C.set_full_depth_path(2)``.
Both kernels' outputs are checked to be identical.

Run:  pytest benchmarks/bench_icfrr_full_depth.py --benchmark-enable -p no:cacheprovider
"""

from __future__ import annotations

import subprocess

import pytest
import torch

import icfrr_fast
from icfrr_fast import _native, ops

G, Q, K_G, K_Q, BETA, T, K, THREADS, CHUNK = 1_000_000, 200, 64, 250, 0.5, 5, 100, 2, 25
GROUP = f"full depth: G={G} Q={Q} K_g={K_G} (random graph) K_q={K_Q} T={T} k={K} threads={THREADS}"
SEMANTICS = ["reference", "paper"]


def _cpu_flags() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = info.get("Flags", "").split()
    keep = [f for f in flags if f.startswith(("avx", "sse4", "fma", "bmi"))]
    return f"{info.get('Model name', '').strip()}; {' '.join(keep)}"


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(Q, G, generator=gen)
    # row i: 64 distinct items i + o_1 < ... < i + o_64 (mod G), o_r cumulative random steps in [1, G / 64)
    steps = torch.randint(1, G // K_G, (G, K_G), generator=gen)
    offsets = torch.cumsum(steps, dim=1) % (G - 1) + 1
    neighbors = ((torch.arange(G)[:, None] + offsets) % G).to(torch.int32)
    return scores, neighbors


@pytest.fixture(scope="module")
def results():
    return {}


def _extra(benchmark, record, provider, baseline=False):
    record(provider, baseline=baseline, cpu_flags=_cpu_flags(), kernel_threads=THREADS,
           torch_threads=torch.get_num_threads(), graph="random, 64 distinct other items per row")
    benchmark.group = GROUP


def test_torch_sort(benchmark, record, data):
    scores, _ = data
    _extra(benchmark, record, "torch.sort (stable, same rows)", baseline=True)
    torch.set_num_threads(THREADS)

    def run():
        for start in range(0, Q, CHUNK):
            torch.sort(scores[start:start + CHUNK], dim=1, descending=True, stable=True)

    benchmark.pedantic(run, rounds=1, iterations=1)


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("path", [0, 2], ids=["touched-set", "merge kernel"])
def test_icfrr_full_depth(benchmark, record, data, results, semantics, path):
    scores, neighbors = data
    _extra(benchmark, record, f"icfrr {semantics} ({'touched-set' if path == 0 else 'merge kernel'})")
    icfrr_fast.set_num_threads(THREADS)
    C = _native.load()
    C.set_full_depth_path(path)
    try:
        out = benchmark.pedantic(lambda: ops.icfrr_rerank(scores, neighbors, K_Q, BETA, T, semantics, True, G, K,
                                                          False, False), rounds=1, iterations=1)
    finally:
        C.set_full_depth_path(0)
        icfrr_fast.set_num_threads(None)
    other = results.setdefault(semantics, out)
    assert all(torch.equal(a, b) for a, b in zip(out, other)), "the two full-depth kernels differ"
