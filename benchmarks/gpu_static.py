"""Static GPU performance report: what the compiler made of each Triton kernel at the configurations the launchers
pick, and a labelled estimate of where that leaves it against the hardware floor. Needs no GPU.

For each kernel variant (the constexprs the launchers choose for realistic sizes: G up to 10^6, D in {128, 768,
2048}, k in {256, 257, 1000, 4096}, L in {1000, 4096}; D and G are run-time arguments, so they change the floor, not
the compiled code) it compiles for sm_<arch> and reports:
    * registers per thread, stack frame bytes per thread, spills (local-memory loads/stores, LDL/STL, in the SASS:
      Triton allocates no local arrays, so every one is a register spill or fill), shared memory per CTA (Triton's
      dynamic shared memory, what the launch asks for), warps per CTA;
    * resident programs per SM (``icfrr_fast.triton._launch.resident_programs``: the CUDA occupancy rules with the
      architecture's limits) -- exactly what ``launch_persistent`` will launch per SM;
    * a static instruction mix of the whole kernel (SASS counts: tensor-core MMA, FP32/FP64 FMA, global, shared and
      local memory instructions, barriers): code, not executed counts;
    * the floor of the work at H100 SXM rates (bf16 990 TFLOP/s dense, tf32 495, fp32 67, fp64 67 on tensor cores /
      34 on CUDA cores, HBM 3.35 TB/s) and an ESTIMATE: floor / (occupancy factor), where the occupancy factor is
      min(1, resident warps per SM / warps a kernel of that kind needs to reach its rate: 8 for MMA kernels (two
      warpgroups), 32 for memory-bound ones). The estimate ignores the top-K collector's selection work and the
      ICFRR kernel's hash probes, which static counts cannot price: it is an optimistic bound, not a prediction.

Usage:
    python benchmarks/gpu_static.py [--arch 90] [--budget-s 240] [--markdown]
    python benchmarks/gpu_static.py --smoke      # tiny variants, seconds: the CI check of this script

Compiling is CPU-heavy (seconds to a minute per variant): the default run stops compiling after ``--budget-s`` and
lists the variants it did not reach.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

_TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
sys.path.insert(0, _TOOLS)  # tools/triton_compile_check.py, also under PYTHONSAFEPATH

import triton_compile_check as cc  # noqa: E402

from icfrr_fast.triton._launch import ARCH_LIMITS, resident_programs  # noqa: E402

#: H100 SXM rates (dense, no sparsity): FLOP/s by arithmetic, bytes/s of HBM3
RATES = {"bf16": 990e12, "tf32": 495e12, "fp32": 67e12, "fp64": 34e12, "hbm": 3.35e12}
#: SMs of an H100 SXM / H200
SMS = 132
#: instruction classes of the static mix: SASS opcode prefixes
MIX = {"mma": ("HGMMA", "HMMA", "IMMA", "DMMA"), "ffma": ("FFMA",), "dfma": ("DFMA", "DADD", "DMUL"),
       "ldg": ("LDG",), "stg": ("STG",), "lds": ("LDS", "LDSM"), "sts": ("STS",), "cpasync": ("LDGSTS", "UTMALDG"),
       "local": ("LDL", "STL"), "bar": ("BAR",)}


@dataclass
class Variant:
    """One compiled kernel variant and the workloads (floors) it serves."""

    name: str
    build: Callable[[int], object]  # arch -> CompiledKernel
    kind: str  # "mma" or "memory": which warps-to-saturate the estimate assumes
    workloads: List[Tuple[str, float, str]]  # (label, work, rate key): FLOPs or bytes


def _knn_workloads(dtype: str, k: int) -> List[Tuple[str, float, str]]:
    rate = "bf16" if dtype == "bf16" else "fp32"
    return [(f"graph G=1e6 D={D} k={k}", 2.0 * 1e6 * 1e6 * D, rate) for D in (128, 768, 2048)]


def _dense_workloads(k: int) -> List[Tuple[str, float, str]]:
    return [(f"top-{k} of Q=1e4 x G=1e6 fp32", 4.0 * 1e4 * 1e6, "hbm")]


def _icfrr_workloads(L: int) -> List[Tuple[str, float, str]]:
    # gpu_bench.py's floor: the (Q, L) candidates (float64 value + int32 id), the graph's rows (G = 1e6, K_g = 256
    # int32) and the (Q, k = 100) results once through HBM; the kernel is bound by atomics and latency, not this
    return [(f"ICFRR Q=1e4 L={L} K_g=256", 1e4 * L * 12 + 1e6 * 256 * 4 + 1e4 * 100 * 12, "hbm")]


def variants(smoke: bool) -> List[Variant]:
    """The kernel variants of the report (``smoke``: the smallest of each kind)."""
    if smoke:
        return [
            Variant("icfrr_candidates LP=64", lambda a: cc._icfrr(a, 64, False), "memory", _icfrr_workloads(64)),
            Variant("dense_topk fp32 k=16", lambda a: cc._dense(a, 16), "memory", _dense_workloads(16)),
        ]
    out = [Variant(f"knn_topk bf16 k={k}", lambda a, k=k: cc._knn(a, "bf16", k, 0), "mma", _knn_workloads("bf16", k))
           for k in (256, 257, 1000, 4096)]
    out += [Variant("knn_topk fp32 k=257", lambda a: cc._knn(a, "fp32", 257, 1), "mma", _knn_workloads("fp32", 257))]
    out += [Variant(f"icfrr_candidates LP={LP} (L={L})", lambda a, LP=LP: cc._icfrr(a, LP, False), "memory",
                    _icfrr_workloads(L)) for L, LP in ((1000, 1024), (4096, 4096))]
    out += [Variant(f"dense_topk fp32 k={k}", lambda a, k=k: cc._dense(a, k), "memory", _dense_workloads(k))
            for k in (1000, 4096)]
    return out


def parse_usage(line: str) -> Dict[str, int]:
    """``REG:168 STACK:0 SHARED:1024 LOCAL:0 ...`` (cuobjdump --dump-resource-usage) -> {"REG": 168, ...}."""
    return {k: int(v) for k, v in re.findall(r"([A-Z]+):(\d+)", line)}


def instruction_mix(sass: str) -> Dict[str, int]:
    """Static counts of the instruction classes of ``MIX`` in SASS text (one instruction per line)."""
    counts = dict.fromkeys(MIX, 0)
    # longest prefix first: LDGSTS (an asynchronous copy) is not an LDG
    prefixes = sorted(((p, cls) for cls, ps in MIX.items() for p in ps), key=lambda pc: -len(pc[0]))
    for m in re.finditer(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9]+)", sass, re.M):
        op = m.group(1)
        cls = next((c for p, c in prefixes if op.startswith(p)), None)
        if cls is not None:
            counts[cls] += 1
    return counts


def estimate(floor_s: float, per_sm: int, num_warps: int, kind: str) -> float:
    """ESTIMATE (optimistic): the floor divided by the occupancy factor min(1, resident warps / warps needed)."""
    need = 8 if kind == "mma" else 32
    factor = min(1.0, per_sm * num_warps / need)
    return math.inf if factor == 0 else floor_s / factor


def _fmt_s(s: float) -> str:
    if math.isinf(s):
        return "does not fit"
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def report(arch: int, smoke: bool, budget_s: float) -> Tuple[List[str], int]:
    """Markdown rows of the report and the number of variants that spill."""
    limits = ARCH_LIMITS[arch]
    rows = ["| kernel variant (sm_%d) | regs | stack / LDL+STL | shared | warps | programs/SM | static mix: mma ffma "
            "dfma ldg stg lds sts cp.async local bar | workload | floor (H100) | estimate (optimistic) |" % arch,
            "|---|---|---|---|---|---|---|---|---|---|"]
    spilling = 0
    t_start = time.time()
    for v in variants(smoke):
        if time.time() - t_start > budget_s:
            rows.append(f"| {v.name} | not compiled: over the --budget-s of {budget_s:.0f} s | | | | | | | | |")
            continue
        t0 = time.time()
        c = v.build(arch)
        usage = parse_usage(cc.resource_usage(c))
        mix = instruction_mix(cc.sass(c))
        regs, stack = usage.get("REG", 0), usage.get("STACK", 0)
        shared, warps = int(c.metadata.shared), int(c.metadata.num_warps)
        per_sm = resident_programs(regs, shared, warps, limits)
        spills = mix["local"] > 0
        spilling += spills
        mix_s = " ".join(str(mix[k]) for k in MIX)
        for j, (label, work, rate) in enumerate(v.workloads):
            floor = work / RATES[rate]
            head = (f"| {v.name} | {regs} | {stack} B / {mix['local']}{' SPILLS' if spills else ''} | {shared} B "
                    f"| {warps} | {per_sm} "
                    f"| {mix_s} |") if j == 0 else "| | | | | | | |"
            rows.append(f"{head} {label} | {_fmt_s(floor)} ({rate}) | {_fmt_s(estimate(floor, per_sm, warps, v.kind))}"
                        f" |")
        print(f"# {v.name}: compiled in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    return rows, spilling


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", type=int, default=90, choices=sorted(ARCH_LIMITS))
    p.add_argument("--smoke", action="store_true", help="the smallest variant of two kernels (seconds)")
    p.add_argument("--budget-s", type=float, default=240.0, help="stop compiling new variants after this long")
    a = p.parse_args(argv)
    rows, spilling = report(a.arch, a.smoke, a.budget_s)
    print("\n".join(rows))
    print(f"\n{spilling} variant(s) spill. Estimates are static (no GPU ran): floor / occupancy factor, an "
          f"optimistic bound that ignores selection and probing work.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
