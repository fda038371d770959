"""The re-rankers ICFRR is compared with, exact and sparse on icfrr_fast's machinery (docs/rerankers.md).

Every function returns ``(values, indices)`` like ``torch.topk``: distances ascending for the distance-based methods
(k-reciprocal, ECN), similarities descending for the inner-product ones (AQE, alpha-QE, DBA, SuperGlobal); indices
are int64 gallery ids. Each has a dense, readable oracle of the same name in ``icfrr_fast.reference``.
"""

from .dba import dba
from .ecn import ecn
from .k_reciprocal import k_reciprocal, k_reciprocal_features
from .query_expansion import alpha_qe, aqe
from .superglobal import superglobal

__all__ = ["k_reciprocal", "k_reciprocal_features", "aqe", "alpha_qe", "dba", "ecn", "superglobal"]
