"""The one synthetic-data generator of the project (tests, benchmarks and examples use it) and the device list.

ICFRR needs class structure that i.i.d. noise lacks: gallery items of one class must be each other's neighbours.
``cross_domain_features`` draws class centres in a random low-dimensional subspace, samples both domains around
them, shifts the query domain by a fixed offset (the domain gap) and L2-normalises, so that re-ranking has
something to find, as on real sketch/photo features.
"""

from __future__ import annotations

import os
from typing import List, NamedTuple

import torch
from torch import Tensor

__all__ = ["CrossDomainData", "cross_domain_features", "available_devices"]


class CrossDomainData(NamedTuple):
    queries: Tensor         # (Q, D) float32, L2-normalised
    query_labels: Tensor    # (Q,) int64
    gallery: Tensor         # (G, D) float32, L2-normalised
    gallery_labels: Tensor  # (G,) int64


def cross_domain_features(
    num_queries: int,
    num_gallery: int,
    dim: int = 64,
    num_classes: int = 20,
    *,
    intrinsic_dim: int = 16,
    spread: float = 0.6,
    domain_gap: float = 0.5,
    seed: int = 0,
) -> CrossDomainData:
    """Seeded, clustered, low-intrinsic-dimension features of two domains.

    x = normalize(P (c_y + spread * e) + gap * d_domain + 0.05 * n), with class centres c_y ~ N(0, I_r), P a random
    (dim, r) projection, e ~ N(0, I_r) per sample, d_domain a fixed random direction (zero for the gallery).
    """
    gen = torch.Generator().manual_seed(seed)
    r = min(intrinsic_dim, dim)
    proj = torch.linalg.qr(torch.randn(dim, r, generator=gen)).Q  # (dim, r) orthonormal columns
    centres = torch.randn(num_classes, r, generator=gen)
    shift = torch.randn(dim, generator=gen)
    shift = shift / shift.norm()

    def sample(n: int, gap: float):
        labels = torch.randint(0, num_classes, (n,), generator=gen)
        z = centres[labels] + spread * torch.randn(n, r, generator=gen)
        x = z @ proj.T + gap * shift * centres.norm(dim=1).mean() + 0.05 * torch.randn(n, dim, generator=gen)
        return torch.nn.functional.normalize(x, dim=1).float(), labels

    q, ql = sample(num_queries, domain_gap)
    g, gl = sample(num_gallery, 0.0)
    return CrossDomainData(q, ql, g, gl)


def available_devices() -> List[str]:
    """Devices to test on: "cpu" always, "cuda" when present; ICFRR_TEST_DEVICES="cpu,cuda" overrides."""
    env = os.environ.get("ICFRR_TEST_DEVICES")
    if env:
        return [d.strip() for d in env.split(",") if d.strip()]
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
