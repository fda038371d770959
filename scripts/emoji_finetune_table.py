"""Unseen-class retrieval of the emoji fine-tuning runs vs the frozen ImageNet features, before and after ICFRR.

    python scripts/emoji_finetune_table.py runs/emoji/s0 runs/emoji/s1 runs/emoji/s2 [--data-root runs/emoji/data]

For each run folder (``icfrr-fast train --config icfrr_fast/training/configs/emoji.yaml --train.seed N --train.output_dir
DIR``) the features of ``last.pth`` (the final weights; ``best.pth`` is chosen on the validation classes, so it is
not used for reporting) and of the frozen ImageNet network (the run's input size and the demo's 128 px) are extracted
with ``icfrr-fast features`` (cached beside the runs) and ranked with the package's fused ops: mAP@all (and mAP@200,
P@100) of the unseen emoji, line art -> colour, at the Unicode group level (the validation's labels) and at the
subgroup level (24 never-seen classes), before ICFRR and after 5 iterations (reference semantics, beta 0.5) with
the package defaults (k_g 256, k_q 250) and with k_g = k_q = 50 (group level) / 16 (subgroup level, ~17 gallery
items per class). Prints a markdown table: mean +- sample standard deviation over the runs (the frozen features
do not depend on the seed). Writes the numbers to ``--json`` (default: ``<first run>/../finetune_table.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from icfrr_fast import cli
from icfrr_fast.io import load_tensor_file
from icfrr_fast.demo.emoji import load_emoji
from icfrr_fast.training.extraction import load_feature_cache
from icfrr_fast.training.validation import retrieval_metrics

#: (label level, name, k_g, k_q): the ICFRR settings scored (k_g/k_q are clipped to the 413-item gallery)
SETTINGS = (("group", "defaults", 256, 250), ("group", "k50", 50, 50),
            ("subgroup", "defaults", 256, 250), ("subgroup", "k16", 16, 16))
METRICS = ("mAP@all", "mAP@200", "P@100")


def features(out: Path, data_root: str, *args: str) -> dict:
    """Run ``icfrr-fast features`` (cached in ``out``) and read the result."""
    rc = cli.main(["features", "--out", str(out), "--data.root", data_root, "--train.progress", "false", *args])
    if rc:
        raise SystemExit(f"icfrr-fast features failed ({rc}) for {out}")
    return load_feature_cache(out)


def score(cache: dict) -> dict:
    """{level/setting/stage/metric: value} of one feature cache."""
    ds = load_emoji()
    item = {"query": [int(Path(p).stem) for p in cache["query_paths"]],
            "gallery": [int(Path(p).stem) for p in cache["gallery_paths"]]}
    out = {}
    for level, name, k_g, k_q in SETTINGS:
        lab = torch.from_numpy(ds.labels(level))
        m = retrieval_metrics(cache["query"], lab[item["query"]], cache["gallery"], lab[item["gallery"]], k_g=k_g,
                              k_q=k_q, beta=0.5, iters=5, map_at=(200,), precision_at=(100,))
        for metric in METRICS:
            out[f"{level}/none/{metric}"] = m[f"base/{metric}"]
            out[f"{level}/{name}/{metric}"] = m[f"icfrr/{metric}"]
    return out


def fmt(values) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="training output folders (with last.pth)")
    ap.add_argument("--data-root", default="runs/emoji/data", help="data.root of the runs (default: %(default)s)")
    ap.add_argument("--config", default="icfrr_fast/training/configs/emoji.yaml", help="the runs' configuration")
    ap.add_argument("--json", type=Path, default=None, help="where to write the numbers")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    common = ["--train.threads", str(a.threads)]
    cache_dir = a.runs[0].parent
    size = int(load_tensor_file(a.runs[0] / "last.pth")["config"]["model"]
               ["img_size"] or 128)
    rows = {}
    for s in sorted({size, 128}):
        f = features(cache_dir / f"features_frozen_{s}px.pth", a.data_root, "--config", a.config,
                     "--model.img_size", str(s), *common)
        rows[f"ImageNet, frozen ({s} px)"] = [score(f)]
    tuned = []
    for run in a.runs:
        f = features(run / "features_last.pth", a.data_root, "--checkpoint", str(run / "last.pth"), *common)
        tuned.append(score(f))
    rows[f"fine-tuned ({size} px), {len(tuned)} seeds"] = tuned
    cols = [("group", "none"), ("group", "defaults"), ("group", "k50"),
            ("subgroup", "none"), ("subgroup", "defaults"), ("subgroup", "k16")]
    names = {"none": "no re-ranking", "defaults": "ICFRR 256/250", "k50": "ICFRR 50/50", "k16": "ICFRR 16/16"}
    for metric in METRICS:
        print(f"\n{metric} of the 413 unseen emoji (line art -> colour), mean ± sd over seeds\n")
        print("| features | " + " | ".join(f"{lvl}: {names[n]}" for lvl, n in cols) + " |")
        print("|---|" + "---:|" * len(cols))
        for label, runs in rows.items():
            print(f"| {label} | " + " | ".join(fmt([r[f'{lvl}/{n}/{metric}'] for r in runs]) for lvl, n in cols)
                  + " |")
    out = a.json or cache_dir / "finetune_table.json"
    out.write_text(json.dumps({k: v for k, v in rows.items()}, indent=1) + "\n")
    print(f"\nnumbers: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
