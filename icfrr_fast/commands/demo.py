"""``icfrr-fast demo``: ICFRR on real cross-domain images, offline, in a few minutes on a CPU.

Line-art emoji (queries) retrieve colour emoji (gallery) of the same Unicode emoji group, with ImageNet-pretrained
EfficientNet-Lite0 features. Prints a table per ICFRR iteration for no re-ranking, ICFRR (reference and paper
semantics) and ClusterRetri, times icfrr_fast against icfrr_fast.reference, and writes a report (index.html, PNGs,
results.json) into ``--out``. With ``--checkpoint`` (a fine-tuned EfficientNet-Lite0 from ``icfrr-fast train``)
the fine-tuned features are used, on the unseen emoji by default, and the report sets them side by side with the
ImageNet features, each before and after ICFRR. Needs the demo extra: ``pip install "icfrr_fast[demo]"``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..demo.backbone import default_cache_dir

    p.add_argument("--out", type=Path, default=Path("icfrr_demo"), help="report folder (default: %(default)s)")
    p.add_argument("--k-g", type=int, default=256, help="ICFRR gallery neighbours K_g (default: %(default)s)")
    p.add_argument("--k-q", type=int, default=250, help="ICFRR voters K_q (default: %(default)s)")
    p.add_argument("--beta", type=float, default=0.5, help="ICFRR vote weight (default: %(default)s)")
    p.add_argument("--iters", type=int, default=5, help="ICFRR iterations (default: %(default)s)")
    p.add_argument("--queries", type=int, default=None, metavar="N",
                   help="use a random subset of N queries (default: all)")
    p.add_argument("--gallery", type=int, default=None, metavar="N",
                   help="use a random subset of N gallery items (default: all)")
    p.add_argument("--split", choices=("all", "unseen"), default=None,
                   help="all emoji, or only the unseen (zero-shot test) subgroups (default: all; unseen with "
                        "--checkpoint)")
    p.add_argument("--level", choices=("group", "subgroup"), default="group",
                   help="label level that decides relevance (default: %(default)s)")
    p.add_argument("--clusters", type=int, default=None, metavar="K",
                   help="ClusterRetri centroids per sub-space (default: the number of classes in the gallery)")
    p.add_argument("--subspaces", type=int, default=1, metavar="M",
                   help="ClusterRetri product-quantisation sub-spaces (default: %(default)s = k-means)")
    p.add_argument("--fusion", type=float, default=0.0, metavar="LAMBDA",
                   help="ClusterRetri weight of the direct distance, in [0, 1] (default: %(default)s)")
    p.add_argument("--input-size", type=int, default=None,
                   help="side the 64 px images are resized to for the network (default: 128; with --checkpoint "
                        "the size it was trained at)")
    p.add_argument("--checkpoint", type=Path, default=None, metavar="PTH",
                   help="fine-tuned EfficientNet-Lite0 from a training run (icfrr-fast train --config "
                        "icfrr_fast/training/configs/emoji.yaml: last.pth / best.pth); the report then sets its features "
                        "side by side with the ImageNet features, each before and after ICFRR")
    p.add_argument("--report-queries", type=int, default=6, help="queries shown in the report (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the fast path (default: %(default)s)")
    p.add_argument("--timing-queries", type=int, default=50, metavar="N",
                   help="queries the re-ranking timing uses (the reference is slow; default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of subsets, report queries, k-means (default: %(default)s)")
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                   help="feature cache (default: %(default)s; $ICFRR_FAST_CACHE overrides)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write cached features")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    try:
        from ..demo.experiment import DemoConfig, run_experiment
        from ..demo.report import format_comparison, format_finetune_comparison, format_table, format_timings, \
            write_report
    except ImportError as e:  # pragma: no cover - depends on the environment
        print(f'icfrr-fast demo needs the demo extra: pip install "icfrr_fast[demo]" ({e})', file=sys.stderr)
        return 3
    split = args.split or ("unseen" if args.checkpoint else "all")
    input_size = args.input_size
    if args.checkpoint is not None:
        from ..demo.backbone import checkpoint_input_size

        if not args.checkpoint.is_file():
            print(f"icfrr-fast demo: --checkpoint: no such file: {args.checkpoint}", file=sys.stderr)
            return 2
        if input_size is None:
            input_size = checkpoint_input_size(args.checkpoint)
    config = DemoConfig(
        k_g=args.k_g, k_q=args.k_q, beta=args.beta, iters=args.iters, queries=args.queries, gallery=args.gallery,
        split=split, level=args.level, input_size=128 if input_size is None else input_size,
        cache_dir=None if args.no_cache else str(args.cache_dir), clusters=args.clusters, subspaces=args.subspaces,
        fusion=args.fusion, report_queries=args.report_queries, timing_repeats=args.repeats,
        timing_queries=args.timing_queries, seed=args.seed)
    config.validate()
    t0 = time.perf_counter()
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    finetune = None
    try:
        if args.checkpoint is None:
            result = run_experiment(config, progress=not args.no_progress, log=log)
        else:
            from ..demo.backbone import EfficientNetLite0
            from ..demo.experiment import compare_features

            if split == "all":
                log("note: --split all with a fine-tuned checkpoint: its seen emoji were training images")
            tuned = EfficientNetLite0(args.checkpoint, input_size=config.input_size)
            result = run_experiment(config, backbone=tuned, progress=not args.no_progress, log=log)
            log("the same with the ImageNet features ...")
            base = run_experiment(dataclasses.replace(config, report_queries=0, timing_repeats=1,
                                                      timing_queries=1),
                                  backbone=EfficientNetLite0(input_size=config.input_size),
                                  progress=not args.no_progress, log=log)
            finetune = compare_features({"ImageNet (frozen)": base, "fine-tuned": result})
    except ImportError as e:
        print(f'icfrr-fast demo needs the demo extra: pip install "icfrr_fast[demo]" ({e})', file=sys.stderr)
        return 3
    if finetune is not None:
        print(format_finetune_comparison(finetune))
        print()
    print(format_table(result))
    print()
    print(format_comparison(result))
    print()
    print(format_timings(result))
    print()
    for note in result.notes:
        print(f"note: {note}")
    paths = write_report(result, args.out, finetune=finetune)
    print(f"\nreport: {paths['html']} (plot {paths['plot'].name}, {len(paths['queries'])} query figures, numbers in "
          f"{paths['json'].name}); {time.perf_counter() - t0:.1f} s in all")
    return 0
