"""The trained network: a backbone plus small heads, with one ``forward`` that returns everything a training step
needs (a single forward call keeps DDP's gradient synchronisation intact).

* ``model(images)`` -> (B, D) L2-normalised embeddings (retrieval features; what ICFRR re-ranks);
* ``model(images_a, images_b, mixed=None)`` -> dict for the losses: ``embedding`` (2B, D) raw embeddings of A then
  B, ``normalized``, ``logits`` (classifier), ``semantic`` (projection into the class-embedding space), and with
  ViT-x ``cross_embedding`` / ``cross_logits`` of the cross-attention streams (A->B then B->A); with ``mixed``
  images, ``mixed_semantic``.
"""

from __future__ import annotations

from typing import Dict, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import Backbone
from .vitx import check_vitx_compatible, vitx_tokens

__all__ = ["RetrievalModel"]


class RetrievalModel(nn.Module):
    """Backbone + classifier (+ semantic projection).

    Args:
        backbone: the embedding network.
        num_classes: seen (training) classes; 0 = no classifier.
        semantic_dim: width of the class embeddings; None = no semantic head.
        vitx: run image pairs through ViT-x's four streams (timm ViT backbones only).
    """

    def __init__(self, backbone: Backbone, num_classes: int, *, semantic_dim: Optional[int] = None,
                 vitx: bool = False):
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise TypeError(f"backbone must be a Backbone (create_backbone); got {type(backbone).__name__}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0; got {num_classes}")
        if vitx:
            check_vitx_compatible(backbone.net)
        D = backbone.embed_dim
        self.backbone = backbone
        self.classifier = nn.Linear(D, num_classes) if num_classes else None
        self.semantic_head = nn.Linear(D, semantic_dim) if semantic_dim else None
        self.vitx = bool(vitx)

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters outside the backbone (they get the full learning rate)."""
        for name, p in self.named_parameters():
            if not name.startswith("backbone."):
                yield p

    def forward(self, images_a: Tensor, images_b: Optional[Tensor] = None,
                mixed: Optional[Tensor] = None):
        if images_b is None:
            return self.backbone(images_a)
        out: Dict[str, Tensor] = {}
        if self.vitx:
            toks = vitx_tokens(self.backbone.net, images_a, images_b)
            emb = torch.cat([self.backbone.pool(toks["a"]), self.backbone.pool(toks["b"])])
            cross = torch.cat([self.backbone.pool(toks["ab"]), self.backbone.pool(toks["ba"])])
            out["cross_embedding"] = cross
            if self.classifier is not None:
                out["cross_logits"] = self.classifier(cross)
        else:
            emb = self.backbone(torch.cat([images_a, images_b]), normalize=False)
        out["embedding"] = emb
        out["normalized"] = F.normalize(emb, dim=-1)
        if self.classifier is not None:
            out["logits"] = self.classifier(emb)
        if self.semantic_head is not None:
            out["semantic"] = self.semantic_head(emb)
            if mixed is not None:
                out["mixed_semantic"] = self.semantic_head(self.backbone(mixed, normalize=False))
        elif mixed is not None:
            raise ValueError("mixed images need a semantic head (semantic_dim)")
        return out
