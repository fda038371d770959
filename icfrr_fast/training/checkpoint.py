"""Checkpoints with exact resume: model, optimizer, scheduler, grad scaler, loop position and every RNG state,
written atomically (``icfrr_fast.io.atomic_save``) and read with ``torch.load(weights_only=True)`` (nothing in a
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

from icfrr_fast.io import atomic_save, load_tensor_file

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

    A checkpoint is a user file like any other input: its structure (entries and their types, a model state of
    tensors, a loop position of non-negative ints, RNG states) and its configuration (``Config.from_dict`` with every
    range check, as for a config file) are validated before anything uses them.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a checkpoint of this format, or a malformed one (the message names the entry).
    """
    obj = load_tensor_file(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path}: not an icfrr_fast training checkpoint (expected format {FORMAT!r})")
    _validate_checkpoint(path, obj)
    return obj


def _validate_checkpoint(path, obj: Dict[str, Any]) -> None:
    from .config import Config

    def bad(entry: str, why: str) -> ValueError:
        return ValueError(f"{path}: malformed checkpoint: {entry} {why}")

    for key, types in (("model", dict), ("optimizer", (dict, type(None))), ("scheduler", (dict, type(None))),
                       ("scaler", (dict, type(None))), ("position", dict), ("rng", dict), ("config", dict),
                       ("metrics", dict), ("best", dict)):
        if key not in obj:
            raise bad(repr(key), "is missing")
        if not isinstance(obj[key], types):
            raise bad(repr(key), f"has type {type(obj[key]).__name__}")
    for name, value in obj["model"].items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise bad("'model'", f"must map parameter names to tensors; got {name!r}: {type(value).__name__}")
    for key in ("epoch", "batch", "step"):
        v = obj["position"].get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise bad(f"position[{key!r}]", f"must be an int >= 0; got {v!r}")
    rng = obj["rng"]
    if not isinstance(rng.get("torch"), torch.Tensor) or rng["torch"].dtype != torch.uint8:
        raise bad("rng['torch']", "must be a uint8 tensor (torch.get_rng_state())")
    py = rng.get("python")
    if not (isinstance(py, (tuple, list)) and len(py) == 3 and isinstance(py[1], (tuple, list))
            and all(isinstance(x, int) for x in py[1])):
        raise bad("rng['python']", "must be a random.getstate() tuple")
    try:
        Config.from_dict(obj["config"])
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: malformed checkpoint: config: {e}") from None
