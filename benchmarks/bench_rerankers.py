"""The re-rankers (icfrr_fast.rerankers) against their dense oracles (icfrr_fast.reference), which compute each
method the way its published implementation does (N x N or Q x G matrices, full sorts, per-row loops).

Groups (ratios from one run; each workload runs in its own process, ``_rerankers_worker.py``, so that its peak
resident memory above its inputs is its own):

* ``k_reciprocal market``: Market-1501 size (Q = 3,368, G = 19,732, D = 2,048), from the dense distances re-ID code
  passes (q_g, q_q, g_g), full re-ranked output. The oracle needs (Q + G)^2 float32 = 2.1 GB per matrix and holds
  about eight of them (original, ranks (int64), V, V_qe, ...): it runs at ``BENCH_MARKET_FRACTION`` (default 0.2)
  of Q and G, and its time and peak memory are scaled by 1 / fraction^2 (its argsort and its dense rows are
  O(N^2); the scaled figure slightly under-states it). The sparse code runs at the same fraction (the measured
  ratio) and at full size.
* ``k_reciprocal msmt17``: MSMT17 size (Q = 11,659, G = 82,161, D = 2,048) from features, against the exact k-NN
  graph of the same N = Q + G items alone (k = 20, the call k-reciprocal makes first), at ``BENCH_MSMT_FRACTION``
  (default 0.25) of Q and G (N^2 / 16 of the work: the full size runs for over an hour on two shared cores).
* ``<method> g10k``: each method against its oracle at G = 10,000, Q = 500, D = 256 (k-reciprocal's oracle at a
  third of the size, scaled by 9).

Run (one group per session keeps a session short; every workload's JSON line is also appended to
``results/bench_rerankers-runs.jsonl``):
    pytest benchmarks/bench_rerankers.py --benchmark-enable -p no:cacheprovider -k market \
        --benchmark-json=benchmarks/results/bench_rerankers-market-cpu2.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
MARKET_F = float(os.environ.get("BENCH_MARKET_FRACTION", "0.2"))
MSMT_F = float(os.environ.get("BENCH_MSMT_FRACTION", "0.25"))
G10K_KR_F = 1.0 / 3.0
RUNS_LOG = os.environ.get("BENCH_RUNS_LOG", os.path.join(HERE, "results", "bench_rerankers-runs.jsonl"))

# (group, case, provider, fraction, baseline, scale the oracle's time/memory by 1 / fraction^2)
CASES = [
    ("k_reciprocal market", "market", "oracle", MARKET_F, True, True),
    ("k_reciprocal market", "market", "sparse", MARKET_F, False, False),
    ("k_reciprocal market", "market", "sparse", 1.0, False, False),
    ("k_reciprocal msmt17", "msmt", "knn_graph", MSMT_F, True, False),
    ("k_reciprocal msmt17", "msmt", "sparse", MSMT_F, False, False),
]
for _m in ("aqe", "alpha_qe", "dba", "ecn", "superglobal", "k_reciprocal_features"):
    _f = G10K_KR_F if _m == "k_reciprocal_features" else 1.0
    CASES += [(f"{_m} g10k", "g10k", f"{_m}:oracle", _f, True, _f < 1), (f"{_m} g10k", "g10k", f"{_m}:sparse", 1.0,
                                                                          False, False)]


def _lscpu_flags() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
        return " ".join(f for f in flags if f.startswith(("avx", "fma", "amx")))
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _run_worker(case: str, provider: str, fraction: float) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, os.path.join(HERE, "_rerankers_worker.py"), case, provider,
                          "--fraction", str(fraction)], capture_output=True, text=True, env=env, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    with open(RUNS_LOG, "a") as f:  # every workload's figures also survive an interrupted session
        f.write(json.dumps(res) + "\n")
    return res


@pytest.mark.parametrize("group,case,provider,fraction,baseline,scale", CASES,
                         ids=[f"{c[0]}-{c[2]}-f{c[3]:.2g}" for c in CASES])
def test_rerankers(benchmark, record, group, case, provider, fraction, baseline, scale):
    benchmark.group = group
    res = benchmark.pedantic(_run_worker, args=(case, provider, fraction), rounds=1, iterations=1)
    factor = 1.0 / fraction**2 if scale else 1.0
    label = f"{provider} (Q={res['Q']}, G={res['G']})" + (f" x{factor:.3g} scaled" if scale else "")
    record(label, baseline=baseline, seconds=res["seconds"] * factor, measured_seconds=res["seconds"],
           metric_peak_gb=res["peak_gb"] * factor, measured_peak_gb=res["peak_gb"], fraction=fraction,
           cpu_flags=_lscpu_flags(), worker_threads=res["threads"])
