"""Cross-domain triplet loss: the anchor comes from one domain, its positive and negative from another.

For embeddings ``f`` (L2-normalised in training), class labels ``y`` and domain ids ``d``, with Euclidean distance
``D(i, j) = ||f_i - f_j||_2``:

* positives of anchor a: ``P(a) = {p : y_p = y_a, d_p != d_a}``; negatives: ``N(a) = {n : y_n != y_a, d_n != d_a}``;
* batch-hard mining (Hermans et al., "In Defense of the Triplet Loss", 2017, restricted to the other domain):
  ``l_a = max(0, max_{p in P(a)} D(a, p) - min_{n in N(a)} D(a, n) + m)``;
* random mining: one p and one n drawn uniformly from P(a) and N(a): ``l_a = max(0, D(a, p) - D(a, n) + m)``;
* ``L = mean of l_a`` over anchors with non-empty P(a) and N(a) (all domains act as anchors unless
  ``anchor_domain`` picks one), margin ``m = 0.2`` by default; 0 when no anchor qualifies.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

__all__ = ["cross_domain_triplet_loss", "CrossDomainTripletLoss", "MINING"]

MINING = ("batch_hard", "random")


def _pairwise_distances(f: Tensor) -> Tensor:
    sq = (f * f).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (f @ f.t())
    return d2.clamp(min=1e-12).sqrt()  # clamp: finite gradient at coincident points


def cross_domain_triplet_loss(
    embeddings: Tensor,
    labels: Tensor,
    domains: Tensor,
    margin: float = 0.2,
    mining: str = "batch_hard",
    anchor_domain: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Cross-domain triplet loss (see the module docstring for the formula).

    Args:
        embeddings: (N, D) float.
        labels: (N,) int class ids.
        domains: (N,) int domain ids.
        margin: m >= 0.
        mining: "batch_hard" or "random".
        anchor_domain: only items of this domain are anchors (None: every item).
        generator: RNG for random mining (default: the global one).

    Returns:
        scalar loss.

    Example:
        >>> import torch
        >>> f = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.5], [2.0, 0.0]])
        >>> y = torch.tensor([0, 0, 1, 1]); d = torch.tensor([0, 1, 0, 1])
        >>> round(float(cross_domain_triplet_loss(f, y, d, margin=0.2)), 4)
        0.3718
    """
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be (N, D); got shape {tuple(embeddings.shape)}")
    N = embeddings.shape[0]
    for name, t in (("labels", labels), ("domains", domains)):
        if t.shape != (N,):
            raise ValueError(f"{name} must be (N,) = ({N},); got shape {tuple(t.shape)}")
    if mining not in MINING:
        raise ValueError(f"mining must be one of {MINING}; got {mining!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0; got {margin}")
    dist = _pairwise_distances(embeddings.float())
    cross = domains[:, None] != domains[None, :]
    same = labels[:, None] == labels[None, :]
    pos, neg = cross & same, cross & ~same
    ok = pos.any(dim=1) & neg.any(dim=1)
    if anchor_domain is not None:
        ok &= domains == anchor_domain
    if not bool(ok.any()):
        return embeddings.sum() * 0.0
    dist, pos, neg = dist[ok], pos[ok], neg[ok]
    if mining == "batch_hard":
        d_ap = dist.masked_fill(~pos, float("-inf")).max(dim=1).values
        d_an = dist.masked_fill(~neg, float("inf")).min(dim=1).values
    else:
        u = torch.rand(dist.shape, generator=generator, device=generator.device if generator else dist.device)
        u = u.to(dist.device)
        p = u.masked_fill(~pos, -1.0).argmax(dim=1)  # uniform over the valid entries: argmax of iid uniforms
        n = u.masked_fill(~neg, -1.0).argmax(dim=1)
        d_ap = dist.gather(1, p[:, None])[:, 0]
        d_an = dist.gather(1, n[:, None])[:, 0]
    return torch.relu(d_ap - d_an + margin).mean()


class CrossDomainTripletLoss(nn.Module):
    """Module form of :func:`cross_domain_triplet_loss`."""

    def __init__(self, margin: float = 0.2, mining: str = "batch_hard", anchor_domain: Optional[int] = None):
        super().__init__()
        if mining not in MINING:
            raise ValueError(f"mining must be one of {MINING}; got {mining!r}")
        self.margin, self.mining, self.anchor_domain = margin, mining, anchor_domain

    def forward(self, embeddings: Tensor, labels: Tensor, domains: Tensor) -> Tensor:
        return cross_domain_triplet_loss(embeddings, labels, domains, self.margin, self.mining, self.anchor_domain)
