"""Sharding over processes: how the gallery graph build and the re-ranked search scale from 1 to 2 processes on
this machine, and the payload bytes each rank sends (per query in the search, in all for the build).

Every provider runs in fresh processes (``benchmarks/_distributed_worker.py``; ``torchrun --standalone`` for the
distributed ones, gloo on CPU) on the same 2 cores: the baseline is the single-process ``ICFRRIndex`` with 1 thread
(the scaling question: 1 -> 2 processes), next to it the same with 2 threads (what the cores give a single process);
``ShardedICFRRIndex`` on 1 process and on 2 processes x 1 thread; ``ReplicatedICFRRIndex`` (queries split) on 2
processes x 1 thread. The worker times the build and the search itself (after a warm-up), so the
process start-up is not measured; ``extra_info`` holds both times and the bytes.

    pytest benchmarks/bench_distributed.py --benchmark-enable -p no:cacheprovider -s \
        --benchmark-json=benchmarks/results/distributed-$(hostname).json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

WORKER = os.path.join(os.path.dirname(__file__), "_distributed_worker.py")
SETTING = ["--G", "20000", "--D", "128", "--Q", "1000", "--k-g", "64", "--k-q", "250", "--depth", "1000",
           "--k", "100", "--iters", "5"]
PROVIDERS = {
    "ICFRRIndex, 1 process x 1 thread": (None, ["--single", "--threads", "1"]),
    "ICFRRIndex, 1 process x 2 threads": (None, ["--single", "--threads", "2"]),
    "ShardedICFRRIndex, 1 process x 1 thread": (1, ["--threads", "1"]),
    "ShardedICFRRIndex, 2 processes x 1 thread": (2, ["--threads", "1"]),
    "ReplicatedICFRRIndex, 2 processes x 1 thread": (2, ["--threads", "1", "--mode", "replicated"]),
}
_cache: dict = {}


def _cpu_flags() -> str:
    """The SIMD flags of this CPU (what lscpu reports), for the record."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return ""
    return " ".join(sorted(f for f in flags if f.startswith(("avx", "fma", "sse4"))))


def _run(provider: str) -> dict:
    if provider not in _cache:
        procs, args = PROVIDERS[provider]
        launch = [sys.executable, WORKER] if procs is None else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", WORKER]
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        res = subprocess.run(launch + SETTING + args, capture_output=True, text=True, timeout=1800, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        _cache[provider] = json.loads(res.stdout.strip().splitlines()[-1])
    return _cache[provider]


@pytest.mark.parametrize("step", ["build", "search"])
@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_distributed_scaling(benchmark, record, provider, step):
    out = _run(provider)
    benchmark.group = (f"distributed {step}: G={out['G']} D={out['D']} k_g={out['k_g']}" +
                       (f", Q={out['Q']} depth={out['depth']} k_q={out['k_q']} T={out['iters']}"
                        if step == "search" else ""))
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # the worker timed it; see extra_info["seconds"]
    sent = {"metric_bytes_per_query": out["bytes_per_query"]} if step == "search" else \
        {"metric_MB_per_rank": out["build_bytes"] / 1e6}
    record(provider, baseline=provider == "ICFRRIndex, 1 process x 1 thread", seconds=out[f"{step}_s"], cpu_flags=_cpu_flags(),
           **sent, **out)
