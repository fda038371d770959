"""Million-item scale: a 10^6-item gallery (D = 128) gallery graph built by the fused k-NN with bounded memory, and
ICFRR over that graph for 1,000 queries with depth=None (all 10^6 candidates re-ranked, exact).

Each workload runs in its own process (benchmarks/_scale_worker.py) so that its peak RSS is measured alone; the
numbers go to ``extra_info`` (seconds, peak_rss_gb). Marked slow: the build is 2.6e14 FLOP (tens of minutes on
2 cores). Data and the built index are cached in $ICFRR_SCALE_DIR (default benchmarks/.scale_cache).

    pytest benchmarks/bench_scale.py --benchmark-enable -m slow -s \
        --benchmark-json=benchmarks/results/scale-$(hostname).json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

WORKER = os.path.join(os.path.dirname(__file__), "_scale_worker.py")
DIR = os.environ.get("ICFRR_SCALE_DIR", os.path.join(os.path.dirname(__file__), ".scale_cache"))
G, D, Q, K_G = 1_000_000, 128, 1000, 256


def _run(*args) -> dict:
    res = subprocess.run([sys.executable, WORKER, *args, DIR], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _prepare() -> None:
    if not os.path.exists(os.path.join(DIR, "queries.npy")):
        _run("prepare", "--G", str(G), "--D", str(D), "--Q", str(Q))


@pytest.mark.slow
def test_graph_build_1e6(benchmark):
    _prepare()
    benchmark.group = f"scale: gallery graph G={G} D={D} k_g={K_G} (metric l2)"
    out = benchmark.pedantic(lambda: _run("build", "--k-g", str(K_G)), rounds=1, iterations=1)
    benchmark.extra_info.update(out)
    assert out["peak_rss_gb"] < 4.0, f"peak RSS {out['peak_rss_gb']:.2f} GB"


@pytest.mark.slow
def test_icfrr_search_1e6(benchmark):
    _prepare()
    if not os.path.exists(os.path.join(DIR, "index.pth")):
        _run("build", "--k-g", str(K_G))
    benchmark.group = f"scale: ICFRR search Q={Q} over G={G} (depth=None, k_q=250, T=5)"
    out = benchmark.pedantic(lambda: _run("search", "--k", "100"), rounds=1, iterations=1)
    benchmark.extra_info.update(out)
