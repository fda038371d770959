"""benchmarks/gpu_static.py, the static GPU report, checked without a GPU: its --smoke run compiles two tiny kernel
variants for sm_90 and prints a table whose resident programs per SM follow from the registers and shared memory it
prints (in a subprocess: the interpreter, which conftest.py turns on here, cannot compile). The parsers and the
estimate are checked on known input."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_static.py"


def _module():
    """The script as a module, for its pure functions (importing it imports triton, not the interpreter's kernels:
    nothing is compiled at import)."""
    env_interp = os.environ.pop("TRITON_INTERPRET", None)
    try:
        spec = importlib.util.spec_from_file_location("gpu_static", _SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["gpu_static"] = mod  # dataclasses look their module up
        spec.loader.exec_module(mod)
        return mod
    finally:
        if env_interp is not None:
            os.environ["TRITON_INTERPRET"] = env_interp


def test_smoke_run_prints_a_consistent_table():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, str(_SCRIPT), "--smoke"], capture_output=True, text=True, env=env,
                       timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    from icfrr_fast.triton._launch import ARCH_LIMITS, resident_programs

    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| icfrr_candidates") or ln.startswith("| dense_topk")]
    assert len(rows) == 2, r.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        regs, shared, warps, per_sm = int(cells[1]), int(cells[3].split()[0]), int(cells[4]), int(cells[5])
        assert 0 < regs <= 255 and warps in (4, 8, 16)
        assert per_sm == resident_programs(regs, shared, warps, ARCH_LIMITS[90]) >= 1
        assert "ms" in cells[-1] and "(hbm)" in cells[-2]


def test_parsers_and_estimate():
    m = _module()
    assert m.parse_usage("Function k: REG:168 STACK:8 SHARED:1024 LOCAL:0") == {"REG": 168, "STACK": 8,
                                                                                 "SHARED": 1024, "LOCAL": 0}
    sass = ("        /*0010*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], R24 ;\n"
            "        /*0020*/              @!P0 STL.64 [R1+0x8], R2 ;\n"
            "        /*0030*/                   LDL R4, [R1+0x8] ;\n"
            "        /*0040*/                   FFMA R5, R6, R7, R8 ;\n"
            "        /*0050*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;\n"
            "        /*0060*/                   LDGSTS.E.BYPASS.LTC128B.128 [R9], desc[UR6][R2.64] ;\n"
            "        /*0070*/                   LDG.E R3, desc[UR4][R4.64] ;\n")
    mix = m.instruction_mix(sass)
    assert (mix["mma"], mix["local"], mix["ffma"], mix["bar"], mix["ldg"], mix["cpasync"]) == (1, 2, 1, 1, 1, 1)
    assert m.estimate(1.0, 1, 8, "mma") == 1.0  # two warpgroups saturate the tensor cores
    assert m.estimate(1.0, 1, 8, "memory") == 4.0  # 8 of 32 warps
    assert math.isinf(m.estimate(1.0, 0, 8, "memory"))
