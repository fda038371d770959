"""Load backbone weights from a local file (hub downloads are impossible offline).

Formats:

* ``.safetensors``: ``safetensors.torch.load_file``;
* ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt``: ``torch.load(weights_only=True)`` (a pickle that would run code is
  refused); a dict holding ``state_dict`` / ``model`` / ``state_dict_ema`` is unwrapped, ``module.`` (DDP) and
  ``_orig_mod.`` (torch.compile) prefixes are removed, and a training checkpoint of this package
  (keys ``backbone.net.*``) gives its backbone;
* ``.npz``: Google's JAX/big_vision ViT checkpoints, read by timm's own reader (``model.load_pretrained``).

The model's timm ``checkpoint_filter_fn`` (when its module has one) then adapts the state dict (e.g. resamples
position embeddings for another image size), classifier weights are dropped (backbones have ``num_classes=0``),
and everything else must match exactly: a missing or unexpected key or a shape mismatch is an error.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Dict, Union

import torch
from torch import Tensor, nn

__all__ = ["load_weights", "read_state_dict"]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def read_state_dict(path: Union[str, Path]) -> Dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (not ``.npz``), unwrapped and cleaned.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unsupported suffix, unreadable file, a pickle that is not plain tensors, or no state dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights: no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(str(path), device="cpu")
    elif suffix in _TORCH_SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise ValueError(f"weights {path}: refused to load (torch.load(weights_only=True) rejected it; it holds "
                             f"more than tensors): {str(e).splitlines()[0]}") from e
        except (RuntimeError, EOFError) as e:
            raise ValueError(f"weights {path}: not a readable torch file: {str(e).splitlines()[0]}") from e
    else:
        raise ValueError(f"weights must be a .safetensors, {'/'.join(_TORCH_SUFFIXES)} or .npz file; got {path.name}")
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"weights {path}: expected a state dict (names -> tensors); got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        for p in _WRAPPER_PREFIXES:
            k = k.removeprefix(p)
        out[k] = v
    if any(k.startswith("backbone.net.") for k in out):  # a training checkpoint of this package
        out = {k[len("backbone.net."):]: v for k, v in out.items() if k.startswith("backbone.net.")}
    return out


def _classifier_prefixes(net: nn.Module):
    cfg = getattr(net, "pretrained_cfg", None) or {}
    names = cfg.get("classifier", "head")
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names) + ("head.", "head_dist.", "fc.", "classifier.")


def load_weights(net: nn.Module, path: Union[str, Path]) -> None:
    """Load a local weights file into ``net`` in place (see the module docstring for formats and checks).

    Args:
        net: a timm model (built with ``num_classes=0``).
        path: the weights file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unsupported format, or weights that do not fit ``net`` (the message lists the keys).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights: no such file: {path}")
    if path.suffix.lower() == ".npz":
        if not hasattr(net, "load_pretrained"):
            raise ValueError(f"weights {path.name}: .npz (JAX) checkpoints load only into timm ViT-family models; "
                             f"{type(net).__name__} has no npz reader")
        try:
            with torch.no_grad():
                net.load_pretrained(str(path))
        except (KeyError, ValueError, RuntimeError, OSError) as e:
            raise ValueError(f"weights {path}: could not load the .npz into {type(net).__name__}: {e}") from e
        return
    state = read_state_dict(path)
    filter_fn = getattr(sys.modules.get(type(net).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, net)
        except (KeyError, ValueError, RuntimeError) as e:
            raise ValueError(f"weights {path}: timm's checkpoint filter for {type(net).__name__} failed: {e}") from e
    own = net.state_dict()
    heads = _classifier_prefixes(net)
    state = {k: v for k, v in state.items() if k in own or not k.startswith(heads)}
    bad_shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if bad_shapes or missing or unexpected:
        parts = []
        if bad_shapes:
            parts.append(f"{len(bad_shapes)} shape mismatches ({'; '.join(bad_shapes[:3])})")
        if missing:
            parts.append(f"{len(missing)} missing keys ({', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:5])})")
        raise ValueError(f"weights {path} do not fit {type(net).__name__}: {'; '.join(parts)}")
    net.load_state_dict(state, strict=True)
