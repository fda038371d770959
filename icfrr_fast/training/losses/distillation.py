"""ViT-x distillation: pull the self-attention streams' features towards the cross-attention streams'.

With ``s_i`` a self-stream embedding (image A alone or B alone) and ``c_i`` the cross-stream embedding of the same
image (A's queries over B, or B's over A), the teacher c is detached (``sg``):

* ``"mse"``: ``L = (1 / N) * sum_i ||s_i - sg(c_i)||_2^2``;
* ``"cosine"``: ``L = (1 / N) * sum_i (1 - cos(s_i, sg(c_i)))``;
* ``"kl"``: ``L = (1 / N) * sum_i T^2 * KL(softmax(sg(c_i) / T) || softmax(s_i / T))`` (Hinton et al., 2015), on
  classifier logits or embeddings.

Off by default (weight 0 in the training config).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["stream_distillation_loss", "StreamDistillationLoss", "FORMS"]

FORMS = ("mse", "cosine", "kl")


def stream_distillation_loss(student: Tensor, teacher: Tensor, form: str = "mse", temperature: float = 1.0) -> Tensor:
    """Distillation of ``teacher`` (detached) into ``student``; see the module docstring.

    Args:
        student: (N, D) float self-stream features (or logits).
        teacher: (N, D) float cross-stream features (or logits); no gradient flows into it.
        form: "mse", "cosine" or "kl".
        temperature: T for "kl" (> 0).
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}; got {form!r}")
    if student.shape != teacher.shape or student.dim() != 2:
        raise ValueError(f"student and teacher must be (N, D) of the same shape; got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}")
    s, t = student.float(), teacher.detach().float()
    if form == "mse":
        return ((s - t) ** 2).sum(dim=1).mean()
    if form == "cosine":
        return (1.0 - F.cosine_similarity(s, t, dim=1)).mean()
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    log_t = F.log_softmax(t / temperature, dim=1)
    log_s = F.log_softmax(s / temperature, dim=1)
    return (temperature ** 2) * (log_t.exp() * (log_t - log_s)).sum(dim=1).mean()


class StreamDistillationLoss(nn.Module):
    """Module form of :func:`stream_distillation_loss`."""

    def __init__(self, form: str = "mse", temperature: float = 1.0):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}; got {form!r}")
        self.form, self.temperature = form, temperature

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return stream_distillation_loss(student, teacher, self.form, self.temperature)
