"""A faiss index as ICFRR's first stage: build time, search time and the cost of the approximation, in one run.

For each data set and faiss index (IVF-Flat, HNSW-Flat, IVF-PQ / PQ; IndexFlat where it is cheap), against the exact
path measured in the same run (``ICFRRIndex``: fused exact k-NN graph, exact top-``depth`` candidates):

* build: ``index.train`` + ``index.add``; graph: ``GalleryGraph.from_faiss(index, k_g, x=x)`` (exact graph:
  ``GalleryGraph.from_features``);
* graph recall@K_g: mean over items of |faiss row ∩ exact row| / K_g (all rows, or a seeded sample of rows whose
  exact lists come from ``icfrr_fast.knn`` when the exact graph is too slow to build);
* candidate recall@L: the same for each query's ``depth`` candidates against the exact top-``depth``;
* search: ``FaissICFRR.search`` (faiss candidates + ICFRR, query batches) and ``index.search`` alone;
* mAP@all (non-interpolated, ``icfrr_fast.metrics``; positives outside a returned list count as missed; padding
  ``-1`` is a miss) of the first-stage order and of ICFRR after T iterations.

Data: the shipped emoji set (EfficientNet-Lite0 features from the demo's feature cache, computed once if missing),
and ``icfrr_fast.testing.cross_domain_features`` galleries of 10^5 (with mAP) and 10^6 items (D = 64; no exact
graph: recall on a row sample, no exact mAP). This machine is shared; every time is one measurement, quote ratios.

    python benchmarks/bench_faiss_stage.py --out benchmarks/results/faiss_stage.json [--parts emoji,1e5,1e6]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

import icfrr_fast
from icfrr_fast import FaissICFRR, GalleryGraph, ICFRRIndex, metrics
from icfrr_fast.testing import cross_domain_features


def _clock(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _cpu_flags() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    flags = next((line.split(":", 1)[1].split() for line in out.splitlines() if line.startswith("Flags")), [])
    return " ".join(f for f in flags if f.startswith(("avx", "fma", "f16c")))


def machine_info(faiss) -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cpu_flags": _cpu_flags(), "cores": os.cpu_count(),
            "threads": icfrr_fast.get_num_threads(), "faiss_threads": faiss.omp_get_max_threads(),
            "torch": torch.__version__, "faiss": faiss.__version__, "icfrr_fast": icfrr_fast.__version__,
            "load_average_at_start": os.getloadavg()}


def map_all(I: torch.Tensor, q_lab: torch.Tensor, g_lab: torch.Tensor) -> float:
    """mAP@all of rankings that may end in padding (-1 = not retrieved)."""
    rel = metrics.relevance(I.clamp_min(0), q_lab, g_lab) & (I >= 0)
    n_pos = metrics._positives_per_query(q_lab, g_lab)
    ok = n_pos > 0
    return float(metrics.average_precision(rel, n_pos)[ok].mean())


def recall_chunked(rows_a: torch.Tensor, rows_b: torch.Tensor, chunk: int = 64) -> float:
    """Mean over rows of |a ∩ b| / |b| (padding -1 never matches), chunk by chunk."""
    hits, total = 0.0, 0
    for r0 in range(0, rows_a.shape[0], chunk):
        b = rows_b[r0:r0 + chunk].long()
        a = rows_a[r0:r0 + chunk].long()
        hits += float(((a[:, :, None] == b[:, None, :]).any(dim=1) & (b >= 0)).sum())
        total += int((b >= 0).sum())
    return hits / total


def exact_rows(x: torch.Tensor, rows: torch.Tensor, k: int) -> torch.Tensor:
    """Exact k nearest other items (L2) of x[rows], self removed by index."""
    _, ids = icfrr_fast.knn(x[rows], x, k + 1, metric="l2sq")
    out = torch.empty((len(rows), k), dtype=torch.int64)
    for n, r in enumerate(rows.tolist()):
        row = ids[n][ids[n] != r]
        out[n] = row[:k]
    return out


def run_case(name, faiss, x, q, q_lab, g_lab, indexes, *, k_g, k_q, depth, iters, beta, exact, rows=None,
             exact_row_lists=None, exact_query_lists=None, log=print):
    """Measure every index of ``indexes`` (name -> (factory, graph_params, search_params)) on one data set."""
    G = x.shape[0]
    res = {"G": G, "D": x.shape[1], "Q": q.shape[0], "k_g": k_g, "k_q": k_q, "depth": depth, "iters": iters,
           "beta": beta, "indexes": {}}
    xs, qs = x.numpy(), q.numpy()
    if exact:
        index, t_build = _clock(lambda: ICFRRIndex(x, k_g=k_g, metric="l2"))
        res["exact"] = {"graph_s": t_build}
        log(f"[{name}] exact graph {t_build:.1f} s")
        (D, I, H), t = _clock(lambda: index.search(q, depth, depth=depth, k_q=k_q, iters=iters, beta=beta,
                                                   return_history=True))
        res["exact"].update(search_depth_s=t, map_initial=map_all(H[:, 0], q_lab, g_lab),
                            map_icfrr_depth=map_all(I, q_lab, g_lab))
        if depth < G:
            (_, I_full), t = _clock(lambda: index.search(q, depth, depth=None, k_q=k_q, iters=iters, beta=beta))
            res["exact"].update(search_full_s=t, map_icfrr_full_depth=map_all(I_full, q_lab, g_lab))
        exact_row_lists = index.graph.neighbors
        exact_query_lists = H[:, 0]
        rows = torch.arange(G)
        log(f"[{name}] exact {res['exact']}")
    for iname, (factory, graph_params, search_params) in indexes.items():
        r = {}
        index, r["build_s"] = _clock(lambda: factory(xs))
        graph_params_applied = {}
        for (obj_name, attr), v in graph_params.items():
            setattr(_sub(index, obj_name), attr, v)
            graph_params_applied[f"{obj_name}.{attr}" if obj_name else attr] = v
        graph, r["graph_s"] = _clock(lambda: GalleryGraph.from_faiss(index, k_g, x=x))
        r["graph_params"] = graph_params_applied
        r["graph_recall"] = recall_chunked(graph.neighbors[rows], exact_row_lists)
        search_params_applied = {}
        for (obj_name, attr), v in search_params.items():
            setattr(_sub(index, obj_name), attr, v)
            search_params_applied[f"{obj_name}.{attr}" if obj_name else attr] = v
        r["search_params"] = search_params_applied
        (_, cand), r["faiss_search_s"] = _clock(lambda: index.search(qs, depth))
        searcher = FaissICFRR(index, graph)
        (D, I, H), r["search_s"] = _clock(lambda: searcher.search(q, depth, depth=depth, k_q=k_q, iters=iters,
                                                                  beta=beta, return_history=True))
        r["candidates_per_query"] = float((I >= 0).sum(dim=1).double().mean())
        r["candidate_recall"] = recall_chunked(torch.from_numpy(cand), exact_query_lists)
        r["map_initial"] = map_all(H[:, 0], q_lab, g_lab)
        r["map_icfrr"] = map_all(I, q_lab, g_lab)
        res["indexes"][iname] = r
        log(f"[{name}] {iname}: {r}")
        del index, graph, searcher
    return res


def _sub(index, obj_name):
    return getattr(index, obj_name) if obj_name else index


def emoji_features():
    """The demo's features: EfficientNet-Lite0 (input 128 px), from the demo's cache (computed once if missing)."""
    from icfrr_fast.demo.backbone import EfficientNetLite0, FeatureCache, default_cache_dir
    from icfrr_fast.demo.emoji import load_emoji

    ds = load_emoji()
    bb, cache = EfficientNetLite0(input_size=128), FeatureCache(default_cache_dir())
    (q, hit_q), t_q = _clock(lambda: cache.embed(bb, ds.queries))
    (g, hit_g), t_g = _clock(lambda: cache.embed(bb, ds.gallery))
    lab = torch.from_numpy(ds.labels("group"))
    return q, g, lab, lab, {"features_from_cache": bool(hit_q and hit_g), "features_s": t_q + t_g}


def main(argv=None):
    import faiss

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--parts", default="emoji,1e5,1e6")
    args = p.parse_args(argv)
    parts = args.parts.split(",")
    out = {"machine": machine_info(faiss), "cases": {}}
    t0 = time.perf_counter()

    def save():
        out["machine"]["load_average_at_end"] = os.getloadavg()
        out["wall_s"] = time.perf_counter() - t0
        if args.out:
            with open(args.out, "w") as f:
                json.dump(out, f, indent=1)

    if "emoji" in parts:
        q, g, ql, gl, info = emoji_features()
        D = g.shape[1]

        def ivf(xs):
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(D), D, 40)
            index.train(xs)
            index.add(xs)
            return index

        def hnsw(xs):
            index = faiss.IndexHNSWFlat(D, 32)
            index.add(xs)
            return index

        def pq(xs):
            index = faiss.IndexPQ(D, 64, 6)
            index.train(xs)
            index.add(xs)
            return index

        G = g.shape[0]
        indexes = {"IVF40,Flat nprobe=10": (ivf, {("", "nprobe"): 10}, {}),
                   "HNSW32,Flat efSearch=G": (hnsw, {("hnsw", "efSearch"): 300}, {("hnsw", "efSearch"): G}),
                   "PQ64x6": (pq, {}, {})}
        res = run_case("emoji", faiss, g, q, ql, gl, indexes, k_g=256, k_q=250, depth=G, iters=5, beta=0.5,
                       exact=True)
        res.update(info)
        out["cases"]["emoji"] = res
        save()

    if "1e5" in parts:
        d = cross_domain_features(1000, 100_000, dim=64, num_classes=1000, seed=0)
        D = 64

        def ivf(xs):
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(D), D, 316)
            index.train(xs)
            index.add(xs)
            return index

        def hnsw(xs):
            index = faiss.IndexHNSWFlat(D, 16)
            index.hnsw.efConstruction = 40
            index.add(xs)
            return index

        def ivfpq(xs):
            index = faiss.IndexIVFPQ(faiss.IndexFlatL2(D), D, 316, 16, 8)
            index.train(xs)
            index.add(xs)
            return index

        indexes = {"IVF316,Flat nprobe=8": (ivf, {("", "nprobe"): 8}, {}),
                   "HNSW16,Flat": (hnsw, {("hnsw", "efSearch"): 64}, {("hnsw", "efSearch"): 1000}),
                   "IVF316,PQ16x8 nprobe=8": (ivfpq, {("", "nprobe"): 8}, {})}
        out["cases"]["synthetic_1e5"] = run_case("1e5", faiss, d.gallery, d.queries, d.query_labels,
                                                 d.gallery_labels, indexes, k_g=64, k_q=100, depth=1000, iters=5,
                                                 beta=0.5, exact=True)
        save()

    if "1e6" in parts:
        d = cross_domain_features(1000, 1_000_000, dim=64, num_classes=10_000, seed=0)
        D, G = 64, 1_000_000
        sample = torch.from_numpy(np.sort(np.random.default_rng(0).choice(G, 1000, replace=False)))
        (ex_rows, ex_q), t_exact = _clock(lambda: (exact_rows(d.gallery, sample, 32),
                                                   icfrr_fast.knn(d.queries, d.gallery, 1000, metric="l2sq")[1]))

        def ivf(xs):
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(D), D, 4096)
            index.cp.niter = 10
            rng = np.random.default_rng(0)
            index.train(xs[rng.choice(len(xs), 65536, replace=False)])
            index.add(xs)
            return index

        indexes = {"IVF4096,Flat nprobe=4": (ivf, {("", "nprobe"): 4}, {("", "nprobe"): 16})}
        res = run_case("1e6", faiss, d.gallery, d.queries, d.query_labels, d.gallery_labels, indexes, k_g=32,
                       k_q=100, depth=1000, iters=5, beta=0.5, exact=False, rows=sample, exact_row_lists=ex_rows,
                       exact_query_lists=ex_q)
        res["exact_sample_lists_s"] = t_exact
        out["cases"]["synthetic_1e6"] = res
        save()
    save()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())
