"""Classification cross-entropy over the seen (training) classes.

``L_CE = -(1 / N) * sum_i log softmax(W e_i + b)_{y_i}``, with optional label smoothing ``eps``: the target puts
``1 - eps + eps / C`` on ``y_i`` and ``eps / C`` on every other class.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["classification_loss", "ClassificationLoss"]


def classification_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy.

    Args:
        logits: (N, C) float class scores.
        labels: (N,) int64 class ids in [0, C).
        label_smoothing: eps in [0, 1).

    Returns:
        scalar loss.

    Example:
        >>> import torch
        >>> round(float(classification_loss(torch.zeros(1, 4), torch.tensor([2]))), 4)  # log 4
        1.3863
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, C); got shape {tuple(logits.shape)}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must be (N,) = ({logits.shape[0]},); got shape {tuple(labels.shape)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


class ClassificationLoss(nn.Module):
    """Module form of :func:`classification_loss`."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return classification_loss(logits, labels, self.label_smoothing)
