"""Ratios from one pytest-benchmark JSON: per group, each provider's best time, GFLOP/s, and icfrr_fast's speed-up
over faiss and torch and its share of the best float32 matmul rate measured in the same run.

    python benchmarks/summarize.py benchmarks/results/knn_topk-<host>.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    data = json.load(open(path))
    groups = defaultdict(dict)
    for b in data["benchmarks"]:
        info = b["extra_info"]
        if "gflops" not in info:  # bf16 recall entries: print their recall
            recalls = ", ".join(f"{k} {v:.4f}" for k, v in info.items() if k.startswith("recall@"))
            print(f"{b['group']}: {info.get('data')} D={info.get('D')} {info.get('metric')}: {recalls} "
                  f"({b['stats']['min']:.1f} s)")
            continue
        groups[b["group"]][info["provider"]] = (b["stats"]["min"], info["gflops"], info)
    for group, provs in groups.items():
        print(f"\n{group}")
        for name, (t, gf, info) in sorted(provs.items(), key=lambda kv: kv[1][0]):
            extra = ""
            if "gflops_performed" in info:
                extra = f"  ({info['gflops_performed']:.1f} GFLOP/s performed, symmetric={info['symmetric']})"
            print(f"  {name:18s} {t:9.3f} s  {gf:8.1f} GFLOP/s{extra}")
        if "icfrr_fast" in provs:
            t, gf, info = provs["icfrr_fast"]
            for peer in ("faiss", "torch", "icfrr_fast-plain", "icfrr_fast-bf16"):
                if peer in provs:
                    print(f"  icfrr_fast vs {peer}: {provs[peer][0] / t:.2f}x")
            if "matmul" in provs:
                mm = provs["matmul"][1]
                for name in ("icfrr_fast", "icfrr_fast-plain"):
                    if name in provs:
                        pinfo = provs[name][2]
                        print(f"  {name} share of best fp32 matmul ({provs['matmul'][2].get('matmul')}, {mm:.0f} "
                              f"GFLOP/s): {100 * provs[name][1] / mm:.0f}% of the problem's 2 G^2 D rate, "
                              f"{100 * pinfo.get('gflops_performed', provs[name][1]) / mm:.0f}% performed")
            for name, (_, _, pinfo) in provs.items():
                ratios = "  ".join(f"{k[7:]}={v:.3g}" for k, v in pinfo.items() if k.startswith("metric_"))
                if ratios:
                    print(f"  {name}: {ratios}")
            print(f"  threads {info['threads']}, BLAS {info['blas']}, SIMD level {info.get('simd_level')}, "
                  f"k-NN kernels {info.get('knn_kernel')}")
    cpu = data.get("machine_info", {}).get("icfrr_fast_cpu")
    if cpu:
        print(f"\nCPU as the kernels saw it: {cpu}")


if __name__ == "__main__":
    main(sys.argv[1])
