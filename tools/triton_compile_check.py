"""Compile the Triton kernels for a GPU architecture without a GPU, and report what the compiler made of them.

No GPU is needed: Triton lowers to PTX and ptxas (bundled with triton) assembles the cubin. For each kernel at the
launch configuration the launchers use on an H100/H200 this prints registers per thread, spilled bytes (STACK) and
shared memory, and it checks what the interpreter cannot see:
    * the ICFRR kernel's float64 arithmetic has no fused multiply-add (``fma.rn.f64``: the key must round as
      ``base + beta * delta``, vote.h) and uses the correctly rounded division (``div.rn.f64``);
    * the k-NN kernel's inner loop is pipelined (asynchronous copies into shared memory) and, for bf16/fp16 inputs,
      runs on wgmma (sm_90; exact fp32 has no tensor-core form, tf32 would round the inputs).
Integer arguments that are multiples of 16 at run time (strides, sizes, pointers) are declared so, as Triton's
launcher would specialise them; without that the pipeliner cannot use asynchronous copies.

Each line also counts the register spills (LDL/STL instructions in the SASS); ``--no-spills`` makes them failures
(benchmarks/gpu_static.py reports them for every configuration the launchers pick).

Usage:  python tools/triton_compile_check.py [--arch 90] [--kernels icfrr,knn,dense] [--quick] [--no-spills]
(about a minute per kernel on a laptop-class CPU; --quick compiles the smallest variant of each).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from typing import Dict, List, Optional

if os.environ.get("TRITON_INTERPRET") == "1":  # the interpreter's kernels cannot be compiled
    raise RuntimeError("triton_compile_check needs TRITON_INTERPRET unset")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

from icfrr_fast.triton._launch import SelectConfig  # noqa: E402

_DIV16 = ("stride", "D", "G", "Q", "C", "R")


def compile_kernel(fn, signature: Dict[str, str], constexprs: Dict[str, object], arch: int, **options):
    """Compile ``fn`` for sm_<arch>; pointer arguments and the integer arguments named like strides/sizes are
    declared divisible by 16."""
    sig = dict(signature)
    sig.update({name: "constexpr" for name in constexprs})
    attrs = {}
    for i, name in enumerate(fn.arg_names):
        if name in signature and (signature[name].startswith("*") or any(name.endswith(d) for d in _DIV16)):
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


def resource_usage(compiled) -> str:
    """``REG:... STACK:... SHARED:...`` of the cubin, from the cuobjdump bundled with triton."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    path = f"/tmp/icfrr_compile_check_{os.getpid()}.cubin"
    with open(path, "wb") as f:
        f.write(compiled.asm["cubin"])
    try:
        out = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True).stdout
    finally:
        os.remove(path)
    lines = [ln.strip() for ln in out.splitlines() if "REG:" in ln]
    return lines[0] if lines else "?"


def _icfrr(arch: int, LP: int, paper: bool):
    from icfrr_fast.triton.icfrr_candidates import _icfrr_candidates_kernel, _vote_shape, icfrr_num_warps

    vb, kb = _vote_shape(256, 250, 2048)
    sig = {"out_v_ptr": "*fp32", "out_i_ptr": "*i64", "out_stride": "i32", "hist_ptr": "*i64",
           "hist_stride_q": "i32", "hist_stride_t": "i32", "cand_v_ptr": "*fp32", "cand_v_stride": "i32",
           "cand_i_ptr": "*i64", "cand_i_stride": "i32", "nbr_ptr": "*i32", "nbr_stride": "i32", "par_ptr": "*fp64",
           "tab_ptr": "*i64", "acc_ptr": "*i64", "gid_ptr": "*i32", "og_ptr": "*i32", "Q": "i32", "G": "i32",
           "K_g": "i32", "k_q": "i32", "L": "i32", "k": "i32", "iters": "i32", "n_prog": "i32"}
    # paper: the dense path's variant (rows already sorted); reference: candidate rows in any order (initial sort)
    ce = dict(PAPER=paper, EARLY_STOP=True, HISTORY=True, LARGEST=True, SORTED=paper, OUT_F64=False, LP=LP,
              LOG_HT=(4 * LP).bit_length() - 1, VB=vb, KB=kb)
    return compile_kernel(_icfrr_candidates_kernel, sig, ce, arch, num_warps=icfrr_num_warps(LP),
                          num_stages=1, enable_fp_fusion=False)


def _knn(arch: int, dtype: str, k: int, metric: int):
    from icfrr_fast.triton.knn_topk import KNN_CONFIGS, _knn_topk_kernel

    cfg = KNN_CONFIGS[{"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]]
    sig = {"out_v_ptr": "*fp32", "out_i_ptr": "*i64", "out_stride": "i32", "x_ptr": f"*{dtype}", "x_stride": "i32",
           "y_ptr": f"*{dtype}", "y_stride": "i32", "xn_ptr": "*fp32", "yn_ptr": "*fp32", "fill_ptr": "*i32",
           "thr_v_ptr": "*fp64", "thr_i_ptr": "*i32", "qk_ptr": "*i64", "qi_ptr": "*i32", "bk_ptr": "*i64",
           "bp_ptr": "*i32", "Q": "i32", "G": "i32", "D": "i32", "k": "i32", "row_offset": "i32", "n_prog": "i32"}
    ce = dict(METRIC=metric, LARGEST=metric < 2, EXCLUDE_SELF=True, PRECISION="ieee", UPCAST=False,
              BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, **cfg.collector_shape(k))
    return compile_kernel(_knn_topk_kernel, sig, ce, arch, num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def _dense(arch: int, k: int, cfg: Optional[SelectConfig] = None):
    from icfrr_fast.triton.dense_topk import _dense_topk_kernel, dense_config, dense_num_warps

    cfg = cfg or dense_config(k)
    shape = cfg.collector_shape(k)
    sig = {"out_v_ptr": "*fp64", "out_i_ptr": "*i64", "out_stride": "i32", "x_ptr": "*fp32", "x_stride": "i32",
           "fill_ptr": "*i32", "thr_v_ptr": "*fp64", "thr_i_ptr": "*i32", "qk_ptr": "*i64", "qi_ptr": "*i32",
           "bk_ptr": "*i64", "bp_ptr": "*i32", "R": "i32", "C": "i32", "k": "i32", "row_offset": "i32",
           "n_prog": "i32"}
    ce = dict(LARGEST=True, EXCLUDE_SELF=False, SIGNED_OUT=False, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, **shape)
    return compile_kernel(_dense_topk_kernel, sig, ce, arch, num_warps=dense_num_warps(cfg, shape),
                          num_stages=cfg.num_stages)


def sass(compiled) -> str:
    """The kernel's SASS (cuobjdump -sass, bundled with triton)."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    path = f"/tmp/icfrr_compile_check_{os.getpid()}_sass.cubin"
    with open(path, "wb") as f:
        f.write(compiled.asm["cubin"])
    try:
        return subprocess.run([tool, "-sass", path], capture_output=True, text=True).stdout
    finally:
        os.remove(path)


def spill_instructions(sass_text: str) -> int:
    """Local-memory loads and stores (LDL/STL) in SASS text: Triton allocates no local arrays, so each one is a
    register spill or fill."""
    return len(re.findall(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?(?:LDL|STL)\b", sass_text, re.M))


def check_icfrr_ptx(ptx: str) -> List[str]:
    """Problems in the ICFRR kernel's PTX (empty when none)."""
    problems = []
    if "fma.rn.f64" in ptx:
        problems.append("fma.rn.f64 present: key = base + beta * delta was contracted")
    if "div.rn.f64" not in ptx:
        problems.append("no div.rn.f64: delta is not a correctly rounded division")
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--kernels", default="icfrr,knn,dense")
    p.add_argument("--quick", action="store_true", help="the smallest variant of each kernel")
    p.add_argument("--self-test", action="store_true", help="check the PTX checks on known text, compile nothing")
    p.add_argument("--no-spills", action="store_true", help="count register spills (LDL/STL) as a failure")
    a = p.parse_args(argv)
    if a.self_test:
        assert check_icfrr_ptx("div.rn.f64 %fd1; add.f64 %fd2;") == []
        assert check_icfrr_ptx("div.rn.f64 %fd1; fma.rn.f64 %fd2;")
        assert check_icfrr_ptx("add.f64 %fd2;")
        print("self-test ok")
        return 0
    jobs = []
    kinds = a.kernels.split(",")
    if "icfrr" in kinds:
        for LP, paper in ([(64, False)] if a.quick else [(1024, False), (4096, True)]):
            jobs.append((f"icfrr_candidates LP={LP} {'paper' if paper else 'reference'}",
                         lambda LP=LP, paper=paper: _icfrr(a.arch, LP, paper), "icfrr"))
    if "knn" in kinds:
        for dt, k, metric in ([("bf16", 256, 0)] if a.quick else [("bf16", 256, 0), ("bf16", 1024, 2),
                                                                   ("fp32", 256, 1)]):
            # exact fp32 (PRECISION="ieee") has no wgmma form: Hopper's tensor cores take fp32 only as tf32
            jobs.append((f"knn_topk {dt} k={k} metric={metric}", lambda dt=dt, k=k, m=metric: _knn(a.arch, dt, k, m),
                         "knn" if dt != "fp32" else "knn-ieee"))
    if "dense" in kinds:
        for k in ([256] if a.quick else [256, 4096]):
            jobs.append((f"dense_topk fp32 k={k}", lambda k=k: _dense(a.arch, k), "dense"))
    failed = 0
    for name, build, kind in jobs:
        t0 = time.time()
        c = build()
        ptx = c.asm["ptx"]
        problems = check_icfrr_ptx(ptx) if kind == "icfrr" else []
        if kind == "knn" and a.arch >= 90 and "wgmma" not in ptx:
            problems.append("no wgmma")
        if kind.startswith("knn") and "cp.async" not in ptx and "cp.async.bulk" not in ptx:
            problems.append("inner loop not pipelined (no cp.async)")
        spills = spill_instructions(sass(c))
        if spills and a.no_spills:
            problems.append(f"{spills} spill instructions (LDL/STL)")
        failed += bool(problems)
        print(f"{name:<40} sm_{a.arch} {time.time() - t0:6.1f} s  {resource_usage(c)} LDL+STL:{spills}  "
              f"{'; '.join(problems) or 'ok'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
