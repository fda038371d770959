"""The re-rankers ICFRR is compared with, exact and sparse on icfrr_fast's machinery (docs/rerankers.md).

Every function returns ``(values, indices)`` like ``torch.topk``: distances ascending (or similarities descending
where the method scores by similarity, as documented), indices int64 gallery ids. Each has a dense, readable oracle of
the same name in ``icfrr_fast.reference``.
"""

from .k_reciprocal import k_reciprocal, k_reciprocal_features

__all__ = ["k_reciprocal", "k_reciprocal_features"]
