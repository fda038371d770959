"""Argument checks of icfrr_fast: each rule written once, called by the ops' validators and by the public functions.

Every check raises ``TypeError`` (wrong type) or ``ValueError`` (wrong value) with a message that names the argument,
e.g. ``"k_q must be in [1, 9]; got 0"``. The checks of one op's whole argument list live in
``icfrr_fast.ops.validate_<op>``; a public function calls that validator instead of re-typing its rules.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_INT64 = 2**63 - 1
#: iterations T of icfrr_rerank: far beyond any use, and T + 1 history rows stay a small int
MAX_ITERS = 2**31 - 1
#: on-chip limits of the Triton kernels (k of dense_topk / knn_topk, depth L of icfrr_candidates): one definition,
#: read by the kernels and by the CUDA dispatch (which must choose a path without importing triton)
TRITON_MAX_K = 4096
TRITON_MAX_DEPTH = 4096


def check_dense_tensor(name: str, t) -> None:
    """A torch.Tensor with the ordinary strided layout (sparse and other layouts are a TypeError)."""
    torch._check_type(isinstance(t, Tensor), lambda: f"{name} must be a torch.Tensor; got {type(t).__name__}")
    torch._check_type(t.layout == torch.strided,
                      lambda: f"{name} must be a dense (strided) tensor; got layout {t.layout} (use .to_dense())")


def check_float_matrix(name: str, t: Tensor) -> None:
    """A dense 2-D float16/bfloat16/float32/float64 tensor."""
    check_dense_tensor(name, t)
    torch._check_type(
        t.dtype in FLOAT_DTYPES,
        lambda: f"{name} must be a floating tensor (float16, bfloat16, float32 or float64); got {t.dtype}",
    )
    torch._check_value(t.dim() == 2, lambda: f"{name} must be 2-D; got shape {tuple(t.shape)}")


def check_int(name: str, v, lo: int, hi: int | None = None, hint: str = "") -> None:
    """An int (not a bool) in [lo, hi] (hi None: >= lo and within int64, what an op's int argument holds)."""
    torch._check_type(
        isinstance(v, int) and not isinstance(v, bool), lambda: f"{name} must be an int; got {type(v).__name__}"
    )
    if hi is None and v > MAX_INT64:  # beyond what an op's int argument can hold
        hi = MAX_INT64
    rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
    torch._check_value(lo <= v and (hi is None or v <= hi), lambda: f"{name} must be in {rng}{hint}; got {v}")


def check_batch_size(batch_size) -> None:
    """A given batch_size (rows or queries per call) is an int >= 1 (None, the default, is checked by no one)."""
    torch._check_type(isinstance(batch_size, int) and not isinstance(batch_size, bool),
                      lambda: f"batch_size must be an int or None; got {type(batch_size).__name__}")
    torch._check_value(batch_size >= 1, lambda: f"batch_size must be >= 1; got {batch_size}")


def check_gallery_size(G: int, what: str = "the gallery", items: str = "items", detail: str = "") -> None:
    """G >= 2: the rank weight alpha(r) = 1 - r / (G - 1) needs two gallery items (``what`` names the holder,
    ``items`` what it holds, ``detail`` where G comes from)."""
    torch._check_value(G >= 2, lambda: f"{what} must hold at least 2 {items}{detail}; got G = {G}")


def check_k_g(k_g, G: int, name: str = "k_g", hint: str = "") -> None:
    """Neighbours per gallery item (k_g, a graph's k, DBA's top, ECN's t and q): an int in [1, G - 1] (an item is
    never its own neighbour); ``hint`` says what G is when it is not plain."""
    torch._check_type(isinstance(k_g, (int, torch.SymInt)) and not isinstance(k_g, bool),
                      lambda: f"{name} must be an int; got {type(k_g).__name__}")
    torch._check_value(1 <= k_g <= G - 1, lambda: f"{name} must be in [1, G - 1] = [1, {G - 1}]{hint}; got {k_g}")


def check_beta(beta) -> float:
    """beta as a float: finite and >= 0 (an int too large for a float is a ValueError, not an OverflowError)."""
    torch._check_type(isinstance(beta, (int, float)) and not isinstance(beta, bool),
                      lambda: f"beta must be a float; got {type(beta).__name__}")
    ok = beta >= 0 and (beta < 2**1023 if isinstance(beta, int) else math.isfinite(beta))
    torch._check_value(ok, lambda: f"beta must be finite and >= 0; got {beta}")
    return float(beta)


def check_bool(name: str, v) -> None:
    """A bool (an int 0/1 is a TypeError: flags are never positional guesses)."""
    torch._check_type(isinstance(v, bool), lambda: f"{name} must be a bool; got {type(v).__name__}")


def check_k_and_self(k: int, rows: int, cols: int, exclude_self: bool, row_offset: int, self_needs: str,
                     cols_name: str) -> None:
    """k of a top-k over `cols` columns, where row r skips column row_offset + r when exclude_self."""
    check_bool("exclude_self", exclude_self)
    check_int("row_offset", row_offset, 0)
    if exclude_self:
        torch._check_value(row_offset + rows <= cols,
                           lambda: f"exclude_self needs {self_needs}; got {row_offset} + {rows} > {cols}")
    check_int("k", k, 1, cols - 1 if exclude_self else cols,
              f" ({cols_name}" + (" - 1 with exclude_self)" if exclude_self else ")"))


def check_has_data(name: str, t: Tensor) -> None:
    """A data check needs values: a meta tensor (shape only) is a ValueError."""
    torch._check_value(t.device.type != "meta",
                       lambda: f"{name} is a meta tensor (a shape without data); this call needs its values")


def check_finite(name: str, t: Tensor) -> None:
    """Data check, one pass without a temporary of t's size: min and max are finite iff every value is (NaN
    propagates through both)."""
    check_has_data(name, t)
    if t.numel():
        lo, hi = torch.aminmax(t)
        if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
            raise ValueError(f"{name} must be finite; it contains NaN or infinite values")


def check_feature_matrix(name: str, x) -> None:
    """(N, D) features of any floating dtype, finite (the k-means / product-quantisation inputs)."""
    check_dense_tensor(name, x)
    torch._check_type(x.dtype.is_floating_point, lambda: f"{name} must be a floating-point tensor; got {x.dtype}")
    torch._check_value(x.dim() == 2, lambda: f"{name} must be 2-D (N, D); got shape {tuple(x.shape)}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or inf")
