"""``icfrr-fast rerank``: ICFRR over cached distance matrices, metrics after every iteration, rankings saved.

Inputs use the common cache format of the released ICFRR code: ``qg_dists.pth`` (Q, G) and ``gg_dists.pth``
(G, G) distance matrices (e.g. ``torch.cdist`` outputs), optional ``labels.pth`` = dict with int tensors ``query``
(Q,) and ``gallery`` (G,). ``.npy`` files work too. Files are untrusted: ``.pth`` loads with
``torch.load(weights_only=True)`` and ``.npy`` without pickle, so a file that would run code is refused.

Queries are processed in chunks (``--chunk``, made smaller when a chunk's per-iteration rankings would exceed
``HISTORY_BUDGET_BYTES``), so per-iteration metrics never need all queries' histories at once, and only the requested
``--k`` columns of each chunk are kept. The output (``indices`` (Q, k) int64, ``values`` (Q, k) in the scores'
dtype, the metrics and the settings) is written atomically: an interrupted run (Ctrl-C) leaves no partial file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from .. import _native, io
from ..graph import GalleryGraph
from ..metrics import IterationMetrics
from ..rerank import icfrr
from .._checks import check_k_g


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cache_dir", nargs="?", type=Path, help="folder with qg_dists.pth, gg_dists.pth [, labels.pth]")
    p.add_argument("--qg", type=Path, help="query-gallery matrix (.pth/.pt/.npy); default CACHE_DIR/qg_dists.pth")
    p.add_argument("--gg", type=Path, help="gallery-gallery matrix (.pth/.pt/.npy); default CACHE_DIR/gg_dists.pth")
    p.add_argument("--labels", type=Path, help="labels.pth: dict with int tensors 'query' and 'gallery'")
    p.add_argument("--query-labels", type=Path, help="query labels (.npy/.pth), instead of --labels")
    p.add_argument("--gallery-labels", type=Path, help="gallery labels (.npy/.pth), instead of --labels")
    p.add_argument("--similarity", action="store_true", help="the matrices hold similarities (default: distances)")
    p.add_argument("--k-g", type=int, default=256, help="neighbours per gallery item (default 256)")
    p.add_argument("--k-q", type=int, default=250, help="voters per query (default 250)")
    p.add_argument("--beta", type=float, default=0.5, help="vote weight (default 0.5)")
    p.add_argument("--iters", type=int, default=5, help="iterations (default 5)")
    p.add_argument("--semantics", choices=("reference", "paper"), default="reference")
    p.add_argument("--k", type=int, default=None, help="results saved per query (default: all)")
    p.add_argument("--depth", type=int, default=None, help="re-rank only the top-DEPTH candidates (approximate)")
    p.add_argument("--early-stop", action="store_true", help="stop a query once its voter set is unchanged")
    p.add_argument("--map-at", type=int, nargs="*", default=[200], help="K of each mAP@K (default 200)")
    p.add_argument("--precision-at", type=int, nargs="*", default=[100, 200], help="K of each P@K")
    p.add_argument("--chunk", type=int, default=256, help="queries per chunk (bounds memory)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's setting)")
    p.add_argument("--out", type=Path, help="output file (default CACHE_DIR/icfrr_rankings.pth)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


#: with labels, a chunk's (chunk, T + 1, L) int64 rankings (one per iteration) stay within this many bytes
HISTORY_BUDGET_BYTES = 1 << 30


def _resolve(args: argparse.Namespace, attr: str, default_name: str, required: bool) -> Optional[Path]:
    path = getattr(args, attr)
    if path is None and args.cache_dir is not None:
        candidate = args.cache_dir / default_name
        if candidate.exists() or required:
            path = candidate
    if path is None and required:
        raise ValueError(f"--{attr} is required when no CACHE_DIR is given")
    return path


def _matrix(path: Path, name: str) -> torch.Tensor:
    t = io.load_tensor_file(path)
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{path}: expected a tensor ({name}); got {type(t).__name__}")
    return t


def _label_vector(t, where: str) -> torch.Tensor:
    """A 1-D integer (or bool) label tensor, or ValueError naming where it came from."""
    if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
        raise ValueError(f"{where}: expected a 1-D tensor of int labels; got {type(t).__name__}")
    if t.dim() != 1 or t.dtype.is_floating_point or t.dtype.is_complex:
        raise ValueError(f"{where}: expected a 1-D tensor of int labels; got shape {tuple(t.shape)}, {t.dtype}")
    return t


def _load_labels(args: argparse.Namespace):
    labels_path = _resolve(args, "labels", "labels.pth", required=False)
    if labels_path is not None:
        d = io.load_tensor_file(labels_path)
        if not isinstance(d, dict) or "query" not in d or "gallery" not in d:
            raise ValueError(f"{labels_path}: expected a dict with int tensors 'query' and 'gallery'")
        return (_label_vector(d["query"], f"{labels_path}['query']"),
                _label_vector(d["gallery"], f"{labels_path}['gallery']"))
    if args.query_labels is not None or args.gallery_labels is not None:
        if args.query_labels is None or args.gallery_labels is None:
            raise ValueError("--query-labels and --gallery-labels go together")
        return (_label_vector(_matrix(args.query_labels, "query labels"), str(args.query_labels)),
                _label_vector(_matrix(args.gallery_labels, "gallery labels"), str(args.gallery_labels)))
    return None


def _check_args(args: argparse.Namespace) -> None:
    """Everything that does not need the data, before any file is read."""
    for flag, v, lo in (("--chunk", args.chunk, 1), ("--k", args.k, 1), ("--depth", args.depth, 1),
                        ("--threads", args.threads, 1), ("--k-g", args.k_g, 1), ("--k-q", args.k_q, 1),
                        ("--iters", args.iters, 0)):
        if v is not None and v < lo:
            raise ValueError(f"{flag} must be >= {lo}; got {v}")
    for flag, ks in (("--map-at", args.map_at), ("--precision-at", args.precision_at)):
        if any(K < 1 for K in ks):
            raise ValueError(f"{flag} must hold positive ints; got {ks}")
    if args.out is not None and args.out.is_dir():
        raise ValueError(f"--out {args.out} is a directory; give a file name")


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="query", desc="icfrr", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    if args.threads is not None:
        _native.set_num_threads(args.threads)
    qg = _matrix(_resolve(args, "qg", "qg_dists.pth", required=True), "qg_dists")
    gg = _matrix(_resolve(args, "gg", "gg_dists.pth", required=True), "gg_dists")
    labels = _load_labels(args)
    largest = bool(args.similarity)
    if qg.dim() != 2 or gg.dim() != 2:
        raise ValueError(f"expected 2-D matrices; got qg {tuple(qg.shape)}, gg {tuple(gg.shape)}")
    Q, G = qg.shape
    if labels is not None and (labels[0].shape[0] != Q or labels[1].shape[0] != G):
        raise ValueError(f"labels must have {Q} query and {G} gallery entries; got {labels[0].shape[0]} and "
                         f"{labels[1].shape[0]}")

    if gg.shape != (G, G):
        raise ValueError(f"gg must be ({G}, {G}) to match qg's {G} gallery columns; got {tuple(gg.shape)}")
    check_k_g(args.k_g, G, name="--k-g: k_g")
    t0 = time.perf_counter()
    graph = GalleryGraph.from_distances(gg, args.k_g, largest=largest)
    t_graph = time.perf_counter() - t0
    del gg
    want_metrics = labels is not None
    if args.depth is not None and args.depth > G:
        raise ValueError(f"--depth must be in [1, G] = [1, {G}]; got {args.depth}")
    L = G if args.depth is None else args.depth
    if args.k is not None and args.k > L:
        raise ValueError(f"--k must be in [1, {L}] (the candidate depth); got {args.k}")
    k_out = L if args.k is None else args.k
    chunk = args.chunk
    if want_metrics:  # each query's rankings after every iteration: (T + 1) L int64 (+ values and indices)
        chunk = max(1, min(chunk, HISTORY_BUDGET_BYTES // ((args.iters + 3) * L * 8)))
    indices, values = [], []
    accumulated = IterationMetrics(labels[1], map_at=tuple(args.map_at), precision_at=tuple(args.precision_at)) \
        if want_metrics else None
    bar = _progress(Q, not args.no_progress and sys.stderr.isatty())
    t0 = time.perf_counter()
    for start in range(0, Q, chunk):
        stop = min(Q, start + chunk)
        # metrics need each iteration's full candidate list; the saved output keeps copies of the first k_out
        # columns, so the chunk's full (chunk, L) outputs are freed before the next chunk
        res = icfrr(qg[start:stop], graph, k_g=args.k_g, k_q=args.k_q, beta=args.beta, iters=args.iters,
                    semantics=args.semantics, largest=largest, depth=args.depth,
                    k=None if want_metrics else k_out, return_history=want_metrics, early_stop=args.early_stop)
        indices.append(res.indices[:, :k_out].clone())
        values.append(res.values[:, :k_out].clone())
        if want_metrics:
            accumulated.update(res.history, labels[0][start:stop])
        del res
        if bar is not None:
            bar.update(stop - start)
    if bar is not None:
        bar.close()
    t_rerank = time.perf_counter() - t0

    metrics = accumulated.compute() if want_metrics else []
    print(f"graph: G={G}, k_g={args.k_g} in {t_graph:.2f} s; ICFRR: Q={Q}, T={args.iters} in {t_rerank:.2f} s")
    if metrics:
        names = list(metrics[0])
        print("iter  " + "  ".join(f"{n:>9}" for n in names))
        for t, m in enumerate(metrics):
            print(f"{t:>4}  " + "  ".join(f"{m[n]:9.4f}" for n in names))
        excluded = accumulated.queries_without_positive
        if excluded:
            print(f"({excluded} queries without a positive in the gallery were excluded)")
    out = args.out if args.out is not None else (args.cache_dir or Path(".")) / "icfrr_rankings.pth"
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "command"}
    io.atomic_save({"indices": torch.cat(indices) if indices else torch.empty(0, k_out, dtype=torch.int64),
                     "values": torch.cat(values) if values else torch.empty(0, k_out, dtype=qg.dtype),
                     "metrics": metrics, "settings": settings}, out)
    print(f"saved {out}")
    return 0
