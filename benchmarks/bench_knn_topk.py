"""Fused k-NN (knn_topk) against the paths a user would pick instead: faiss-cpu exact search, and torch matmul +
torch.topk over row tiles; plus the best float32 matrix-product rate of this machine, measured in the same run.

Question per group: "k-NN graph of G items (D, k): how fast is each provider, and what share of the best fp32
matmul rate does it reach?" Every provider runs on the same threads (``BENCH_THREADS``, default all cores) and on
the same features; icfrr_fast's result is checked once against faiss (tie-aware), outside the timed call. Ratios
from the same run land in each entry's extra_info (printed by the summary; faiss is the group's baseline):
``metric_performed_vs_sgemm`` (the FLOPs icfrr_fast performs per second over the best matmul rate: numpy/OpenBLAS
or torch), ``metric_effective_vs_sgemm`` (the problem's 2 G^2 D per second over it), ``metric_vs_fp32`` (bf16 and
the forced-AVX2 run: speed over the default fp32 run). The SIMD level and CPU flags of every run are recorded
(benchmarks/conftest.py); ``icfrr_fast-avx2`` forces the AVX2 level (set_simd_level) for comparison.

Run (see benchmarks/README.md; faiss and numpy use OpenBLAS, whose kernel choice depends on OPENBLAS_CORETYPE; the
BLAS kernel in use is recorded in extra_info["blas"]):

    pytest benchmarks/bench_knn_topk.py --benchmark-enable -m "not slow" \
        --benchmark-json=benchmarks/results/knn_topk-$(hostname).json

``-m slow`` adds the headline size G = 50,000, D = 768, k = 257 (minutes per provider on 2 cores).
"""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np
import pytest
import torch

import icfrr_fast
from icfrr_fast.testing import cross_domain_features

faiss = pytest.importorskip("faiss")

# (G, D, k): graph builds (queries = the gallery, self excluded)
SIZES = [
    pytest.param(10_000, 768, 257, id="G=10000,D=768,k=257"),
    pytest.param(50_000, 128, 257, id="G=50000,D=128,k=257"),
    pytest.param(50_000, 768, 257, id="G=50000,D=768,k=257", marks=pytest.mark.slow),
]
# icfrr_fast-plain: the symmetric graph build switched off (every pair computed twice, like faiss and torch do);
# icfrr_fast-avx2: the AVX2 level forced. Order matters: matmul first and icfrr_fast before the ratios against them.
PROVIDERS = ["matmul", "faiss", "icfrr_fast", "icfrr_fast-plain", "icfrr_fast-bf16", "icfrr_fast-avx2", "torch"]
_same_run = {}  # (G, D, k) -> {"sgemm_gflops": best matmul rate, "fp32_seconds": icfrr_fast's time}
TORCH_TILE_ROWS = 4096  # torch path: (4096, G) score tiles, then torch.topk: the naive "materialise, then select"


def _threads() -> int:
    return int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))


def _blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info

        return "; ".join(f"{i.get('internal_api')}:{i.get('architecture')}:{i.get('num_threads')}"
                         for i in threadpool_info()) + f"; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}"
    except ImportError:  # threadpoolctl is a bench extra
        return "threadpoolctl not installed"


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(__file__)).stdout.strip()
    except OSError:
        return "unknown"


_features_cache = {}


def _features(G: int, D: int) -> torch.Tensor:
    if (G, D) not in _features_cache:  # every size stays cached: the providers of the sizes alternate
        _features_cache[(G, D)] = cross_domain_features(1, G, dim=D, num_classes=100, intrinsic_dim=64,
                                                        seed=0).gallery.contiguous()
    return _features_cache[(G, D)]


def _torch_knn(g: torch.Tensor, k: int):
    """Naive path: tiles of the score matrix by torch.matmul, self masked, torch.topk per tile of rows."""
    G = g.shape[0]
    vals = torch.empty(G, k)
    ids = torch.empty(G, k, dtype=torch.int64)
    for r0 in range(0, G, TORCH_TILE_ROWS):
        s = g[r0:r0 + TORCH_TILE_ROWS] @ g.T
        r = torch.arange(s.shape[0])
        s[r, r + r0] = -float("inf")
        v, i = torch.topk(s, k, dim=1)
        vals[r0:r0 + TORCH_TILE_ROWS], ids[r0:r0 + TORCH_TILE_ROWS] = v, i
    return vals, ids


def _best_matmul(g: torch.Tensor):
    """The float32 matrix product this machine runs fastest: numpy (OpenBLAS) or torch, on a (4096 x D) x (D x G')
    product of the benchmark's own shape (G' = min(G, 16384)); returns a callable and its FLOP count."""
    a = g[:4096].numpy()
    b = np.ascontiguousarray(g[: min(g.shape[0], 16384)].numpy().T)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out_np = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
    out_t = torch.from_numpy(out_np)
    flop = 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
    candidates = {"numpy": lambda: np.matmul(a, b, out=out_np), "torch": lambda: torch.mm(ta, tb, out=out_t)}
    best, best_t = None, float("inf")
    for name, f in candidates.items():
        f()
        t = min(_timed(f) for _ in range(3))
        if t < best_t:
            best, best_t = name, t
    return best, candidates[best], flop


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


@pytest.mark.parametrize("G,D,k", SIZES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_knn_graph(benchmark, provider, G, D, k):
    nt = _threads()
    torch.set_num_threads(nt)
    icfrr_fast.set_num_threads(nt)
    faiss.omp_set_num_threads(nt)
    g = _features(G, D)
    gn = g.numpy()
    flop = 2.0 * G * G * D
    benchmark.group = f"k-NN graph G={G} D={D} k={k} (inner product, self excluded)"
    benchmark.extra_info.update(G=G, D=D, k=k, threads=nt, provider=provider, torch=torch.__version__,
                                faiss=faiss.__version__, blas=_blas_info(), commit=_git_commit(),
                                baseline=provider == "faiss")
    icfrr_fast.set_simd_level("avx2" if provider == "icfrr_fast-avx2" else None)
    benchmark.extra_info.update(simd_level=icfrr_fast.simd_level(), knn_kernel=icfrr_fast.cpu_info()["knn_kernel"])
    if provider.startswith("icfrr_fast"):
        precision = "bf16" if provider.endswith("bf16") else "fp32"
        icfrr_fast._native.set_knn_symmetric_enabled(provider != "icfrr_fast-plain")
        symmetric = icfrr_fast._native.load().knn_topk_symmetric_rows(G=G, D=D, k=k, num_threads=nt) > 0
        # FLOPs actually performed: the symmetric build computes each pair once
        benchmark.extra_info.update(symmetric=symmetric, gflop_performed=(flop / 2 if symmetric else flop) / 1e9)
        run = lambda: icfrr_fast.knn(g, g, k, metric="ip", exclude_self=True, precision=precision)  # noqa: E731
        v, i = run()
        # checked once, outside the timed calls, on every 97th row: same neighbours as faiss up to float32 near-ties
        rows = torch.arange(0, G, 97)
        fv, fi = faiss.knn(gn[rows.numpy()], gn, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
        fi = torch.from_numpy(fi)
        keep = fi != rows[:, None]
        agree = np.mean([len(set(i[int(r)].tolist()) & set(fi[n][keep[n]][:k].tolist())) / k
                         for n, r in enumerate(rows)])
        benchmark.extra_info["recall_vs_faiss"] = float(agree)
        if precision == "fp32":
            assert agree > 0.999, f"icfrr_fast fp32 disagrees with faiss: recall {agree}"
    elif provider == "faiss":
        run = lambda: faiss.knn(gn, gn, k + 1, metric=faiss.METRIC_INNER_PRODUCT)  # noqa: E731 (+1: self)
    elif provider == "torch":
        run = lambda: _torch_knn(g, k)  # noqa: E731
    else:
        name, run, flop = _best_matmul(g)
        benchmark.extra_info["matmul"] = name
    try:
        # the matmul takes a second: 5 rounds, so that its best is not one unlucky moment on a shared machine
        rounds = 5 if provider == "matmul" else 3 if G * G * D < 1e12 else 1
        result = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    finally:
        icfrr_fast._native.set_knn_symmetric_enabled(True)
        icfrr_fast.set_simd_level(None)
    del result
    seconds = benchmark.stats.stats.min
    info = benchmark.extra_info
    info["gflops"] = flop / seconds / 1e9  # 2 G^2 D / time: the work of the plain problem
    same = _same_run.setdefault((G, D, k), {})
    if provider == "matmul":
        same["sgemm_gflops"] = info["gflops"]
    if provider == "icfrr_fast":
        same["fp32_seconds"] = seconds
    if "gflop_performed" in info:
        info["gflops_performed"] = info["gflop_performed"] / seconds
        if "sgemm_gflops" in same:
            info["metric_performed_vs_sgemm"] = info["gflops_performed"] / same["sgemm_gflops"]
            info["metric_effective_vs_sgemm"] = info["gflops"] / same["sgemm_gflops"]
        if provider != "icfrr_fast" and "fp32_seconds" in same:
            info["metric_vs_fp32"] = same["fp32_seconds"] / seconds


RECALL_CASES = [
    pytest.param("clustered", 768, "cosine", id="clustered,D=768,cosine"),
    pytest.param("clustered", 128, "l2", id="clustered,D=128,l2"),
    pytest.param("gaussian", 768, "ip", id="gaussian,D=768,ip"),
]


def _recall(ids: torch.Tensor, ref: torch.Tensor, k: int) -> float:
    """Mean over rows of |first k of ids ∩ first k of ref| / k."""
    a, b = ids[:, :k], ref[:, :k]
    hits = (a[:, :, None] == b[:, None, :]).any(dim=2).sum()
    return float(hits) / a.numel()


@pytest.mark.parametrize("kind,D,metric", RECALL_CASES)
def test_bf16_recall(benchmark, kind, D, metric):
    """Neighbour recall of precision="bf16" against the exact float32 graph (G = 20,000, k = 256)."""
    G, k = 20_000, 256
    nt = _threads()
    icfrr_fast.set_num_threads(nt)
    if kind == "clustered":
        g = cross_domain_features(1, G, dim=D, num_classes=200, intrinsic_dim=64, seed=1).gallery
    else:
        g = torch.randn(G, D, generator=torch.Generator().manual_seed(1))
    ref = icfrr_fast.knn(g, g, k, metric=metric, exclude_self=True).indices
    benchmark.group = f"bf16 recall vs float32, G={G} k={k}"
    v, i = benchmark.pedantic(lambda: icfrr_fast.knn(g, g, k, metric=metric, exclude_self=True, precision="bf16"),
                              rounds=1, iterations=1)
    benchmark.extra_info.update(provider="icfrr_fast-bf16", data=kind, D=D, metric=metric, G=G, k=k, threads=nt,
                                **{f"recall@{n}": _recall(i, ref, n) for n in (1, 10, 100, 256)})
