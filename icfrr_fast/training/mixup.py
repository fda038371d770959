"""Image-level mixup on a within- to cross-domain curriculum, for the mixture-prediction loss.

Each image x_i of the batch is mixed with a partner x_j: ``x~_i = lam_i x_i + (1 - lam_i) x_j``,
``lam_i ~ Beta(alpha, alpha)``. The partner comes from the same domain as x_i with probability ``1 - p_cross`` and from
another domain with probability ``p_cross`` (falling back to the other kind when no such partner exists in the
batch). The curriculum raises ``p_cross`` linearly with training progress t in [0, 1]:

``p_cross(t) = p_max * min(1, t / ramp)``,

so the network first learns to un-mix images of one domain and later mixtures across domains (after SnMpNet's
mixing curriculum: Paul, Dutta & Biswas, ICCV 2021). Randomness comes from torch's global RNG (checkpointed by the
training loop, so resumed runs draw the same mixes).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["MixedBatch", "mix_images", "cross_domain_probability"]


class MixedBatch(NamedTuple):
    images: Tensor    # (N, C, H, W) mixed images
    labels_a: Tensor  # (N,) class of x_i
    labels_b: Tensor  # (N,) class of the partner x_j
    lam: Tensor       # (N,) weight of x_i
    partner: Tensor   # (N,) int64 j
    cross: Tensor     # (N,) bool: the partner is from another domain


def cross_domain_probability(progress: float, p_max: float = 0.5, ramp: float = 0.5) -> float:
    """``p_cross(t) = p_max * min(1, t / ramp)`` (``ramp = 0``: p_max from the start)."""
    if not 0.0 <= p_max <= 1.0:
        raise ValueError(f"p_max must be in [0, 1]; got {p_max}")
    if ramp < 0:
        raise ValueError(f"ramp must be >= 0; got {ramp}")
    t = min(max(float(progress), 0.0), 1.0)
    return p_max if ramp == 0 else p_max * min(1.0, t / ramp)


def mix_images(images: Tensor, labels: Tensor, domains: Tensor, p_cross: float, alpha: float = 0.4) -> MixedBatch:
    """Mix every image with a random partner (see the module docstring).

    Args:
        images: (N, C, H, W) float.
        labels: (N,) int class ids.
        domains: (N,) int domain ids.
        p_cross: probability of a partner from another domain, in [0, 1].
        alpha: Beta(alpha, alpha) parameter (> 0).

    Returns:
        :class:`MixedBatch`.
    """
    N = images.shape[0]
    if N < 2:
        raise ValueError(f"images must hold at least 2 images to mix; got {N}")
    if labels.shape != (N,) or domains.shape != (N,):
        raise ValueError(f"labels and domains must be (N,) = ({N},); got {tuple(labels.shape)} and "
                         f"{tuple(domains.shape)}")
    if not 0.0 <= p_cross <= 1.0:
        raise ValueError(f"p_cross must be in [0, 1]; got {p_cross}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0; got {alpha}")
    dev = images.device
    d = domains.to(dev)
    same = (d[:, None] == d[None, :]) & ~torch.eye(N, dtype=torch.bool, device=dev)
    other = d[:, None] != d[None, :]
    want_cross = torch.rand(N).to(dev) < p_cross
    has_cross, has_same = other.any(1), same.any(1)
    cross = (want_cross & has_cross) | ~has_same  # N >= 2: every item has a same- or an other-domain partner
    allowed = torch.where(cross[:, None], other, same)
    u = torch.rand(N, N).to(dev).masked_fill(~allowed, -1.0)
    partner = u.argmax(dim=1)
    lam = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample((N,)).to(dev)
    w = lam.to(images.dtype).view(N, *([1] * (images.dim() - 1)))
    mixed = w * images + (1 - w) * images[partner]
    return MixedBatch(mixed, labels, labels.to(dev)[partner], lam, partner, cross)
