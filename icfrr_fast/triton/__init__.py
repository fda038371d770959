"""Triton kernels of icfrr_fast: the CUDA kernels of the registered ops (``icfrr_fast.ops`` imports this package
lazily, inside those kernels, so ``import icfrr_fast`` never imports triton).

Launchers (host functions; arguments are validated by ``icfrr_fast.ops`` before they are called):
    dense_topk_triton      per-row top-k of a dense matrix                      (op icfrr_fast::dense_topk)
    knn_topk_triton        fused similarity (tl.dot) + top-k, no Q x G matrix   (op icfrr_fast::knn_topk)
    knn_scores_triton      the same similarity tiles written out densely        (op icfrr_fast::knn_scores)
    icfrr_rerank_triton    top-L candidates + all ICFRR iterations per query   (op icfrr_fast::icfrr_rerank)
    icfrr_candidates_triton  all ICFRR iterations over (Q, L) candidate lists  (op icfrr_fast::icfrr_candidates)

Under ``TRITON_INTERPRET=1`` (set before this package is imported) every kernel runs on CPU tensors; the tests use
that. Kernel files open with their contract (docs/design.md §7).
"""

from .dense_topk import dense_topk_triton

__all__ = ["dense_topk_triton"]
