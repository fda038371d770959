"""One re-ranker workload per process, so that its peak memory is its own. Used by bench_rerankers.py.

    python benchmarks/_rerankers_worker.py CASE PROVIDER [--fraction F] [--threads N]

CASE: "market" (Q = 3,368, G = 19,732, D = 2,048, dense distances as re-ID code passes them), "msmt" (Q = 11,659,
G = 82,161, D = 2,048, features), "g10k" (Q = 500, G = 10,000, D = 256, features); ``--fraction F`` scales Q and G
by F. PROVIDER: "sparse" (icfrr_fast.rerankers), "oracle" (icfrr_fast.reference), "knn_graph" (the exact k-NN graph
of the Q + G items alone, k = 20), or for g10k "<method>:sparse" / "<method>:oracle".

Prints one JSON line: {"seconds": ..., "peak_gb": ...}: peak_gb is the resident-memory peak of the timed call above
what the process held before it (VmHWM after resetting it through /proc/self/clear_refs; ru_maxrss if that fails).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch

SIZES = {"market": (3368, 19732, 2048, 751), "msmt": (11659, 82161, 2048, 3060), "g10k": (500, 10000, 256, 100)}


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20  # kB -> GB
    return float("nan")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("case", choices=sorted(SIZES))
    p.add_argument("provider")
    p.add_argument("--fraction", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    import icfrr_fast
    from icfrr_fast import ops, reference, rerankers
    from icfrr_fast.testing import cross_domain_features

    icfrr_fast.set_num_threads(a.threads)
    Q, G, D, classes = SIZES[a.case]

    def build(Q: int, G: int, D: int):
        data = cross_domain_features(Q, G, dim=D, num_classes=classes, intrinsic_dim=64, seed=0)
        q, g = data.queries.contiguous(), data.gallery.contiguous()
        if a.case == "market":
            inputs = (torch.cdist(q, g), torch.cdist(q, q), torch.cdist(g, g))
            return {"sparse": lambda: rerankers.k_reciprocal(*inputs),
                    "oracle": lambda: reference.k_reciprocal(*inputs)}[a.provider]
        if a.case == "msmt":
            x = torch.cat([q, g])
            return {"sparse": lambda: rerankers.k_reciprocal_features(q, g, k=100),
                    "knn_graph": lambda: ops.knn_topk(x, x, 20, "l2sq", False, True, 0, "fp32"),
                    "oracle": lambda: reference.k_reciprocal_features(q, g, k=100)}[a.provider]
        method, impl = a.provider.split(":")
        fn = getattr(rerankers if impl == "sparse" else reference, method)
        kwargs = {"k_reciprocal_features": dict(k=100), "aqe": dict(top=10, k=100),
                  "alpha_qe": dict(top=10, alpha=3.0, k=100), "dba": dict(top=10, k=100),
                  "ecn": dict(t=3, q=8, depth=100), "superglobal": dict(M=400, K=9, beta=0.15, k=100)}[method]
        return lambda: fn(q, g, **kwargs)

    build(8, 400, 32)()  # warm-up: the first call of a registered op sets up the dispatcher (seconds)
    Q, G = max(2, round(Q * a.fraction)), max(20, round(G * a.fraction))
    call = build(Q, G, D)
    base = _status("VmRSS")
    exact_peak = _reset_peak()
    t0 = time.perf_counter()
    call()
    seconds = time.perf_counter() - t0
    peak = (_status("VmHWM") if exact_peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20) - base
    print(json.dumps({"case": a.case, "provider": a.provider, "Q": Q, "G": G, "D": D, "threads": a.threads,
                      "seconds": seconds, "peak_gb": peak, "peak_exact": exact_peak}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
