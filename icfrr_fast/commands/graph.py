"""``icfrr-fast graph``: build the exact gallery graph (K_g nearest other items per item) straight from features with
the fused k-NN, never a G x G matrix, and save it (``GalleryGraph.save``; ``GalleryGraph.load`` reads it back).

Features come from a ``.pth``/``.pt`` tensor file (loaded with ``weights_only=True``) or a ``.npy`` array (no
pickle). A progress bar shows on a terminal (``--no-progress`` hides it); the output is written atomically.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .. import _native, io
from ..graph import GalleryGraph
from ..ops import KNN_METRICS, KNN_PRECISIONS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("features", type=Path, help="gallery features (G, D): .pth/.pt tensor or .npy array")
    p.add_argument("--k-g", type=int, default=256, help="neighbours per gallery item (default 256)")
    p.add_argument("--metric", choices=KNN_METRICS, default="l2",
                   help="l2 (Euclidean distance, the released code's; default), l2sq, ip or cosine")
    p.add_argument("--precision", choices=KNN_PRECISIONS, default="fp32", help="k-NN arithmetic (default fp32)")
    p.add_argument("--no-values", action="store_true", help="store only the neighbour ids (halves the file)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's setting)")
    p.add_argument("--out", type=Path, help="output file (default: FEATURES folder / gallery_graph.pth)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        _native.set_num_threads(args.threads)
    g = io.load_tensor_file(args.features)
    if not isinstance(g, torch.Tensor):
        raise ValueError(f"{args.features}: expected a (G, D) tensor; got {type(g).__name__}")
    out = args.out if args.out is not None else args.features.parent / "gallery_graph.pth"
    t0 = time.perf_counter()
    graph = GalleryGraph.from_features(g, args.k_g, metric=args.metric, precision=args.precision,
                                       keep_values=not args.no_values,
                                       progress=not args.no_progress and sys.stderr.isatty())
    seconds = time.perf_counter() - t0
    graph.save(out)
    print(f"gallery graph G={graph.num_items} k_g={graph.k} metric={args.metric} in {seconds:.1f} s -> {out}")
    return 0
