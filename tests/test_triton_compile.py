"""What only a GPU compiler can show, checked without a GPU: the ICFRR Triton kernel compiles for sm_90 and its
float64 key arithmetic has no fused multiply-add (it must round as ``base + beta * delta``, vote.h) and uses the
correctly rounded division. Runs tools/triton_compile_check.py in a subprocess (the interpreter, which
conftest.py turns on for this process, cannot compile)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "triton_compile_check.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, str(_SCRIPT), *args], capture_output=True, text=True, env=env, timeout=900)


def test_icfrr_kernel_compiles_for_sm90_without_fma():
    r = _run("--arch", "90", "--kernels", "icfrr", "--quick")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "icfrr_candidates" in r.stdout and r.stdout.rstrip().endswith("ok"), r.stdout


def test_fma_detector():
    """The check itself: a contracted key or a missing correctly rounded division would be reported."""
    r = _run("--self-test")
    assert r.returncode == 0 and "self-test ok" in r.stdout, r.stdout + r.stderr


@pytest.mark.slow
def test_all_kernels_compile_for_sm90():
    r = _run("--arch", "90")
    assert r.returncode == 0, r.stdout + r.stderr


def test_quick_compile_reports_spill_counts():
    """Every compiled variant's line carries its spill count (LDL/STL instructions); the quick ICFRR variant has
    none, so --no-spills passes on it."""
    r = _run("--arch", "90", "--kernels", "icfrr", "--quick", "--no-spills")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LDL+STL:0" in r.stdout, r.stdout
