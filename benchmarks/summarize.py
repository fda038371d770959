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
        groups[b["group"]][b["extra_info"]["provider"]] = (b["stats"]["min"], b["extra_info"].get("gflops"),
                                                          b["extra_info"])
    for group, provs in groups.items():
        print(f"\n{group}")
        for name, (t, gf, _) in sorted(provs.items(), key=lambda kv: kv[1][0]):
            print(f"  {name:18s} {t:9.3f} s  {gf:8.1f} GFLOP/s")
        if "icfrr_fast" in provs:
            t, gf, info = provs["icfrr_fast"]
            for peer in ("faiss", "torch", "icfrr_fast-bf16"):
                if peer in provs:
                    print(f"  icfrr_fast vs {peer}: {provs[peer][0] / t:.2f}x")
            if "matmul" in provs:
                print(f"  icfrr_fast share of best fp32 matmul ({provs['matmul'][2].get('matmul')}): "
                      f"{100 * gf / provs['matmul'][1]:.0f}%")
            print(f"  threads {info['threads']}, BLAS {info['blas']}")


if __name__ == "__main__":
    main(sys.argv[1])
