"""One scale workload per process, so that its peak RSS (``ru_maxrss``) is its own. Used by bench_scale.py.

    python benchmarks/_scale_worker.py prepare DIR --G 1000000 --D 128 --Q 1000
    python benchmarks/_scale_worker.py build   DIR --k-g 256 [--threads N]
    python benchmarks/_scale_worker.py search  DIR --k 100 [--k-q 250 --iters 5 --threads N]

Prints one JSON line: {"seconds": ..., "peak_rss_gb": ..., ...}. ``prepare`` writes gallery.npy / queries.npy
(seeded cross_domain_features); ``build`` times ICFRRIndex(gallery, k_g, metric="l2") and saves index.pth;
``search`` loads index.pth and times index.search(queries, k, depth=None).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("step", choices=["prepare", "build", "search"])
    p.add_argument("dir")
    p.add_argument("--G", type=int, default=1_000_000)
    p.add_argument("--D", type=int, default=128)
    p.add_argument("--Q", type=int, default=1000)
    p.add_argument("--k-g", type=int, default=256)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--k-q", type=int, default=250)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--progress", action="store_true")
    a = p.parse_args(argv)
    os.makedirs(a.dir, exist_ok=True)
    torch.set_num_threads(a.threads)
    import icfrr_fast
    from icfrr_fast.testing import cross_domain_features

    icfrr_fast.set_num_threads(a.threads)
    out = {"step": a.step, "threads": a.threads}
    if a.step == "prepare":
        d = cross_domain_features(a.Q, a.G, dim=a.D, num_classes=1000, intrinsic_dim=32, seed=0)
        np.save(os.path.join(a.dir, "gallery.npy"), d.gallery.numpy())
        np.save(os.path.join(a.dir, "queries.npy"), d.queries.numpy())
        out.update(G=a.G, D=a.D, Q=a.Q)
    elif a.step == "build":
        g = torch.from_numpy(np.load(os.path.join(a.dir, "gallery.npy")))
        t0 = time.perf_counter()
        index = icfrr_fast.ICFRRIndex(g, k_g=a.k_g, metric="l2", progress=a.progress)
        out["seconds"] = time.perf_counter() - t0
        out["peak_rss_gb"] = _peak_rss_gb()
        out.update(G=g.shape[0], D=g.shape[1], k_g=a.k_g, gflop=2.0 * g.shape[0] ** 2 * g.shape[1] / 1e9)
        index.save(os.path.join(a.dir, "index.pth"))
    else:
        index = icfrr_fast.ICFRRIndex.load(os.path.join(a.dir, "index.pth"))
        q = torch.from_numpy(np.load(os.path.join(a.dir, "queries.npy")))
        rss_loaded = _peak_rss_gb()
        t0 = time.perf_counter()
        D, I = index.search(q, a.k, k_q=a.k_q, iters=a.iters)
        out["seconds"] = time.perf_counter() - t0
        out["peak_rss_gb"] = _peak_rss_gb()
        out.update(rss_after_load_gb=rss_loaded, G=index.ntotal, Q=q.shape[0], k=a.k, k_q=a.k_q, iters=a.iters,
                   k_g=index.k_g, first_ids=I[0, :5].tolist())
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
