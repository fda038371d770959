"""One run of the distributed benchmark, launched by ``torchrun --nproc_per_node W`` (see bench_distributed.py):
builds the index (ShardedICFRRIndex on W row shards, or ICFRRIndex when ``--single``), searches Q queries, and
prints one JSON line (rank 0): seconds of the build and the search, the most payload bytes a rank sent in the
build and per query in the search.

    torchrun --standalone --nproc_per_node 2 benchmarks/_distributed_worker.py --G 20000 --D 128 --Q 200
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

import icfrr_fast
from icfrr_fast.testing import cross_domain_features


def main() -> None:
    p = argparse.ArgumentParser()
    for name, default in (("G", 20000), ("D", 128), ("Q", 200), ("k_g", 64), ("k_q", 250), ("depth", 1000),
                          ("k", 100), ("iters", 5), ("threads", 1)):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=default)
    p.add_argument("--single", action="store_true", help="ICFRRIndex in this one process (the baseline)")
    p.add_argument("--mode", choices=("sharded", "replicated"), default="sharded")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    icfrr_fast.set_num_threads(a.threads)
    # warm-up: the first custom-op call imports torch._dynamo (seconds), which is not what is measured
    icfrr_fast.ICFRRIndex(torch.randn(50, 4), k_g=5).search(torch.randn(2, 4), 3, k_q=5, depth=10)
    data = cross_domain_features(a.Q, a.G, dim=a.D, num_classes=100, seed=0)
    q, g = data.queries, data.gallery
    kw = dict(k_q=a.k_q, iters=a.iters, depth=a.depth)
    out = {"G": a.G, "D": a.D, "Q": a.Q, "k_g": a.k_g, "k_q": a.k_q, "depth": a.depth, "k": a.k, "iters": a.iters,
           "threads_per_process": a.threads}
    if a.single:
        t0 = time.perf_counter()
        index = icfrr_fast.ICFRRIndex(g, k_g=a.k_g)
        t1 = time.perf_counter()
        index.search(q, a.k, **kw)
        t2 = time.perf_counter()
        out.update(processes=1, mode="ICFRRIndex", build_s=t1 - t0, search_s=t2 - t1, bytes_per_query=0,
                   build_bytes=0)
        print(json.dumps(out))
        return
    import torch.distributed as dist

    import icfrr_fast.distributed as ifd

    ifd.init(backend="gloo", timeout=600)
    W, r = dist.get_world_size(), dist.get_rank()
    dist.barrier()
    t0 = time.perf_counter()
    if a.mode == "sharded":
        n = [a.G // W + (1 if j < a.G % W else 0) for j in range(W)]
        o = sum(n[:r])
        index = ifd.ShardedICFRRIndex(g[o:o + n[r]], k_g=a.k_g, timeout=600)
    else:
        index = ifd.ReplicatedICFRRIndex(g, k_g=a.k_g, timeout=600)
    dist.barrier()
    t1 = time.perf_counter()
    b0 = index.bytes_sent
    build_sent = torch.tensor([b0], dtype=torch.float64)
    index.search(q, a.k, **kw)
    dist.barrier()
    t2 = time.perf_counter()
    sent = torch.tensor([index.bytes_sent - b0], dtype=torch.float64)
    all_sent = [torch.zeros(1, dtype=torch.float64) for _ in range(W)]
    dist.all_gather(all_sent, sent)
    all_build = [torch.zeros(1, dtype=torch.float64) for _ in range(W)]
    dist.all_gather(all_build, build_sent)
    if r == 0:  # the most any rank sent
        out.update(processes=W, mode=a.mode, build_s=t1 - t0, search_s=t2 - t1,
                   bytes_per_query=max(float(s) for s in all_sent) / a.Q,
                   build_bytes=max(float(s) for s in all_build))
        print(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
