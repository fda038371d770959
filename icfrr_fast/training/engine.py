"""The loop's two small functions: ``train_one_epoch`` and ``evaluate``.

``train_one_epoch`` runs micro-batches of cross-domain pairs, accumulates gradients over ``accum_steps`` of them
(the loss of each is divided by its group's size, so a group's gradient is the mean over its micro-batches; under
DDP, gradients are all-reduced only on a group's last micro-batch), clips, steps the optimizer and the schedule,
and reports every optimizer step through ``on_step``. ``evaluate`` extracts query and gallery features and scores
the rankings before and after ICFRR (:mod:`.validation`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from .extraction import extract_features
from .mixup import cross_domain_probability, mix_images
from .objective import Objective
from .validation import retrieval_metrics

__all__ = ["LoopState", "train_one_epoch", "evaluate"]


@dataclass
class LoopState:
    """Where the loop is: ``batch`` = next micro-batch of ``epoch``; ``step`` = optimizer steps done."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    history: List[Dict[str, float]] = field(default_factory=list)

    def position(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch, "step": self.step}


def train_one_epoch(model: nn.Module, loader: DataLoader, objective: Objective, optimizer: torch.optim.Optimizer,
                    scheduler, state: LoopState, *, device: torch.device, total_steps: int, accum_steps: int = 1,
                    amp_dtype: Optional[torch.dtype] = None, scaler=None, grad_clip: Optional[float] = None,
                    max_steps: Optional[int] = None, progress: bool = False,
                    on_step: Optional[Callable[[LoopState, Dict[str, float]], None]] = None,
                    mixup_alpha: float = 0.4, mixup_cross_max: float = 0.5, mixup_ramp: float = 0.5) -> bool:
    """Train from ``state.batch`` to the end of ``state.epoch`` (the loader's sampler must be set to that epoch
    and batch).

    Args:
        model: a RetrievalModel, possibly wrapped in DDP.
        loader: yields ``(images_a, images_b, labels, domains_a, domains_b)``.
        objective: the loss.
        optimizer, scheduler: stepped once per ``accum_steps`` micro-batches.
        state: updated in place.
        total_steps: optimizer steps of the whole run (mixup curriculum progress).
        accum_steps: micro-batches per optimizer step.
        amp_dtype: autocast dtype (None: full precision).
        scaler: a GradScaler for fp16 (None otherwise).
        grad_clip: max global gradient norm.
        max_steps: stop once ``state.step`` reaches it.
        progress: show a tqdm bar.
        on_step: called after every optimizer step with the state and the step's mean losses.

    Returns:
        True when ``max_steps`` was reached (the run should stop).
    """
    model.train()
    n_batches = loader.batch_sampler.batches_per_epoch
    it = iter(loader)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_batches, initial=state.batch, desc=f"epoch {state.epoch}", dynamic_ncols=True, leave=False)
    sums: Dict[str, float] = {}
    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()

    optimizer.zero_grad(set_to_none=True)
    try:
        for a, b, y, da, db in it:
            group_start = (state.batch // accum_steps) * accum_steps
            group_size = min(accum_steps, n_batches - group_start)
            last_in_group = state.batch + 1 == group_start + group_size
            a, b = a.to(device, non_blocking=True), b.to(device, non_blocking=True)
            labels = torch.cat([y, y]).to(device)
            domains = torch.cat([da, db]).to(device)
            mixed = None
            if objective.needs_mixup:
                p = cross_domain_probability(state.step / max(1, total_steps), mixup_cross_max, mixup_ramp)
                mixed = mix_images(torch.cat([a, b]), labels, domains, p, mixup_alpha)
            sync = contextlib.nullcontext() if last_in_group or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with autocast():
                    out = model(a, b, mixed=None if mixed is None else mixed.images)
                total, parts = objective(out, labels, domains, mixed)
                loss = total / group_size
                if scaler is not None:
                    scaler.scale(loss).backward()
                else:
                    loss.backward()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / group_size
            sums["loss"] = sums.get("loss", 0.0) + float(total.detach()) / group_size
            state.batch += 1
            if bar is not None:
                bar.update(1)
            if not last_in_group:
                continue
            if scaler is not None:
                scaler.unscale_(optimizer)
            if grad_clip is not None:
                sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            sums["lr"] = optimizer.param_groups[-1]["lr"]
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            if not all(math.isfinite(v) for v in sums.values()):
                raise FloatingPointError(f"non-finite loss at step {state.step}: {sums}")
            if bar is not None:
                bar.set_postfix(loss=f"{sums['loss']:.4f}")
            if on_step is not None:
                on_step(state, dict(sums))
            sums = {}
            if max_steps is not None and state.step >= max_steps:
                if state.batch == n_batches:  # stopped exactly at the epoch's end
                    state.epoch, state.batch = state.epoch + 1, 0
                return True
    finally:
        if bar is not None:
            bar.close()
    state.epoch += 1
    state.batch = 0
    return False


def evaluate(model: nn.Module, query_loader: DataLoader, gallery_loader: DataLoader, *, device: torch.device,
             amp_dtype: Optional[torch.dtype] = None, progress: bool = False, **metric_kwargs) -> Dict[str, float]:
    """Extract features and report retrieval metrics before and after ICFRR for every iteration.

    Args:
        model: maps images to L2-normalised embeddings (``model(images)``).
        query_loader, gallery_loader: ``(images, labels, domains)`` loaders.
        device, amp_dtype, progress: as for extraction.
        **metric_kwargs: ``k_g, k_q, beta, iters, semantics, map_at, precision_at, chunk_size`` of
            :func:`~icfrr_fast.training.validation.retrieval_metrics`.
    """
    q, ql = extract_features(model, query_loader, device, amp_dtype, progress, "query features")
    g, gl = extract_features(model, gallery_loader, device, amp_dtype, progress, "gallery features")
    return retrieval_metrics(q, ql, g, gl, **metric_kwargs)
