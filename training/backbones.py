"""Backbone registry: ``create_backbone(name, weights=path)`` -> :class:`Backbone`, an embedding network.

Any timm model name works (``vit_base_patch16_224`` is the default of the training config); a few small models are
registered here (``icfrr_vit_tiny``, ``icfrr_vit_small32``) so that tests and the smoke config run on a CPU. Weights
come from a local file (:mod:`icfrr_fast.training.weights`), since hub downloads are impossible offline; without a
file the network is randomly initialised.

Embedding (what retrieval and ICFRR use):

* token models (ViT and kin, ``forward_features`` returns (B, N, C)): the mean of the patch tokens after the final
  norm, prefix tokens (class token, registers) excluded: ``e = (1 / P) * sum_{p >= n_prefix} t_p``;
* other models (CNNs, ``forward_features`` returns (B, C, H, W)): the model's own global pooling
  (``forward_head(x, pre_logits=True)`` with the classifier removed);
* ``Backbone.forward`` returns ``e / ||e||_2`` (``normalize=False`` gives the raw e, which the classification and
  distribution-alignment losses use).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Tuple, Union

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Backbone", "create_backbone", "register_backbone", "list_backbones", "is_backbone"]

_REGISTRY: Dict[str, Callable[..., nn.Module]] = {}


def register_backbone(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn(**kwargs) -> nn.Module`` under ``fn.__name__`` (a decorator, like timm's ``register_model``)."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"backbone {fn.__name__!r} is already registered")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_backbones() -> List[str]:
    """Names registered here (any timm model name is accepted too; see ``timm.list_models()``)."""
    return sorted(_REGISTRY)


def is_backbone(name: str) -> bool:
    """True when ``name`` is registered here or is a timm model."""
    import timm

    return name in _REGISTRY or timm.is_model(name)


def _tiny_vit(**defaults):
    def build(**kwargs) -> nn.Module:
        from timm.models.vision_transformer import VisionTransformer

        cfg = dict(defaults)
        cfg.update(kwargs)
        cfg["num_classes"] = 0
        net = VisionTransformer(**cfg)
        # mean/std used by the transforms: sketches and the toy set are not ImageNet photos
        net.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                              "input_size": (3, cfg["img_size"], cfg["img_size"]), "classifier": "head"}
        return net

    return build


@register_backbone
def icfrr_vit_tiny(**kwargs) -> nn.Module:
    """ViT: 32 x 32 input, 8 x 8 patches (16 tokens + class token), width 32, depth 2, 2 heads. CPU unit tests."""
    return _tiny_vit(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)(**kwargs)


@register_backbone
def icfrr_vit_small32(**kwargs) -> nn.Module:
    """ViT: 32 x 32 input, 8 x 8 patches (16 tokens + class token), width 64, depth 4, 4 heads. The smoke config."""
    return _tiny_vit(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0)(**kwargs)


class Backbone(nn.Module):
    """An embedding network around a timm model (see the module docstring for the embedding).

    Args:
        net: a timm model built with ``num_classes=0``.
        name: its registry or timm name.

    Attributes:
        net: the wrapped model (its parameters are the backbone's, ``backbone.net.*`` in state dicts).
        embed_dim: D, the embedding width.
        num_prefix_tokens: class/register tokens excluded from the mean (0 for CNNs).
        mean, std: per-channel input normalisation the weights expect.
        input_size: (C, H, W) the model was built for.
    """

    def __init__(self, net: nn.Module, name: str = ""):
        super().__init__()
        if not isinstance(net, nn.Module) or not hasattr(net, "forward_features"):
            raise TypeError(f"net must be a timm model (an nn.Module with forward_features); got {type(net).__name__}")
        self.net = net
        self.name = name or type(net).__name__
        self.embed_dim = int(net.num_features)
        self.num_prefix_tokens = int(getattr(net, "num_prefix_tokens", 0))
        cfg = dict(getattr(net, "pretrained_cfg", None) or {})
        self.mean: Tuple[float, ...] = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std: Tuple[float, ...] = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        size = cfg.get("input_size", (3, 224, 224))
        img = getattr(getattr(net, "patch_embed", None), "img_size", None)
        if img is not None:  # a ViT built with img_size=... overrides its default config
            size = (3, int(img[0]), int(img[1]))
        self.input_size: Tuple[int, int, int] = tuple(int(s) for s in size)

    @property
    def is_vit(self) -> bool:
        """True for timm's VisionTransformer (what ViT-x supports)."""
        from timm.models.vision_transformer import VisionTransformer

        return isinstance(self.net, VisionTransformer)

    def pool(self, features: Tensor) -> Tensor:
        """(B, D) embedding from ``forward_features`` output: patch-token mean (B, N, C) or model pooling (4-D)."""
        if features.dim() == 3:
            return features[:, self.num_prefix_tokens:].mean(dim=1)
        return self.net.forward_head(features, pre_logits=True)

    def forward(self, images: Tensor, normalize: bool = True) -> Tensor:
        """Embed images.

        Args:
            images: (B, 3, H, W) float, normalised with ``mean``/``std``.
            normalize: L2-normalise (retrieval features) or return the raw embedding.

        Returns:
            (B, D) float embeddings.
        """
        e = self.pool(self.net.forward_features(images))
        return F.normalize(e, dim=-1) if normalize else e


def create_backbone(name: str, *, weights: Union[str, Path, None] = None, **kwargs) -> Backbone:
    """Build a backbone by name.

    Args:
        name: a name from :func:`list_backbones` or any timm model (``timm.list_models()``).
        weights: local ``.pth``/``.pt``/``.bin``/``.safetensors`` state dict, timm ``.npz`` (ViT), or a training
            checkpoint of this package; None = random init.
        **kwargs: passed to the model constructor (e.g. ``img_size=``, ``drop_path_rate=``).

    Returns:
        :class:`Backbone` (classifier removed, ``num_classes=0``).

    Raises:
        ValueError: unknown name, or weights that do not fit the model.
        TypeError: name is not a string.
        FileNotFoundError: weights file missing.

    Example:
        >>> import torch
        >>> from icfrr_fast.training import create_backbone
        >>> bb = create_backbone("icfrr_vit_tiny")
        >>> bb(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 32])
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str; got {type(name).__name__}")
    import timm

    if name in _REGISTRY:
        net = _REGISTRY[name](**kwargs)
    elif timm.is_model(name):
        net = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    else:
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8] if name else []
        raise ValueError(f"name must be a registered backbone ({', '.join(list_backbones())}) or a timm model; got "
                         f"{name!r}" + (f" (similar timm models: {', '.join(close)})" if close else ""))
    if weights is not None:
        from .weights import load_weights

        load_weights(net, weights)
    return Backbone(net, name)
