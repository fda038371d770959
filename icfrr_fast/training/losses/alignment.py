"""Distribution-alignment loss: pull each feature's softmax towards that of a fresh standard-normal sample.

For a feature ``f_i`` in R^D and a fresh ``z_i ~ N(0, I_D)`` drawn per sample and step:

``L_DA = (1 / N) * sum_i KL(softmax(z_i) || softmax(f_i))
       = (1 / N) * sum_i sum_d softmax(z_i)_d * (log softmax(z_i)_d - log softmax(f_i)_d)``,

used with weight 0.1 next to the triplet and classification losses (as in the ICFRR paper's training recipe: Hudson &
Smith, "If At First You Don't Succeed: Test Time Re-ranking for Zero-shot, Cross-domain Retrieval", 2023). Apply it to
the raw (un-normalised) embedding: a unit vector's softmax is almost uniform.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["distribution_alignment_loss", "DistributionAlignmentLoss"]


def distribution_alignment_loss(features: Tensor, noise: Optional[Tensor] = None,
                                generator: Optional[torch.Generator] = None) -> Tensor:
    """``mean_i KL(softmax(z_i) || softmax(f_i))``.

    Args:
        features: (N, D) float features f.
        noise: (N, D) the z to use (tests); default: a fresh ``torch.randn`` (with ``generator`` if given).
        generator: RNG for z.

    Returns:
        scalar loss (>= 0; 0 iff softmax(f_i) = softmax(z_i) for every i).
    """
    if features.dim() != 2:
        raise ValueError(f"features must be (N, D); got shape {tuple(features.shape)}")
    f = features.float()
    if noise is None:
        noise = torch.randn(f.shape, generator=generator, device="cpu" if generator is not None else f.device,
                            dtype=f.dtype).to(f.device)
    elif noise.shape != f.shape:
        raise ValueError(f"noise must have features' shape {tuple(f.shape)}; got {tuple(noise.shape)}")
    log_p = F.log_softmax(noise.float(), dim=1)
    log_q = F.log_softmax(f, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


class DistributionAlignmentLoss(nn.Module):
    """Module form of :func:`distribution_alignment_loss` (fresh z on every call)."""

    def forward(self, features: Tensor) -> Tensor:
        return distribution_alignment_loss(features)
