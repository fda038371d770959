"""icfrr_fast: exact, fast ICFRR (Iterative Cluster-free Re-ranking) for cross-domain retrieval.

Data flow: features -> top-K (gallery graph, query candidates) -> ICFRR -> (values, indices) / metrics.

Importing this package registers the ``torch.ops.icfrr_fast.*`` ops and does nothing else: it does not import
triton, timm or faiss, does not initialise CUDA, and succeeds even when the compiled kernels are missing.
"""

from . import metrics, ops, reference
from ._native import SIMD_LEVELS, cpu_info, get_num_threads, set_num_threads, set_simd_level, simd_level
from .cluster_retrieve import cluster_retrieve
from .faiss_stage import FaissICFRR
from .graph import GalleryGraph
from .index import ICFRRIndex
from .knn import KNNResult, knn
from .params import ICFRRParams
from .rerank import ICFRRResult, icfrr

__version__ = "0.1.0"

__all__ = [
    "icfrr",
    "ICFRRResult",
    "ICFRRParams",
    "GalleryGraph",
    "ICFRRIndex",
    "FaissICFRR",
    "knn",
    "KNNResult",
    "cluster_retrieve",
    "metrics",
    "ops",
    "reference",
    "set_num_threads",
    "get_num_threads",
    "set_simd_level",
    "simd_level",
    "SIMD_LEVELS",
    "cpu_info",
    "__version__",
]


def __getattr__(name):
    # icfrr_fast.distributed (torch.distributed) is imported on first use, never by `import icfrr_fast`
    if name == "distributed":
        import importlib

        return importlib.import_module(".distributed", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
