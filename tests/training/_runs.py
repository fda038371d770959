"""Tiny training configurations on the scikit-image toy set, shared by the loop, DDP and CLI tests."""

import copy
from pathlib import Path

from icfrr_fast.training.config import Config


def tiny_config(out_dir: Path, data_root: Path, **overrides) -> Config:
    """icfrr_vit_tiny on 4 toy classes (32 px), 4 classes x 4 pairs per batch, CPU, one thread, no bars/TB."""
    d = {
        "model": {"backbone": "icfrr_vit_tiny"},
        "data": {"benchmark": "skimage_toy", "root": str(data_root), "toy_classes": 4, "toy_per_class": 10,
                 "toy_image_size": 32, "holdout_fraction": 0.2, "classes_per_batch": 4, "pairs_per_class": 4,
                 "batches_per_epoch": 4, "num_workers": 0, "eval_batch_size": 64},
        "optim": {"lr": 3e-3, "backbone_lr_mult": 1.0},
        "train": {"epochs": 2, "device": "cpu", "amp": "none", "threads": 1, "output_dir": str(out_dir),
                  "progress": False, "tensorboard": False, "log_every": 1},
        "eval": {"every": 0, "k_g": 4, "k_q": 4, "iters": 2, "map_at": [10], "precision_at": [5]},
    }
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        d.setdefault(section, {})[key] = copy.deepcopy(value)
    return Config.from_dict(d)
