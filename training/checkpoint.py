"""Checkpoints with exact resume: model, optimizer, scheduler, grad scaler, loop position and every RNG state,
written atomically (``icfrr_fast._io.atomic_save``) and read with ``torch.load(weights_only=True)`` (nothing in a
checkpoint can run code).

Loop position = ``(epoch, batch, step)``: the next batch of ``epoch`` to run and the optimizer steps done. Since the
pair sampler is a function of ``(seed, epoch)`` and augmentations of per-pair seeds, restoring the position and the
torch/Python RNG states replays the uninterrupted run exactly, mid-epoch included.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from icfrr_fast._io import atomic_save, load_tensor_file

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "capture_rng", "restore_rng"]

FORMAT = "icfrr_fast.training.checkpoint/1"


def capture_rng() -> Dict[str, Any]:
    """torch CPU (and CUDA) and Python ``random`` states, in a weights_only-loadable form."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Union[str, Path], *, model: torch.nn.Module, optimizer=None, scheduler=None, scaler=None,
                    position: Dict[str, int], config: Dict[str, Any], metrics: Optional[Dict[str, float]] = None,
                    best: Optional[Dict[str, Any]] = None) -> Path:
    """Write a checkpoint atomically.

    Args:
        path: destination (.pth).
        model: the (unwrapped) model.
        optimizer, scheduler, scaler: training state (None for a weights-only export).
        position: ``{"epoch", "batch", "step"}``.
        config: the run's configuration (``Config.to_dict()``).
        metrics: latest validation metrics.
        best: ``{"metric", "value", "step"}`` of the best checkpoint so far.
    """
    obj = {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "position": dict(position),
        "rng": capture_rng(),
        "config": config,
        "metrics": dict(metrics or {}),
        "best": dict(best or {}),
    }
    return atomic_save(obj, path)


def load_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a checkpoint of this format.
    """
    obj = load_tensor_file(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path}: not an icfrr_fast training checkpoint (expected format {FORMAT!r})")
    return obj
