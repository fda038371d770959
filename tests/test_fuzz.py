"""Fuzz every public entry point with hypothesis (tests/_fuzz_targets.py) in a subprocess: a crash (abort,
segfault) there fails this test, with the input that caused it, instead of ending the test run. Only ValueError,
TypeError and MemoryError may come out of a call. ICFRR_FUZZ_EXAMPLES sets the examples per target (CI: 25, about
half a minute in all)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import icfrr_fast

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = str(Path(icfrr_fast.__file__).resolve().parent.parent)


def test_fuzz_public_entry_points(tmp_path):
    last = tmp_path / "last_input.txt"
    env = dict(os.environ, ICFRR_FUZZ_LAST=str(last), PYTHONPATH=PACKAGE_ROOT)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                           str(HERE / "_fuzz_targets.py")], capture_output=True, text=True, timeout=600, env=env,
                          cwd=HERE.parent)
    crashed = proc.returncode < 0
    last_input = last.read_text() if last.exists() else "(none)"
    assert proc.returncode == 0, (
        f"fuzzing {'CRASHED (signal ' + str(-proc.returncode) + ')' if crashed else 'failed'}; "
        f"last input: {last_input}\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
