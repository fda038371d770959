"""AdamW with two learning rates and a warm-up + cosine schedule.

* Heads (classifier, semantic projection) train at ``lr`` (1e-4), the backbone at ``lr * backbone_lr_mult`` (0.1x);
  weight decay (5e-4) applies to weight matrices and kernels, not to biases, norm scales or position/class tokens
  (1-D parameters and ``*_token`` / ``pos_embed``), as is usual for ViTs.
* Learning-rate factor at optimizer step s of S, with W warm-up steps and floor r = ``min_lr_ratio``:
  ``f(s) = (s + 1) / W`` for s < W, else ``r + (1 - r) * 0.5 * (1 + cos(pi * (s - W) / max(1, S - W)))``.
"""

from __future__ import annotations

import math
from typing import List

import torch
from torch import nn

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def _no_decay(name: str, p: nn.Parameter) -> bool:
    return p.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "reg_token", "dist_token"))


def build_optimizer(model: nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW over ``model`` (a :class:`~icfrr_fast.training.model.RetrievalModel`) with ``cfg`` an OptimConfig."""
    groups: List[dict] = []
    for part, lr in (("backbone", cfg.lr * cfg.backbone_lr_mult), ("head", cfg.lr)):
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad or name.startswith("backbone.") != (part == "backbone"):
                continue
            (no_decay if _no_decay(name, p) else decay).append(p)
        for params, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)):
            if params:
                name = f"{part}/{'decay' if wd else 'no_decay'}"
                groups.append({"params": params, "lr": lr, "weight_decay": wd, "name": name})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0) -> float:
    """The schedule's factor f(s) (module docstring)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                    min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR applying :func:`lr_factor` once per optimizer step."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1; got {total_steps}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup_steps, min_lr_ratio))
