"""``icfrr-fast tune``: choose the parameters of ICFRR and of each re-ranker it is compared with on labelled
validation queries, and report the choice's score on queries it was not chosen on.

The labelled queries are split at random (seeded) into a tuning part and a held-out part. Every setting of every
method's grid runs on the tuning queries with the fused kernels (``icfrr_fast.ICFRRIndex`` for ICFRR, the
``icfrr_fast.rerankers`` for the others); for each method and metric the best setting is then run on the held-out
queries, and that score is the one to quote (the tuning score is optimistic: it is the maximum over the grid).

Input: a feature cache (``icfrr-fast features --out``: a .pth dict with "query", "query_labels", "gallery",
"gallery_labels"), or ``--query``/``--gallery`` feature files with ``--labels`` (a dict with "query" and "gallery"
int tensors). Output folder: ``tune.json`` (every run), ``tune.md`` (the table) and ``tune.png`` (held-out score per
method, each at its best setting, against no re-ranking).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
from torch import Tensor

from .. import _native, io, rerankers
from ..index import ICFRRIndex
from ..knn import knn
from ..metrics import evaluate

#: parameter grids per method (settings that do not fit the data are clipped, then deduplicated)
GRIDS: Dict[str, Dict[str, tuple]] = {
    "none": {},
    "icfrr": {"k_g": (10, 20, 50, 100, 256), "k_q": (10, 20, 50, 100, 250), "beta": (0.5,), "iters": (5,)},
    "k_reciprocal": {"k1": (10, 20, 30), "k2": (3, 6), "lambda_value": (0.1, 0.3, 0.5)},
    "aqe": {"top": (1, 2, 5, 10)},
    "alpha_qe": {"top": (2, 5, 10), "alpha": (1.0, 3.0)},
    "dba": {"top": (1, 2, 5, 10)},
    "ecn": {"t": (2, 3, 5), "q": (4, 8)},
    "superglobal": {"M": (100, 400), "K": (5, 9), "beta": (0.15,)},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cache", nargs="?", type=Path, help="feature cache (.pth) from `icfrr-fast features`")
    p.add_argument("--query", type=Path, help="query features (.pth/.npy), instead of CACHE")
    p.add_argument("--gallery", type=Path, help="gallery features (.pth/.npy), instead of CACHE")
    p.add_argument("--labels", type=Path, help="with --query/--gallery: dict with int tensors 'query', 'gallery'")
    p.add_argument("--methods", nargs="*", default=list(GRIDS), choices=list(GRIDS), help="methods to sweep")
    p.add_argument("--k", type=int, default=100, help="results per query that are scored (default 100)")
    p.add_argument("--metrics", nargs="*", default=["mAP@all", "P@100"],
                   help="metrics to choose by (names of icfrr_fast.metrics.evaluate; default mAP@all P@100)")
    p.add_argument("--tune-fraction", type=float, default=0.5, help="share of the queries tuned on (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query split")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's setting)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def settings(method: str, G: int, k: int) -> List[Dict[str, float]]:
    """The grid of ``method``, each value clipped to what G gallery items allow (SuperGlobal's shortlist M to at
    least the k scored results), duplicates removed."""
    grid = GRIDS[method]
    limits = {"k_g": G - 1, "k_q": G, "k1": G - 1, "top": G - 1, "t": G - 1, "q": G - 1}
    out: List[Dict[str, float]] = []
    for values in itertools.product(*grid.values()):
        s = {n: (min(v, limits[n]) if n in limits else v) for n, v in zip(grid, values)}
        if "M" in s:
            s["M"] = min(G, max(s["M"], k))
        if s not in out:
            out.append(s)
    return out


def ranker(method: str, query: Tensor, gallery: Tensor, k: int) -> Callable[[Dict], Tensor]:
    """A function setting -> (Q, k) ranked gallery ids of ``query``; graphs shared across settings are built once."""
    G = gallery.shape[0]
    if method == "none":
        return lambda s: knn(query, gallery, k, metric="l2").indices
    if method == "icfrr":
        index = ICFRRIndex(gallery, k_g=min(max(GRIDS["icfrr"]["k_g"]), G - 1), metric="l2")
        return lambda s: index.search(query, k, k_q=s["k_q"], beta=s["beta"], iters=s["iters"], k_g=s["k_g"])[1]
    if method == "k_reciprocal":
        return lambda s: rerankers.k_reciprocal_features(query, gallery, k=k, **s)[1]
    if method in ("aqe", "alpha_qe", "dba"):
        qn = torch.nn.functional.normalize(query.to(torch.float32), dim=1)
        gn = torch.nn.functional.normalize(gallery.to(torch.float32), dim=1)
        fn = getattr(rerankers, method)
        return lambda s: fn(qn, gn, k=k, **s)[1]
    if method == "ecn":
        return lambda s: rerankers.ecn(query, gallery, depth=max(k, s["t"]), k=k, **s)[1]
    if method == "superglobal":
        qn = torch.nn.functional.normalize(query.to(torch.float32), dim=1)
        gn = torch.nn.functional.normalize(gallery.to(torch.float32), dim=1)
        return lambda s: rerankers.superglobal(qn, gn, k=k, **s)[1]
    raise ValueError(f"unknown method {method!r}")


def _load(args: argparse.Namespace) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    if args.cache is not None:
        d = io.load_tensor_file(args.cache)
        need = ("query", "query_labels", "gallery", "gallery_labels")
        if not isinstance(d, dict) or any(n not in d for n in need):
            raise ValueError(f"{args.cache}: expected a feature cache dict with {need}")
        return tuple(torch.as_tensor(d[n]) for n in need)
    if args.query is None or args.gallery is None or args.labels is None:
        raise ValueError("give a feature CACHE, or --query, --gallery and --labels")
    labels = io.load_tensor_file(args.labels)
    if not isinstance(labels, dict) or "query" not in labels or "gallery" not in labels:
        raise ValueError(f"{args.labels}: expected a dict with int tensors 'query' and 'gallery'")
    return (torch.as_tensor(io.load_tensor_file(args.query)), torch.as_tensor(labels["query"]),
            torch.as_tensor(io.load_tensor_file(args.gallery)), torch.as_tensor(labels["gallery"]))


def tune(query: Tensor, query_labels: Tensor, gallery: Tensor, gallery_labels: Tensor, *, methods: List[str],
         k: int, metrics: List[str], tune_fraction: float, seed: int, progress: bool = False) -> Dict:
    """The sweep (module docstring). Returns {"runs": [...], "best": [...], "split": {...}}."""
    Q, G = query.shape[0], gallery.shape[0]
    if not 0 < tune_fraction < 1:
        raise ValueError(f"--tune-fraction must be in (0, 1); got {tune_fraction}")
    if Q < 2:
        raise ValueError(f"tuning needs at least 2 labelled queries; got {Q}")
    if not 1 <= k <= G:
        raise ValueError(f"--k must be in [1, G] = [1, {G}]; got {k}")
    perm = torch.randperm(Q, generator=torch.Generator().manual_seed(seed))
    n_tune = min(Q - 1, max(1, round(Q * tune_fraction)))
    parts = {"tune": perm[:n_tune].sort().values, "held_out": perm[n_tune:].sort().values}
    query = query.to(torch.float32)
    gallery = gallery.to(torch.float32)

    def score(ids: Tensor, part: str) -> Dict[str, float]:
        m = evaluate(ids, query_labels[parts[part]], gallery_labels, map_at=(k,), precision_at=(k,))
        unknown = [n for n in metrics if n not in m]
        if unknown:
            raise ValueError(f"--metrics {unknown} are not computed; choose from {sorted(m)}")
        return m

    grids = {m: settings(m, G, k) for m in methods}
    total = sum(len(v) for v in grids.values())
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="tune", unit="setting")
    runs, best = [], []
    try:
        for method in methods:
            run_tune = ranker(method, query[parts["tune"]], gallery, k)
            rows = []
            for s in grids[method]:
                t0 = time.perf_counter()
                ids = run_tune(s)
                rows.append({"method": method, "setting": s, "seconds": time.perf_counter() - t0,
                             "tune": score(ids, "tune")})
                if bar is not None:
                    bar.update(1)
            runs += rows
            run_held = ranker(method, query[parts["held_out"]], gallery, k)
            for metric in metrics:
                top = max(rows, key=lambda r: r["tune"][metric])  # first best on ties (grid order)
                held = score(run_held(top["setting"]), "held_out")
                best.append({"method": method, "metric": metric, "setting": top["setting"],
                             "tune": top["tune"][metric], "held_out": held[metric], "seconds": top["seconds"]})
    finally:
        if bar is not None:
            bar.close()
    return {"runs": runs, "best": best, "split": {"tune": int(parts["tune"].numel()),
                                                   "held_out": int(parts["held_out"].numel()), "seed": seed}}


def table(result: Dict) -> str:
    """Markdown: best setting per method and metric, its tuning score and its held-out score."""
    lines = [f"Queries: {result['split']['tune']} tuned on, {result['split']['held_out']} held out "
             f"(seed {result['split']['seed']}).", "",
             "| method | metric | best setting (on the tuning queries) | tuning | **held out** | s / run |",
             "|---|---|---|---|---|---|"]
    for b in result["best"]:
        s = ", ".join(f"{n}={v}" for n, v in b["setting"].items()) or "-"
        lines.append(f"| {b['method']} | {b['metric']} | {s} | {b['tune']:.4f} | **{b['held_out']:.4f}** | "
                     f"{b['seconds']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(result: Dict, metrics: List[str], path: Path) -> None:
    """Bar chart: held-out score of each method at its best setting, per metric."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        rows = [b for b in result["best"] if b["metric"] == metric]
        ax.barh([b["method"] for b in rows], [b["held_out"] for b in rows], color="tab:blue")
        base = next((b["held_out"] for b in rows if b["method"] == "none"), None)
        if base is not None:
            ax.axvline(base, color="k", linestyle="--", linewidth=1, label="no re-ranking")
            ax.legend(loc="lower right")
        ax.set_xlabel(f"{metric} (held-out queries, best setting)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        _native.set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    query, query_labels, gallery, gallery_labels = _load(args)
    result = tune(query, query_labels, gallery, gallery_labels, methods=list(args.methods), k=args.k,
                  metrics=list(args.metrics), tune_fraction=args.tune_fraction, seed=args.seed,
                  progress=not args.no_progress)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tune.json").write_text(json.dumps(result, indent=1))
    md = table(result)
    (args.out / "tune.md").write_text(md)
    plot(result, list(args.metrics), args.out / "tune.png")
    print(md)
    print(f"icfrr-fast tune: wrote {args.out / 'tune.json'}, tune.md, tune.png")
    return 0
