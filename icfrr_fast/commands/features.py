"""``icfrr-fast features``: extract and cache the evaluation query and gallery features of a dataset.

With ``--checkpoint`` (a training run's ``best.pth``/``last.pth``) the trained model embeds the images, and the
run's configuration is the base that ``--config`` and the ``--<section>.<field>`` flags override (typically
``--data.*``); without it the backbone of the configuration (``--model.backbone``, ``--model.weights``) is used
as is. The cache (see ``icfrr_fast.training.extraction``) is reused when it was made from the same checkpoint
(path, size, modification time) and data options, unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from icfrr_fast.training.config import add_config_arguments

    parser.add_argument("--checkpoint", metavar="PTH", help="training checkpoint (best.pth / last.pth)")
    parser.add_argument("--out", metavar="PTH", required=True, help="feature cache to write (.pth)")
    parser.add_argument("--overwrite", action="store_true", help="recompute even when the cache matches")
    add_config_arguments(parser)


def _source(args, cfg) -> dict:
    src = {"data": dataclasses.asdict(cfg.data), "model": dataclasses.asdict(cfg.model)}
    if args.checkpoint:
        p = Path(args.checkpoint).resolve()
        st = p.stat()
        src["checkpoint"] = {"path": str(p), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}
    return src


def run(args: argparse.Namespace) -> int:
    import torch

    from icfrr_fast.training.checkpoint import load_checkpoint
    from icfrr_fast.training.config import config_from_args
    from icfrr_fast.training.data import build_splits
    from icfrr_fast.training.distributed import resolve_device
    from icfrr_fast.training.extraction import extract_features, load_feature_cache, save_feature_cache
    from icfrr_fast.training.train import build_eval_loaders, build_model, load_model, resolve_amp

    base = None
    if args.checkpoint:
        if not Path(args.checkpoint).is_file():
            raise FileNotFoundError(f"--checkpoint: no such file: {args.checkpoint}")
        base = load_checkpoint(args.checkpoint)["config"]
    cfg = config_from_args(args, base)
    out = Path(args.out)
    source = _source(args, cfg)
    if out.is_file() and not args.overwrite:
        try:
            cached = load_feature_cache(out)
        except ValueError:
            cached = None
        if cached is not None and cached.get("source") == source:
            print(f"icfrr-fast features: {out} is up to date ({cached['query'].shape[0]} queries, "
                  f"{cached['gallery'].shape[0]} gallery); use --overwrite to recompute")
            return 0
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    splits = build_splits(cfg.data)
    if args.checkpoint:
        model, _ = load_model(args.checkpoint, map_location=device)
    else:
        model = build_model(cfg, 0).to(device)
    q_loader, g_loader = build_eval_loaders(cfg, splits, model.backbone)
    amp = resolve_amp(cfg.train.amp, device)
    q, ql = extract_features(model, q_loader, device, amp, cfg.train.progress, "query features")
    g, gl = extract_features(model, g_loader, device, amp, cfg.train.progress, "gallery features")
    save_feature_cache(out, query=q, query_labels=ql, gallery=g, gallery_labels=gl,
                       query_paths=list(splits.query.paths), gallery_paths=list(splits.gallery.paths),
                       classes=list(splits.query.classes), source=source)
    print(f"icfrr-fast features: wrote {out}: {q.shape[0]} queries, {g.shape[0]} gallery, D = {q.shape[1]}")
    return 0
