"""The registered PyTorch ops of icfrr_fast: the only module that talks to ``torch.library``.

Every op reads the same way (docs/design.md §3):
    validate_<op>                  every argument check, once (raises ValueError / TypeError naming the argument)
    custom_op("icfrr_fast::<op>")  body = ``icfrr_fast.reference`` (the path for any device without a kernel)
    register_fake                  output shapes, for torch.compile / meta tensors
    register_kernel("cpu")         the C++ kernel in ``icfrr_fast._C``
    register_kernel("cuda")        the Triton kernel (section "CUDA kernels" at the end; imports triton lazily)

Nothing below this module (C++, Triton) re-checks its arguments. Data checks (finite values, ids in range) cost one
pass over the input; they run in the kernels on real tensors, never in the fakes.

Ops:
    icfrr_fast::dense_topk(x, k, largest, exclude_self, row_offset) -> (values, indices)
    icfrr_fast::icfrr_rerank(scores, neighbors, k_q, beta, iters, semantics, largest, depth, k, return_history,
                             early_stop) -> (values, indices, history)
    icfrr_fast::icfrr_candidates(scores, ids, neighbors, gallery_size, k_q, beta, iters, semantics, largest, k,
                                 return_history, early_stop) -> (values, indices, history)
    icfrr_fast::knn_topk(x, y, k, metric, largest, exclude_self, row_offset, precision) -> (values, indices)
    icfrr_fast::knn_scores(x, y, metric, precision) -> scores   (knn_topk's dense mode, same arithmetic)
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from typing import Tuple

import torch
from torch import Tensor

from . import _native, reference
from ._checks import (FLOAT_DTYPES, TRITON_MAX_DEPTH, TRITON_MAX_K, check_bool,
                      check_dense_tensor, check_finite, check_float_matrix, check_gallery_size, check_has_data,
                      check_int, check_k_and_self, check_k_g)
from .params import SEMANTICS, check_icfrr_values

__all__ = ["dense_topk", "icfrr_rerank", "icfrr_candidates", "knn_topk", "knn_scores", "KERNEL_DEVICES", "SEMANTICS",
           "KNN_METRICS", "KNN_PRECISIONS"]

#: metrics of knn_topk / knn_scores: inner product, cosine, Euclidean distance, squared Euclidean distance
KNN_METRICS = ("ip", "cosine", "l2", "l2sq")
#: arithmetic of knn_topk: float32 (float64 for float64 inputs), or inputs rounded to bfloat16 + float32 sums
KNN_PRECISIONS = ("fp32", "bf16")
#: devices with a native kernel per op; every other device runs the reference. Tests parametrise over this.
KERNEL_DEVICES = {"dense_topk": ["cpu", "cuda"], "icfrr_rerank": ["cpu", "cuda"], "icfrr_candidates": ["cpu", "cuda"],
                  "knn_topk": ["cpu", "cuda"], "knn_scores": ["cpu", "cuda"]}

# Tests set this to fill kernel outputs with poison before the kernel runs, so an unwritten element fails them.
_poison_outputs = False


def _out_of_memory(e: BaseException, what: str, shape, dtype: torch.dtype, device, hint: str = "") -> BaseException:
    """A MemoryError naming the bytes of the tensor that could not be allocated (torch reports a failed CPU
    allocation as a RuntimeError), or ``e`` itself when it is not about memory."""
    if isinstance(e, RuntimeError) and "memory" not in str(e).lower():
        return e
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    return MemoryError(f"out of memory: {what} of shape {tuple(shape)} ({dtype}) needs {nbytes} bytes "
                       f"({nbytes / 2**30:.1f} GiB) on {device}{hint}")


def alloc_output(shape, dtype: torch.dtype, device, hint: str = "") -> Tensor:
    """An output tensor; MemoryError naming the bytes (and ``hint``, how to ask for less) when it cannot be had."""
    try:
        if not _poison_outputs:
            return torch.empty(shape, dtype=dtype, device=device)
        fill = float("nan") if dtype.is_floating_point else -(2**31) + 7
        return torch.full(shape, fill, dtype=dtype, device=device)
    except (RuntimeError, MemoryError) as e:
        raise _out_of_memory(e, "an output", shape, dtype, device, hint) from None


#: what to do when icfrr_rerank's outputs do not fit
RERANK_MEMORY_HINT = "; ask for fewer columns with k (results per query) or depth (candidates per query)"


def _as_kernel_float(t: Tensor) -> Tensor:
    """float16/bfloat16 -> float32 (exact); unit stride along the last dimension. A copy that does not fit is a
    MemoryError with its size."""
    try:
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.to(torch.float32)
        if t.stride(-1) != 1 or t.stride(0) < t.shape[-1]:
            t = t.contiguous()
    except (RuntimeError, MemoryError) as e:
        raise _out_of_memory(e, "a float32 / contiguous copy of the input", t.shape, torch.float32, t.device) from None
    return t


# ------------------------------------------------------------------------------------------------------------------
# dense_topk
# ------------------------------------------------------------------------------------------------------------------
def validate_dense_topk(x: Tensor, k: int, largest: bool, exclude_self: bool, row_offset: int,
                         check_data: bool = False) -> None:
    check_float_matrix("x", x)
    check_bool("largest", largest)
    R, C = x.shape
    torch._check_value(C < 2**31 - 1, lambda: f"x must have fewer than 2^31 - 1 columns; got {C}")
    check_k_and_self(k, R, C, exclude_self, row_offset, "every row's own column: row_offset + rows <= columns",
                      "columns")
    if check_data:
        check_finite("x", x)


@torch.library.custom_op("icfrr_fast::dense_topk", mutates_args=())
def dense_topk(x: Tensor, k: int, largest: bool, exclude_self: bool, row_offset: int) -> Tuple[Tensor, Tensor]:
    """Top-k of each row of a dense (R, C) matrix, best first, ties -> smaller column (see reference.dense_topk)."""
    validate_dense_topk(x, k, largest, exclude_self, row_offset, check_data=True)
    v, i = reference.dense_topk(x, k, largest=largest, exclude_self=exclude_self, row_offset=row_offset)
    return v.contiguous(), i.contiguous()


@dense_topk.register_fake
def _(x, k, largest, exclude_self, row_offset):
    validate_dense_topk(x, k, largest, exclude_self, row_offset)
    R = x.shape[0]
    return x.new_empty((R, k)), x.new_empty((R, k), dtype=torch.int64)


def _dense_topk_cpu(xk: Tensor, k: int, largest: bool, exclude_self: bool, row_offset: int) -> Tuple[Tensor, Tensor]:
    """The C++ kernel on a validated float32/float64 ``xk`` (``_as_kernel_float``): values of xk's dtype."""
    R, Cn = xk.shape
    values = alloc_output((R, k), xk.dtype, xk.device)
    indices = alloc_output((R, k), torch.int64, xk.device)
    _native.load().dense_topk(
        x=xk.data_ptr(), x_is_double=xk.dtype == torch.float64, x_stride=xk.stride(0), R=R, C=Cn, k=k,
        largest=largest, exclude_self=exclude_self, row_offset=row_offset, out_values=values.data_ptr(),
        out_indices=indices.data_ptr(), num_threads=_native.get_num_threads(),
    )
    return values, indices


@dense_topk.register_kernel("cpu")
def _(x, k, largest, exclude_self, row_offset):
    validate_dense_topk(x, k, largest, exclude_self, row_offset, check_data=True)
    values, indices = _dense_topk_cpu(_as_kernel_float(x), k, largest, exclude_self, row_offset)
    return values.to(x.dtype), indices


# ------------------------------------------------------------------------------------------------------------------
# Checks shared by icfrr_rerank and icfrr_candidates
# ------------------------------------------------------------------------------------------------------------------
def _check_icfrr_flags(largest: bool, return_history: bool, early_stop: bool) -> None:
    for name, flag in (("largest", largest), ("return_history", return_history), ("early_stop", early_stop)):
        check_bool(name, flag)


def _check_graph(neighbors: Tensor, device: torch.device, rows: str) -> None:
    """neighbors: a 2-D int32 tensor on ``device``; ``rows`` names its row count in messages."""
    check_dense_tensor("neighbors", neighbors)
    torch._check_type(neighbors.dtype == torch.int32,
                      lambda: f"neighbors must be an int32 tensor (GalleryGraph stores it so); got {neighbors.dtype}")
    torch._check_value(neighbors.dim() == 2,
                       lambda: f"neighbors must be 2-D ({rows}, K_g); got {tuple(neighbors.shape)}")
    torch._check_value(neighbors.device == device,
                       lambda: f"neighbors must be on scores' device {device}; got {neighbors.device}")


def _check_icfrr_params(k_q: int, beta: float, iters: int, semantics: str, K_g: int, G: int, L: int,
                        L_name: str) -> None:
    """k_g (= neighbors.shape[1]) against the gallery size G, then k_q, beta, iters, semantics and the capacity of
    the integer vote accumulators for up to L candidates (``L_name`` names L in messages)."""
    check_k_g(K_g, G)
    check_icfrr_values(k_q, beta, iters, semantics, early_stop=False)
    kq = min(k_q, L)
    torch._check_value(kq < 2**24 and kq * (K_g - 1) < 2**40,
                       lambda: f"min(k_q, {L_name}) * (k_g - 1) must be < 2^40 and min(k_q, {L_name}) < 2^24 "
                       f"(integer vote accumulators); got k_q={k_q}, {L_name}={L}, k_g={K_g}")


def _check_id_range(name: str, t: Tensor, lo: int, hi: int, hi_name: str) -> None:
    """Data check: every entry of the integer tensor t in [lo, hi] (``hi_name`` spells hi in the message)."""
    if t.numel():
        mn, mx = torch.aminmax(t)
        mn, mx = int(mn), int(mx)
        if mn < lo or mx > hi:
            raise ValueError(f"{name} must be in [{lo}, {hi_name}] = [{lo}, {hi}]; got ids in [{mn}, {mx}]")


# ------------------------------------------------------------------------------------------------------------------
# icfrr_rerank
# ------------------------------------------------------------------------------------------------------------------
def validate_icfrr_rerank(scores: Tensor, neighbors: Tensor, k_q: int, beta: float, iters: int, semantics: str,
                           largest: bool, depth: int, k: int, return_history: bool, early_stop: bool,
                           check_data: bool = False) -> None:
    check_float_matrix("scores", scores)
    _check_icfrr_flags(largest, return_history, early_stop)
    _check_graph(neighbors, scores.device, "G")
    Q, G = scores.shape
    check_gallery_size(G, detail=" (scores.shape[1] >= 2)")
    torch._check_value(G < 2**31 - 1, lambda: f"the gallery must hold fewer than 2^31 - 1 items; got {G}")
    torch._check_value(neighbors.shape[0] == G, lambda: f"neighbors must have one row per gallery item "
                       f"(scores.shape[1] = {G}); got {neighbors.shape[0]} rows")
    check_int("depth", depth, 1, G, " (the gallery size)")
    _check_icfrr_params(k_q, beta, iters, semantics, neighbors.shape[1], G, depth, "depth")
    check_int("k", k, 1, depth, " (the candidate depth)")
    if check_data:
        check_finite("scores", scores)
        _check_id_range("gallery graph ids", neighbors, 0, G - 1, "G - 1")


def _check_graph_rows(neighbors: Tensor) -> None:
    """Every row i of a (G, K) graph holds distinct ids, none equal to i: one sort of the whole graph, for the paths
    without the CPU kernel's lazy per-row check (the reference on any device, the CUDA kernels)."""
    if neighbors.numel() == 0:
        return
    G = neighbors.shape[0]
    rows = torch.arange(G, device=neighbors.device, dtype=neighbors.dtype)[:, None]
    self_hit = (neighbors == rows).any(dim=1)
    srt = torch.sort(neighbors, dim=1).values
    dup = ((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)).any(dim=1)
    bad = (self_hit | dup).nonzero()
    if bad.numel():
        r = int(bad[0, 0])
        what = "lists the item itself" if bool(self_hit[r]) else "lists an id twice"
        raise ValueError(f"gallery graph row {r} {what}; a row's neighbour ids must be distinct and a gallery item "
                         f"must not be its own neighbour")


@torch.library.custom_op("icfrr_fast::icfrr_rerank", mutates_args=())
def icfrr_rerank(scores: Tensor, neighbors: Tensor, k_q: int, beta: float, iters: int, semantics: str,
                 largest: bool, depth: int, k: int, return_history: bool,
                 early_stop: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """ICFRR re-ranking (docs/design.md §2) of (Q, G) scores with a (G, K_g) int32 graph.

    Returns values (Q, k) with scores' dtype like ``torch.topk`` (keys computed in float64), indices (Q, k) int64,
    history (Q, T + 1, k) int64 (or (Q, 0, k) when ``return_history`` is False). Graph rows must hold distinct ids,
    none the row's own (ValueError otherwise: the CPU kernel checks each row the first time a voter reads it, the
    other paths check the whole graph).
    """
    validate_icfrr_rerank(scores, neighbors, k_q, beta, iters, semantics, largest, depth, k, return_history,
                           early_stop, check_data=True)
    _check_graph_rows(neighbors)
    v, i, h = reference.icfrr_rerank(scores, neighbors, k_q=k_q, beta=beta, iters=iters, semantics=semantics,
                                     largest=largest, depth=depth, k=k, return_history=return_history,
                                     early_stop=early_stop)
    if h is None:
        h = torch.empty((scores.shape[0], 0, k), dtype=torch.int64, device=scores.device)
    return v, i, h


@icfrr_rerank.register_fake
def _(scores, neighbors, k_q, beta, iters, semantics, largest, depth, k, return_history, early_stop):
    validate_icfrr_rerank(scores, neighbors, k_q, beta, iters, semantics, largest, depth, k, return_history,
                           early_stop)
    Q = scores.shape[0]
    values = scores.new_empty((Q, k), dtype=scores.dtype)
    indices = scores.new_empty((Q, k), dtype=torch.int64)
    history = scores.new_empty((Q, iters + 1 if return_history else 0, k), dtype=torch.int64)
    return values, indices, history


@icfrr_rerank.register_kernel("cpu")
def _(scores, neighbors, k_q, beta, iters, semantics, largest, depth, k, return_history, early_stop):
    validate_icfrr_rerank(scores, neighbors, k_q, beta, iters, semantics, largest, depth, k, return_history,
                           early_stop, check_data=True)
    s = _as_kernel_float(scores)
    Q, G = s.shape
    if depth < G:  # the top-L candidates (one selection pass over the G scores), then ICFRR over them
        cv, ci = _dense_topk_cpu(s, k=depth, largest=largest, exclude_self=False, row_offset=0)
        v, i, h = _icfrr_candidates_cpu(cv, ci, neighbors, G, k_q, beta, iters, semantics, largest, k,
                                        return_history, early_stop)
        return v.to(scores.dtype), i, h
    C = _native.load()
    nbr = neighbors if neighbors.stride(1) == 1 else neighbors.contiguous()
    values, indices, history = _rerank_outputs(Q, k, iters, return_history, s.dtype, s.device)
    C.icfrr_rerank(
        scores=s.data_ptr(), scores_is_double=s.dtype == torch.float64, score_stride=s.stride(0), largest=largest,
        neighbors=nbr.data_ptr(), nbr_stride=nbr.stride(0), Q=Q, G=G, K_g=nbr.shape[1], k_q=k_q, beta=float(beta),
        iters=iters, paper=semantics == "paper", depth=depth, k=k, early_stop=early_stop,
        out_values=values.data_ptr(), out_indices=indices.data_ptr(),
        out_history=history.data_ptr() if return_history else 0, num_threads=_native.get_num_threads(),
        values_is_double=values.dtype == torch.float64,
    )
    return values.to(scores.dtype), indices, history


def _rerank_outputs(Q: int, k: int, iters: int, return_history: bool, kernel_dtype: torch.dtype, device):
    """values (Q, k) in the kernel's score dtype (float32/float64), indices (Q, k), history (Q, T + 1 or 0, k)."""
    values = alloc_output((Q, k), kernel_dtype, device, RERANK_MEMORY_HINT)
    indices = alloc_output((Q, k), torch.int64, device, RERANK_MEMORY_HINT)
    history = alloc_output((Q, iters + 1 if return_history else 0, k), torch.int64, device,
                     RERANK_MEMORY_HINT + ", or return_history=False")
    return values, indices, history


# ------------------------------------------------------------------------------------------------------------------
# icfrr_candidates
# ------------------------------------------------------------------------------------------------------------------
def validate_icfrr_candidates(scores: Tensor, ids: Tensor, neighbors: Tensor, gallery_size: int, k_q: int,
                               beta: float, iters: int, semantics: str, largest: bool, k: int, return_history: bool,
                               early_stop: bool, check_data: bool = False) -> None:
    check_float_matrix("scores", scores)
    check_dense_tensor("ids", ids)
    torch._check_type(ids.dtype in (torch.int32, torch.int64),
                      lambda: f"ids must be an int32 or int64 tensor; got {ids.dtype}")
    torch._check_value(ids.shape == scores.shape, lambda: f"ids must have scores' shape (Q, L) = "
                       f"{tuple(scores.shape)}; got {tuple(ids.shape)}")
    torch._check_value(ids.device == scores.device,
                       lambda: f"ids must be on scores' device {scores.device}; got {ids.device}")
    _check_icfrr_flags(largest, return_history, early_stop)
    _check_graph(neighbors, scores.device, "N")
    N, L = neighbors.shape[0], scores.shape[1]
    torch._check_value(1 <= N < 2**31 - 1, lambda: f"neighbors must have between 1 and 2^31 - 2 rows; got {N}")
    check_int("gallery_size", gallery_size, max(2, N), 2**31 - 2, " (at least 2 and the graph's N rows)")
    _check_icfrr_params(k_q, beta, iters, semantics, neighbors.shape[1], gallery_size, L, "L")
    check_int("k", k, 1, L, " (the candidates per row L)")
    if check_data:
        _check_candidate_data(scores, ids, N)
        _check_id_range("gallery graph ids", neighbors, -1, N - 1, "N - 1")


def _check_candidate_data(scores: Tensor, ids: Tensor, N: int) -> None:
    """Data checks of candidate lists: ids in [-1, N - 1], padding -1 only as a row's suffix, distinct ids in a row,
    finite scores of the real candidates (padding's scores are ignored)."""
    _check_id_range("ids", ids, -1, N - 1, "N - 1 (-1: padding)")
    if ids.numel() == 0:
        return
    real = ids >= 0
    gap = real[:, 1:] & ~real[:, :-1]
    if bool(gap.any()):
        q = int(gap.any(dim=1).nonzero()[0])
        raise ValueError(f"ids: padding (-1) must be a row's suffix; row {q} has a candidate after a -1")
    srt = torch.sort(ids, dim=1).values
    dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
    if bool(dup.any()):
        q, c = (int(v) for v in dup.nonzero()[0])
        raise ValueError(f"ids must be distinct in each row; row {q} repeats id {int(srt[q, c])}")
    bad = real & ~torch.isfinite(scores)
    if bool(bad.any()):
        q, c = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"scores of the candidates (ids >= 0) must be finite; scores[{q}, {c}] = "
                         f"{float(scores[q, c])}")


def _candidates_value_dtype(scores: Tensor) -> torch.dtype:
    """dtype the kernels write values in: float32 for float32 scores, else float64 (rounded once to the scores'
    dtype afterwards, like the reference)."""
    return torch.float32 if scores.dtype == torch.float32 else torch.float64


@torch.library.custom_op("icfrr_fast::icfrr_candidates", mutates_args=())
def icfrr_candidates(scores: Tensor, ids: Tensor, neighbors: Tensor, gallery_size: int, k_q: int, beta: float,
                     iters: int, semantics: str, largest: bool, k: int, return_history: bool,
                     early_stop: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """ICFRR re-ranking (docs/design.md §2) of (Q, L) candidate lists: scores and int32/int64 ids (rows of the (N, K_g)
    int32 graph ``neighbors``, any order, padding -1 as a suffix); ``gallery_size`` G >= N sets the rank weight.
    See ``reference.icfrr_candidates``.

    Returns values (Q, k) of scores' dtype, indices (Q, k) int64 (padding: -1 and -inf / +inf for
    ``largest=False``), history (Q, T + 1, k) int64 (or (Q, 0, k) when ``return_history`` is False).
    """
    validate_icfrr_candidates(scores, ids, neighbors, gallery_size, k_q, beta, iters, semantics, largest, k,
                               return_history, early_stop, check_data=True)
    _check_graph_rows(neighbors)
    v, i, h = reference.icfrr_candidates(scores, ids, neighbors, gallery_size=gallery_size, k_q=k_q, beta=beta,
                                         iters=iters, semantics=semantics, largest=largest, k=k,
                                         return_history=return_history, early_stop=early_stop)
    if h is None:
        h = torch.empty((scores.shape[0], 0, k), dtype=torch.int64, device=scores.device)
    return v, i, h


@icfrr_candidates.register_fake
def _(scores, ids, neighbors, gallery_size, k_q, beta, iters, semantics, largest, k, return_history, early_stop):
    validate_icfrr_candidates(scores, ids, neighbors, gallery_size, k_q, beta, iters, semantics, largest, k,
                               return_history, early_stop)
    Q = scores.shape[0]
    values = scores.new_empty((Q, k))
    indices = scores.new_empty((Q, k), dtype=torch.int64)
    history = scores.new_empty((Q, iters + 1 if return_history else 0, k), dtype=torch.int64)
    return values, indices, history


def _icfrr_candidates_cpu(scores, ids, neighbors, gallery_size, k_q, beta, iters, semantics, largest, k,
                          return_history, early_stop):
    """The C++ kernel on validated arguments (also the second stage of icfrr_rerank's CPU kernel)."""
    s = _as_kernel_float(scores)
    ids_k = ids if ids.stride(-1) == 1 else ids.contiguous()
    nbr = neighbors if neighbors.stride(1) == 1 else neighbors.contiguous()
    Q, L = s.shape
    out_dtype = _candidates_value_dtype(scores)
    values, indices, history = _rerank_outputs(Q, k, iters, return_history, out_dtype, s.device)
    _native.load().icfrr_candidates(
        scores=s.data_ptr(), scores_is_double=s.dtype == torch.float64, score_stride=s.stride(0), largest=largest,
        ids=ids_k.data_ptr(), ids_is_int64=ids_k.dtype == torch.int64, ids_stride=ids_k.stride(0),
        neighbors=nbr.data_ptr(), nbr_stride=nbr.stride(0), Q=Q, L=L, N=nbr.shape[0], gallery_size=gallery_size,
        K_g=nbr.shape[1], k_q=k_q, beta=float(beta), iters=iters, paper=semantics == "paper", k=k,
        early_stop=early_stop, out_values=values.data_ptr(), values_is_double=out_dtype == torch.float64,
        out_indices=indices.data_ptr(), out_history=history.data_ptr() if return_history else 0,
        num_threads=_native.get_num_threads(),
    )
    return values.to(scores.dtype), indices, history


@icfrr_candidates.register_kernel("cpu")
def _(scores, ids, neighbors, gallery_size, k_q, beta, iters, semantics, largest, k, return_history, early_stop):
    validate_icfrr_candidates(scores, ids, neighbors, gallery_size, k_q, beta, iters, semantics, largest, k,
                               return_history, early_stop, check_data=True)
    return _icfrr_candidates_cpu(scores, ids, neighbors, gallery_size, k_q, beta, iters, semantics, largest, k,
                                 return_history, early_stop)


# ------------------------------------------------------------------------------------------------------------------
# knn_topk (and knn_scores, its dense mode: the same kernel writing every score instead of selecting)
# ------------------------------------------------------------------------------------------------------------------
def knn_out_dtype(x: Tensor, precision: str) -> torch.dtype:
    """Values are float32, or float64 when the inputs are float64 and precision is "fp32"."""
    return torch.float64 if x.dtype == torch.float64 and precision == "fp32" else torch.float32


def _validate_knn_inputs(x: Tensor, y: Tensor, metric: str, precision: str, check_data: bool) -> None:
    check_float_matrix("x", x)
    check_float_matrix("y", y)
    torch._check_type(x.dtype == y.dtype, lambda: f"x and y must have the same dtype; got {x.dtype} and {y.dtype}")
    torch._check_value(x.device == y.device, lambda: f"x and y must be on one device; got {x.device} and {y.device}")
    torch._check_value(x.shape[1] == y.shape[1],
                       lambda: f"x and y must have the same feature dimension D; got {x.shape[1]} and {y.shape[1]}")
    torch._check_value(x.shape[1] >= 1, lambda: f"the feature dimension D must be >= 1; got {x.shape[1]}")
    torch._check_value(y.shape[0] >= 1, lambda: f"the gallery y must hold at least 1 item; got {y.shape[0]}")
    torch._check_value(y.shape[0] < 2**31 - 1,
                       lambda: f"the gallery y must hold fewer than 2^31 - 1 items; got {y.shape[0]}")
    torch._check_type(isinstance(metric, str), lambda: f"metric must be a str; got {type(metric).__name__}")
    torch._check_value(metric in KNN_METRICS, lambda: f"metric must be one of {KNN_METRICS}; got {metric!r}")
    torch._check_type(isinstance(precision, str), lambda: f"precision must be a str; got {type(precision).__name__}")
    torch._check_value(precision in KNN_PRECISIONS,
                       lambda: f"precision must be one of {KNN_PRECISIONS}; got {precision!r}")
    if check_data:
        check_finite("x", x)
        check_finite("y", y)


def validate_knn_topk(x: Tensor, y: Tensor, k: int, metric: str, largest: bool, exclude_self: bool,
                       row_offset: int, precision: str, check_data: bool = False) -> None:
    _validate_knn_inputs(x, y, metric, precision, check_data)
    Q, G = x.shape[0], y.shape[0]
    check_bool("largest", largest)
    check_k_and_self(k, Q, G, exclude_self, row_offset, "every row of x to be an item of y: row_offset + Q <= G",
                      "the gallery size G")


@torch.library.custom_op("icfrr_fast::knn_topk", mutates_args=())
def knn_topk(x: Tensor, y: Tensor, k: int, metric: str, largest: bool, exclude_self: bool, row_offset: int,
             precision: str) -> Tuple[Tensor, Tensor]:
    """The k best rows of y (G, D) for each row of x (Q, D) by ``metric``, best first, ties -> smaller index.

    Returns values (Q, k) float32 (float64 for float64 inputs with precision "fp32"): similarity for "ip"/"cosine",
    Euclidean distance for "l2", its square for "l2sq"; indices (Q, k) int64. See ``icfrr_fast.knn``.
    """
    validate_knn_topk(x, y, k, metric, largest, exclude_self, row_offset, precision, check_data=True)
    v, i = reference.knn_topk(x, y, k, metric=metric, exclude_self=exclude_self, largest=largest,
                              row_offset=row_offset, precision=precision)
    return v.to(knn_out_dtype(x, precision)).contiguous(), i.contiguous()


@knn_topk.register_fake
def _(x, y, k, metric, largest, exclude_self, row_offset, precision):
    validate_knn_topk(x, y, k, metric, largest, exclude_self, row_offset, precision)
    Q = x.shape[0]
    return x.new_empty((Q, k), dtype=knn_out_dtype(x, precision)), x.new_empty((Q, k), dtype=torch.int64)


def _cpu_knn(x: Tensor, y: Tensor, k: int, metric: str, largest: bool, exclude_self: bool, row_offset: int,
             precision: str, dense: bool) -> Tuple[Tensor, Tensor]:
    """Call the C++ kernel (shared by knn_topk and knn_scores). Inputs are validated."""
    C = _native.load()
    out_dtype = knn_out_dtype(x, precision)
    same = y is x  # a gallery graph: keep one buffer, so the kernel can see x is y (symmetric build)
    if x.dtype != out_dtype:  # float16/bfloat16 (exact) or float64 with precision "bf16" (rounded to bf16 anyway)
        x = x.to(out_dtype)
        y = x if same else y.to(out_dtype)
    xk = _as_kernel_float(x)
    yk = xk if same else _as_kernel_float(y)
    Q, D = xk.shape
    G = yk.shape[0]
    kmetric = {"ip": 0, "cosine": 1, "l2": 2, "l2sq": 3}[metric]
    values = alloc_output((Q, G) if dense else (Q, k), out_dtype, x.device)
    indices = alloc_output((0,) if dense else (Q, k), torch.int64, x.device)
    if Q:
        C.knn_topk(
            x=xk.data_ptr(), x_stride=xk.stride(0), y=yk.data_ptr(), y_stride=yk.stride(0),
            is_double=out_dtype == torch.float64, Q=Q, G=G, D=D, k=k, metric=kmetric, largest=largest,
            exclude_self=exclude_self, row_offset=row_offset, precision=0 if precision == "fp32" else 1,
            dense=dense, out_values=values.data_ptr(),
            out_indices=indices.data_ptr() if not dense else 0, num_threads=_native.get_num_threads(),
        )
    return values, indices


def knn_graph_in_one_call(g: Tensor, k: int) -> bool:
    """True when a CPU gallery graph of g (G, D) float32 with k neighbours should be one knn_topk call (x is y):
    the kernel then runs its symmetric build (half the FLOPs); otherwise callers batch rows to bound memory."""
    if g.device.type != "cpu" or g.dtype != torch.float32 or not _native.available():
        return False
    G, D = g.shape
    return _native.load().knn_topk_symmetric_rows(G=G, D=D, k=k, num_threads=_native.get_num_threads()) > 0


@knn_topk.register_kernel("cpu")
def _(x, y, k, metric, largest, exclude_self, row_offset, precision):
    validate_knn_topk(x, y, k, metric, largest, exclude_self, row_offset, precision, check_data=True)
    return _cpu_knn(x, y, k, metric, largest, exclude_self, row_offset, precision, dense=False)


def validate_knn_scores(x: Tensor, y: Tensor, metric: str, precision: str, check_data: bool = False) -> None:
    _validate_knn_inputs(x, y, metric, precision, check_data)


@torch.library.custom_op("icfrr_fast::knn_scores", mutates_args=())
def knn_scores(x: Tensor, y: Tensor, metric: str, precision: str) -> Tensor:
    """Dense (Q, G) scores of ``metric`` with exactly the arithmetic of ``knn_topk`` (its dense mode): the score
    of every pair is bit-identical to the one knn_topk selects on (for "l2", its square root). float32 (float64 for
    float64 inputs with precision "fp32")."""
    validate_knn_scores(x, y, metric, precision, check_data=True)
    return reference.knn_scores(x, y, metric, precision).to(knn_out_dtype(x, precision))


@knn_scores.register_fake
def _(x, y, metric, precision):
    validate_knn_scores(x, y, metric, precision)
    return x.new_empty((x.shape[0], y.shape[0]), dtype=knn_out_dtype(x, precision))


@knn_scores.register_kernel("cpu")
def _(x, y, metric, precision):
    validate_knn_scores(x, y, metric, precision, check_data=True)
    return _cpu_knn(x, y, 1, metric, True, False, 0, precision, dense=True)[0]


# ------------------------------------------------------------------------------------------------------------------
# CUDA kernels. CUDA tensors run the Triton kernels of ``icfrr_fast.triton``, imported here lazily so that
# ``import icfrr_fast`` never imports triton or initialises CUDA. Where a Triton kernel does not apply (triton not
# installed, or k / depth beyond what it holds on chip) a bounded exact path runs instead, with a one-time warning that
# names it: a stable sort of row batches on the device (dense_topk; knn_topk above the on-chip k, over knn_scores
# tiles), the CUDA build of the C++ core (icfrr_rerank), or the CPU kernels on host copies of batches. No path falls
# back to a dense float64 reference or an O(G^2) buffer.
# ------------------------------------------------------------------------------------------------------------------
_warned: set = set()
_triton_found: bool | None = None


def _warn_once(key: tuple, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _triton_available() -> bool:
    """Whether triton can be imported (looked up once, without importing it)."""
    global _triton_found
    if _triton_found is None:
        _triton_found = importlib.util.find_spec("triton") is not None
    return _triton_found


def _cuda_build_available() -> bool:
    """Whether ``_C`` was compiled with nvcc (it then carries the CUDA driver of the ICFRR core)."""
    return _native.available() and bool(getattr(_native.load(), "has_cuda", False))


def _cuda_stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def _cuda_workers(Q: int, bytes_per_worker: int, device: torch.device) -> int:
    """Worker threads of the CUDA-build ICFRR driver: one query each at a time, scratch within a quarter of the
    free device memory (at most 4 GiB)."""
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 1 << 32
    budget = min(free // 4, 4 << 30)
    return max(1, min(Q, 1 << 16, budget // max(1, bytes_per_worker)))


#: elements of the (rows, columns) slab a row-batched fallback sorts (or copies to the host) at once
_FALLBACK_BATCH_ELEMENTS = 1 << 26


def _row_batches(rows: int, cols: int):
    """Row ranges of at most ``_FALLBACK_BATCH_ELEMENTS`` elements (at least one row each)."""
    step = max(1, _FALLBACK_BATCH_ELEMENTS // max(1, cols))
    return [(r0, min(rows, r0 + step)) for r0 in range(0, rows, step)] or [(0, 0)]


def _stable_topk_rows(s: Tensor, k: int, largest: bool, exclude_self: bool, row_offset: int):
    """Top-k of each row of s (R, C) by a stable sort (best first, ties -> smaller column), on s's device; with
    ``exclude_self`` column r + row_offset is dropped from row r (the best k + 1, less that column where present)."""
    R, C = s.shape
    kk = min(C, k + 1) if exclude_self else k
    srt = torch.sort(s, dim=1, descending=largest, stable=True)
    v, i = srt.values[:, :kk], srt.indices[:, :kk]
    if exclude_self:
        own = torch.arange(row_offset, row_offset + R, device=s.device)[:, None]
        keep = i != own
        keep &= keep.cumsum(dim=1) <= k
        v, i = v[keep].view(R, k), i[keep].view(R, k)
    return v.contiguous(), i.contiguous()


def _dense_topk_cuda(x: Tensor, k: int, largest: bool, exclude_self: bool, row_offset: int):
    validate_dense_topk(x, k, largest, exclude_self, row_offset, check_data=True)
    if _triton_available() and k <= TRITON_MAX_K:
        from .triton.dense_topk import dense_topk_triton

        return dense_topk_triton(x, k, largest, exclude_self, row_offset, alloc=alloc_output)
    why = "triton is not installed" if not _triton_available() else f"k = {k} > {TRITON_MAX_K} (Triton on-chip limit)"
    _warn_once(("dense_topk", why), f"icfrr_fast.dense_topk on CUDA: {why}; running a stable torch.sort of row "
                                    f"batches on the device instead of the Triton kernel")
    parts = [_stable_topk_rows(x[r0:r1], k, largest, exclude_self, row_offset + r0)
             for r0, r1 in _row_batches(*x.shape)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _knn_topk_cuda(x: Tensor, y: Tensor, k: int, metric: str, largest: bool, exclude_self: bool, row_offset: int,
                   precision: str):
    validate_knn_topk(x, y, k, metric, largest, exclude_self, row_offset, precision, check_data=True)
    if _triton_available() and k <= TRITON_MAX_K:
        from .triton.knn_topk import knn_topk_triton

        return knn_topk_triton(x, y, k, metric, largest, exclude_self, row_offset, precision, alloc=alloc_output)
    if _triton_available():  # the same score tiles written in row batches, then a stable sort of each batch
        from .triton.knn_scores import knn_scores_triton

        _warn_once(("knn_topk", "k"), f"icfrr_fast.knn_topk on CUDA: k = {k} > {TRITON_MAX_K} (Triton on-chip "
                                      f"limit); running the knn_scores Triton kernel on row batches and a stable "
                                      f"torch.sort of each batch (same scores, same ranking)")
        parts = []
        for r0, r1 in _row_batches(x.shape[0], y.shape[0]):
            s = knn_scores_triton(x[r0:r1], y, metric, precision, sqrt_l2=False)
            parts.append(_stable_topk_rows(s, k, largest, exclude_self, row_offset + r0))
        v, i = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        if metric == "l2":  # ranked on the squared distance; reported as knn_topk does (float64 sqrt, one rounding)
            v = v.to(torch.float64).sqrt().to(v.dtype)
        return v, i
    _warn_once(("knn_topk", "triton"), "icfrr_fast.knn_topk on CUDA: triton is not installed; running the CPU "
                                       "kernel on host copies of x and y")
    v, i = _cpu_knn(x.cpu(), y.cpu(), k, metric, largest, exclude_self, row_offset, precision, dense=False)
    return v.to(x.device), i.to(x.device)


def _knn_scores_cuda(x: Tensor, y: Tensor, metric: str, precision: str) -> Tensor:
    validate_knn_scores(x, y, metric, precision, check_data=True)
    if _triton_available():
        from .triton.knn_scores import knn_scores_triton

        return knn_scores_triton(x, y, metric, precision, alloc=alloc_output)
    _warn_once(("knn_scores", "triton"), "icfrr_fast.knn_scores on CUDA: triton is not installed; running the CPU "
                                         "kernel on host copies of x and y")
    return _cpu_knn(x.cpu(), y.cpu(), 1, metric, True, False, 0, precision, dense=True)[0].to(x.device)


def _icfrr_rerank_cuda_build(scores, neighbors, k_q, beta, iters, semantics, largest, depth, k, return_history,
                             early_stop):
    """The CUDA driver of the shared core (``_C.icfrr_rerank_cuda``): exact for every depth, one query per thread."""
    C = _native.load()
    s = _as_kernel_float(scores)
    nbr = neighbors if neighbors.stride(1) == 1 else neighbors.contiguous()
    Q, G = s.shape
    dev = s.device
    values, indices, history = _rerank_outputs(Q, k, iters, return_history, s.dtype, dev)
    if Q == 0:
        return values.to(scores.dtype), indices, history
    per_worker = C.icfrr_rerank_cuda_scratch_bytes(G=G, K_g=nbr.shape[1], k_q=k_q, depth=depth)
    workers = _cuda_workers(Q, per_worker, dev)
    scratch = torch.empty(workers * per_worker, dtype=torch.uint8, device=dev)  # stream-ordered reuse after return
    C.icfrr_rerank_cuda(
        scores=s.data_ptr(), scores_is_double=s.dtype == torch.float64, score_stride=s.stride(0), largest=largest,
        neighbors=nbr.data_ptr(), nbr_stride=nbr.stride(0), Q=Q, G=G, K_g=nbr.shape[1], k_q=k_q, beta=float(beta),
        iters=iters, paper=semantics == "paper", depth=depth, k=k, early_stop=early_stop,
        out_values=values.data_ptr(), out_indices=indices.data_ptr(),
        out_history=history.data_ptr() if return_history else 0, scratch=scratch.data_ptr(), workers=workers,
        stream=_cuda_stream(dev), values_is_double=values.dtype == torch.float64,
    )
    return values.to(scores.dtype), indices, history


def _icfrr_rerank_cuda(scores, neighbors, k_q, beta, iters, semantics, largest, depth, k, return_history,
                       early_stop):
    validate_icfrr_rerank(scores, neighbors, k_q, beta, iters, semantics, largest, depth, k, return_history,
                           early_stop, check_data=True)
    _check_graph_rows(neighbors)  # one sort on the GPU; the CUDA kernels do not check rows themselves
    args = (k_q, float(beta), iters, semantics, largest, depth, k, return_history, early_stop)
    if _triton_available() and depth <= TRITON_MAX_DEPTH:
        from .triton.icfrr_rerank import icfrr_rerank_triton

        # the Triton kernel writes float32 values (float64 scores: keys rounded to float32, then widened)
        v, i, h = icfrr_rerank_triton(_as_kernel_float(scores), neighbors, *args, alloc=alloc_output)
        return v.to(scores.dtype), i, h
    why = ("triton is not installed" if not _triton_available()
           else f"depth L = {depth} > {TRITON_MAX_DEPTH} candidates (Triton on-chip limit)")
    if _cuda_build_available():
        _warn_once(("icfrr_rerank", why, "cuda"), f"icfrr_fast.icfrr_rerank on CUDA: {why}; running the CUDA build "
                                                  f"of the C++ core (one query per GPU thread, slower)")
        return _icfrr_rerank_cuda_build(scores, neighbors, *args)
    _warn_once(("icfrr_rerank", why, "cpu"), f"icfrr_fast.icfrr_rerank on CUDA: {why} and icfrr_fast._C has no "
                                             f"CUDA build; running the CPU kernel on host copies of query batches")
    parts = []
    for q0, q1 in _row_batches(*scores.shape):
        parts.append(torch.ops.icfrr_fast.icfrr_rerank(scores[q0:q1].cpu(), neighbors.cpu(), *args))
    return tuple(torch.cat([p[j] for p in parts]).to(scores.device) for j in range(3))


def _icfrr_candidates_cuda(scores, ids, neighbors, gallery_size, k_q, beta, iters, semantics, largest, k,
                           return_history, early_stop):
    validate_icfrr_candidates(scores, ids, neighbors, gallery_size, k_q, beta, iters, semantics, largest, k,
                               return_history, early_stop, check_data=True)
    args = (gallery_size, k_q, float(beta), iters, semantics, largest, k, return_history, early_stop)
    L = scores.shape[1]
    if _triton_available() and L <= TRITON_MAX_DEPTH:
        _check_graph_rows(neighbors)  # one sort on the GPU; the Triton kernel does not check rows itself
        from .triton.icfrr_candidates import icfrr_candidates_triton

        v, i, h = icfrr_candidates_triton(scores, ids, neighbors, *args, alloc=alloc_output)
        return v.to(scores.dtype), i, h
    why = ("triton is not installed" if not _triton_available()
           else f"L = {L} > {TRITON_MAX_DEPTH} candidates (Triton on-chip limit)")
    _warn_once(("icfrr_candidates", why), f"icfrr_fast.icfrr_candidates on CUDA: {why}; running the CPU kernel on "
                                          f"host copies of the (Q, L) candidates and the graph")
    out = _icfrr_candidates_cpu(scores.cpu(), ids.cpu(), neighbors.cpu(), *args)
    return tuple(t.to(scores.device) for t in out)


dense_topk.register_kernel("cuda")(_dense_topk_cuda)
icfrr_rerank.register_kernel("cuda")(_icfrr_rerank_cuda)
icfrr_candidates.register_kernel("cuda")(_icfrr_candidates_cuda)
knn_topk.register_kernel("cuda")(_knn_topk_cuda)
knn_scores.register_kernel("cuda")(_knn_scores_cuda)
