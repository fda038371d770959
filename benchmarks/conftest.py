"""Shared benchmark plumbing: machine/version info in every result, and a ratio table per group at the end.

Each benchmark group answers one question; inside a group the provider marked ``baseline`` is the reference
point and the summary prints every other provider's speed-up against it, measured in the same run (this machine
is shared and noisy, so only ratios from one run are quoted).
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections import defaultdict

import pytest
import torch


def machine_info() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(__file__), timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    import icfrr_fast

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "icfrr_fast": icfrr_fast.__version__, "commit": commit,
            "threads": icfrr_fast.get_num_threads(), **simd_info()}


def simd_info() -> dict:
    """The CPU kernels' view of this CPU: cpuid flags, the SIMD level in use and the k-NN micro-kernels
    (``icfrr_fast.cpu_info()``), or the reason it is unavailable."""
    import icfrr_fast

    try:
        info = icfrr_fast.cpu_info()
    except RuntimeError as e:  # unbuilt checkout
        return {"simd_level": f"unavailable: {e}"}
    return {"simd_level": info["level"], "simd_best_level": info["best_level"], "knn_kernel": info["knn_kernel"],
            "cpu_flags": sorted(name for name, on in info["flags"].items() if on)}


def pytest_benchmark_update_machine_info(config, machine_info):
    """Every benchmark JSON's machine_info: the CPU flags the kernels saw and the SIMD paths they ran."""
    machine_info["icfrr_fast_cpu"] = simd_info()


@pytest.fixture(autouse=True)
def _record_simd_level(request):
    """Each benchmark's extra_info: the SIMD level and k-NN kernels in use (a benchmark that forces a level records
    its own, overwriting these)."""
    if "benchmark" in request.fixturenames:
        info = simd_info()
        request.getfixturevalue("benchmark").extra_info.update(simd_level=info.get("simd_level"),
                                                               knn_kernel=info.get("knn_kernel"))


@pytest.fixture
def record(benchmark):
    """``record(provider, baseline=False, **extra)``: label the benchmark and attach machine info. A benchmark
    that times a subset and scales it stores the scaled time as ``extra_info["seconds"]``."""

    def _record(provider: str, baseline: bool = False, **extra):
        benchmark.extra_info.update(machine_info())
        benchmark.extra_info.update(provider=provider, baseline=baseline, **extra)

    return _record


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not getattr(session, "benchmarks", None):
        return
    groups = defaultdict(list)
    for b in session.benchmarks:
        if b.stats is not None and getattr(b.stats, "rounds", 0):
            groups[b.group].append(b)
    tr = terminalreporter
    tr.section("speed-up against each group's baseline (same run)")
    for group, benches in groups.items():
        base = [b for b in benches if b.extra_info.get("baseline")]
        if not base:
            continue
        t0 = _seconds(base[0])
        tr.write_line(f"{group}")
        for b in benches:
            extra = {k: v for k, v in b.extra_info.items() if k.startswith("metric_")}
            shown = "  ".join(f"{k[7:]}={v:.3g}" for k, v in extra.items())
            tr.write_line(f"  {b.extra_info.get('provider', b.name):<36} {_seconds(b):10.4f} s   "
                          f"x{t0 / _seconds(b):8.1f}   {shown}")


def _seconds(b) -> float:
    """The benchmark's median, or the scaled time it recorded (extra_info["seconds"]) when it timed a subset."""
    return float(b.extra_info.get("seconds", b.stats.median))
