"""Losses of the field, each a function (with its formula in the docstring) plus a thin module."""

from .alignment import DistributionAlignmentLoss, distribution_alignment_loss
from .classification import ClassificationLoss, classification_loss
from .distillation import StreamDistillationLoss, stream_distillation_loss
from .semantic import (
                       MixturePredictionLoss,
                       SemanticNeighbourhoodLoss,
                       mixture_prediction_loss,
                       neighbourhood_targets,
                       semantic_logits,
                       semantic_neighbourhood_loss,
)
from .triplet import CrossDomainTripletLoss, cross_domain_triplet_loss

__all__ = [
    "classification_loss", "ClassificationLoss",
    "cross_domain_triplet_loss", "CrossDomainTripletLoss",
    "distribution_alignment_loss", "DistributionAlignmentLoss",
    "semantic_neighbourhood_loss", "SemanticNeighbourhoodLoss", "neighbourhood_targets", "semantic_logits",
    "mixture_prediction_loss", "MixturePredictionLoss",
    "stream_distillation_loss", "StreamDistillationLoss",
]
