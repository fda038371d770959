"""Semantic-neighbourhood and mixture-prediction losses against class embeddings (e.g. word vectors).

After SnMpNet (Paul, Dutta & Biswas, "Universal Cross-Domain Retrieval: Generalizing Across Classes and Domains",
ICCV 2021); the formulation below is ours. A head maps the image embedding to ``h_i`` in the class-embedding space;
with class embeddings ``E_c`` (rows of a (M, S) matrix: the training classes, optionally plus an auxiliary vocabulary,
never the test classes) and temperature ``tau``, the class distribution of an image is

``p(c | i) = softmax_c( cos(h_i, E_c) / tau )``.

* Semantic neighbourhood: the target of an image of class y spreads over the k classes nearest to y in the embedding
  space (y itself included, it is its own nearest): ``w_{y,c} = softmax_{c in N_k(y)}( cos(E_y, E_c) / tau_s )``,
  0 outside ``N_k(y)``;  ``L_SN = -(1 / N) * sum_i sum_c w_{y_i, c} log p(c | i)``.
  k = 1 is plain cross-entropy against the class embedding.
* Mixture prediction: for a mixed image ``x~ = lam x_i + (1 - lam) x_j`` (:mod:`icfrr_fast.training.mixup`) the
  target is the mixture of the two classes: ``t = lam onehot(y_i) + (1 - lam) onehot(y_j)``;
  ``L_MP = -(1 / N) * sum_i sum_c t_{i,c} log p(c | x~_i)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["semantic_logits", "neighbourhood_targets", "semantic_neighbourhood_loss", "mixture_prediction_loss",
           "SemanticNeighbourhoodLoss", "MixturePredictionLoss"]


def _check(projected: Tensor, class_embeddings: Tensor, temperature: float) -> None:
    if projected.dim() != 2 or class_embeddings.dim() != 2:
        raise ValueError(f"projected (N, S) and class_embeddings (M, S) must be 2-D; got shapes "
                         f"{tuple(projected.shape)} and {tuple(class_embeddings.shape)}")
    if projected.shape[1] != class_embeddings.shape[1]:
        raise ValueError(f"projected has S = {projected.shape[1]} but class_embeddings has S = "
                         f"{class_embeddings.shape[1]}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")


def semantic_logits(projected: Tensor, class_embeddings: Tensor, temperature: float = 0.1) -> Tensor:
    """(N, M) ``cos(h_i, E_c) / tau``."""
    _check(projected, class_embeddings, temperature)
    return F.normalize(projected.float(), dim=1) @ F.normalize(class_embeddings.float(), dim=1).t() / temperature


def neighbourhood_targets(class_embeddings: Tensor, neighbours: int = 5, temperature: float = 0.1) -> Tensor:
    """(M, M) soft targets ``w_{y, c}`` (row y sums to 1, non-zero on the ``neighbours`` classes nearest to y).

    Class y always keeps its own slot (even when another class has the same embedding); ties between other classes
    at the neighbourhood's edge are broken by ``torch.topk``.
    """
    M = class_embeddings.shape[0]
    if isinstance(neighbours, bool) or not isinstance(neighbours, int) or not 1 <= neighbours <= M:
        raise ValueError(f"neighbours must be an int in [1, M] = [1, {M}]; got {neighbours!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    e = F.normalize(class_embeddings.float(), dim=1)
    sim = e @ e.t()
    sim.fill_diagonal_(2.0)  # y first even if another class embedding coincides with it
    top = torch.topk(sim, neighbours, dim=1, sorted=True).indices
    sim.fill_diagonal_(1.0)
    w = torch.full_like(sim, float("-inf")).scatter(1, top, sim.gather(1, top) / temperature)
    return torch.softmax(w, dim=1)


def semantic_neighbourhood_loss(projected: Tensor, labels: Tensor, class_embeddings: Tensor, neighbours: int = 5,
                                temperature: float = 0.1, semantic_temperature: float = 0.1) -> Tensor:
    """``L_SN`` of the module docstring.

    Args:
        projected: (N, S) projections h of the image embeddings.
        labels: (N,) int rows of ``class_embeddings``.
        class_embeddings: (M, S) float class embeddings E.
        neighbours: k, the size of the semantic neighbourhood (1 = plain cross-entropy).
        temperature: tau of p(c | i).
        semantic_temperature: tau_s of the neighbourhood weights.
    """
    _check(projected, class_embeddings, temperature)
    if labels.shape != projected.shape[:1]:
        raise ValueError(f"labels must be (N,) = ({projected.shape[0]},); got shape {tuple(labels.shape)}")
    targets = neighbourhood_targets(class_embeddings, neighbours, semantic_temperature)[labels]
    log_p = F.log_softmax(semantic_logits(projected, class_embeddings, temperature), dim=1)
    return -(targets * log_p).sum(dim=1).mean()


def mixture_prediction_loss(projected: Tensor, labels_a: Tensor, labels_b: Tensor, lam: Tensor,
                            class_embeddings: Tensor, temperature: float = 0.1) -> Tensor:
    """``L_MP`` of the module docstring.

    Args:
        projected: (N, S) projections of the mixed images.
        labels_a: (N,) int class of the first image of each mix.
        labels_b: (N,) int class of the second image.
        lam: (N,) float mixing weight of the first image, in [0, 1].
        class_embeddings: (M, S) float.
        temperature: tau.
    """
    _check(projected, class_embeddings, temperature)
    N = projected.shape[0]
    for name, t in (("labels_a", labels_a), ("labels_b", labels_b), ("lam", lam)):
        if t.shape != (N,):
            raise ValueError(f"{name} must be (N,) = ({N},); got shape {tuple(t.shape)}")
    log_p = F.log_softmax(semantic_logits(projected, class_embeddings, temperature), dim=1)
    lam = lam.to(log_p.dtype)
    lp_a = log_p.gather(1, labels_a[:, None])[:, 0]
    lp_b = log_p.gather(1, labels_b[:, None])[:, 0]
    return -(lam * lp_a + (1 - lam) * lp_b).mean()


class SemanticNeighbourhoodLoss(nn.Module):
    """Module form of :func:`semantic_neighbourhood_loss`; holds E as a buffer (moves with ``.to()``)."""

    def __init__(self, class_embeddings: Tensor, neighbours: int = 5, temperature: float = 0.1,
                 semantic_temperature: float = 0.1):
        super().__init__()
        self.register_buffer("class_embeddings", class_embeddings.float(), persistent=False)
        self.neighbours, self.temperature, self.semantic_temperature = neighbours, temperature, semantic_temperature

    def forward(self, projected: Tensor, labels: Tensor) -> Tensor:
        return semantic_neighbourhood_loss(projected, labels, self.class_embeddings, self.neighbours,
                                           self.temperature, self.semantic_temperature)


class MixturePredictionLoss(nn.Module):
    """Module form of :func:`mixture_prediction_loss`; holds E as a buffer."""

    def __init__(self, class_embeddings: Tensor, temperature: float = 0.1):
        super().__init__()
        self.register_buffer("class_embeddings", class_embeddings.float(), persistent=False)
        self.temperature = temperature

    def forward(self, projected: Tensor, labels_a: Tensor, labels_b: Tensor, lam: Tensor) -> Tensor:
        return mixture_prediction_loss(projected, labels_a, labels_b, lam, self.class_embeddings, self.temperature)
