"""The training objective: a weighted sum of the losses in :mod:`icfrr_fast.training.losses`.

``L = w_ce L_CE + w_tri L_triplet + w_da L_DA + w_sn L_SN + w_mp L_MP + w_xce L_CE(cross streams)
      + w_kd L_distill``

on a batch of P x K cross-domain pairs (2 P K images: labels and domains of A then B), with the weights and
parameters of :class:`~icfrr_fast.training.config.LossConfig` (defaults: CE 1, triplet 1 with margin 0.2 and
batch-hard mining, alignment 0.1, the rest 0). Losses with weight 0 are not computed.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from torch import Tensor

from .losses import (
    classification_loss,
    cross_domain_triplet_loss,
    distribution_alignment_loss,
    mixture_prediction_loss,
    semantic_neighbourhood_loss,
    stream_distillation_loss,
)
from .mixup import MixedBatch

__all__ = ["Objective"]


class Objective:
    """Callable ``(outputs, labels, domains, mixed) -> (total, {name: value})``.

    Args:
        cfg: a :class:`~icfrr_fast.training.config.LossConfig`.
        class_embeddings: (M, S) class-embedding matrix whose first rows are the training classes (semantic losses).
    """

    def __init__(self, cfg, class_embeddings: Optional[Tensor] = None):
        if (cfg.semantic > 0 or cfg.mixture > 0) and class_embeddings is None:
            raise ValueError("class_embeddings are required when the semantic or mixture loss weight is > 0")
        self.cfg = cfg
        self.class_embeddings = class_embeddings

    def __call__(self, out: Dict[str, Tensor], labels: Tensor, domains: Tensor,
                 mixed: Optional[MixedBatch] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
        c = self.cfg
        parts: Dict[str, Tensor] = {}
        if c.ce > 0:
            parts["ce"] = classification_loss(out["logits"], labels, c.label_smoothing)
        if c.triplet > 0:
            parts["triplet"] = cross_domain_triplet_loss(out["normalized"], labels, domains, c.margin, c.mining)
        if c.align > 0:
            parts["align"] = distribution_alignment_loss(out["embedding"])
        E = None if self.class_embeddings is None else self.class_embeddings.to(out["embedding"].device)
        if c.semantic > 0:
            parts["semantic"] = semantic_neighbourhood_loss(out["semantic"], labels, E, c.semantic_neighbours,
                                                            c.semantic_temperature, c.neighbourhood_temperature)
        if c.mixture > 0:
            if mixed is None:
                raise ValueError("the mixture loss needs the mixed batch")
            parts["mixture"] = mixture_prediction_loss(out["mixed_semantic"], mixed.labels_a, mixed.labels_b,
                                                       mixed.lam, E, c.semantic_temperature)
        if "cross_logits" in out and c.cross_ce > 0:
            parts["cross_ce"] = classification_loss(out["cross_logits"], labels, c.label_smoothing)
        if c.distill > 0:
            if "cross_embedding" not in out:
                raise ValueError("the distillation loss needs ViT-x outputs (model.vitx: true)")
            if c.distill_form == "kl" and "logits" in out:
                student, teacher = out["logits"], out["cross_logits"]
            else:
                student, teacher = out["embedding"], out["cross_embedding"]
            parts["distill"] = stream_distillation_loss(student, teacher, c.distill_form, c.distill_temperature)
        weights = {"ce": c.ce, "triplet": c.triplet, "align": c.align, "semantic": c.semantic, "mixture": c.mixture,
                   "cross_ce": c.cross_ce, "distill": c.distill}
        if not parts:
            raise ValueError("every loss weight is 0: nothing to train")
        total = sum(weights[k] * v for k, v in parts.items())
        return total, parts

    @property
    def needs_mixup(self) -> bool:
        return self.cfg.mixture > 0

    def to(self, device) -> Objective:
        if self.class_embeddings is not None:
            self.class_embeddings = self.class_embeddings.to(device)
        return self


