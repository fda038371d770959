"""Argument checks shared by the re-rankers' ``_validate_<method>`` functions (rules not in ``.._checks``)."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .. import _checks as checks


def check_real(name: str, v, lo: float, hi: float = math.inf) -> None:
    """A finite real number (not a bool) in [lo, hi]."""
    torch._check_type(isinstance(v, (int, float)) and not isinstance(v, bool),
                      lambda: f"{name} must be a float; got {type(v).__name__}")
    rng = f"[{lo}, {hi}]" if math.isfinite(hi) else f">= {lo}"
    torch._check_value(math.isfinite(v) and lo <= v <= hi, lambda: f"{name} must be finite and in {rng}; got {v}")


def check_features(query: Tensor, gallery: Tensor, min_gallery: int = 1) -> None:
    """(Q, D) queries and (G, D) gallery features: floating, 2-D, one D, one device, finite, G >= min_gallery."""
    checks.check_float_matrix("query", query)
    checks.check_float_matrix("gallery", gallery)
    torch._check_value(query.shape[1] == gallery.shape[1], lambda: "query and gallery must have the same feature "
                       f"dimension D; got {query.shape[1]} and {gallery.shape[1]}")
    torch._check_value(query.shape[1] >= 1, lambda: f"the feature dimension D must be >= 1; got {query.shape[1]}")
    torch._check_value(query.device == gallery.device, lambda: "query and gallery must be on one device; got "
                       f"{query.device} and {gallery.device}")
    torch._check_value(gallery.shape[0] >= min_gallery, lambda: f"gallery must hold at least {min_gallery} "
                       f"item(s); got {gallery.shape[0]}")
    checks.check_finite("query", query)
    checks.check_finite("gallery", gallery)


def check_candidates(candidates: Optional[Tensor], Q: int, G: int, device) -> None:
    """(Q, L) int32/int64 gallery ids per query, distinct per row, -1 padding only as a suffix, at least one real id
    per row."""
    if candidates is None:
        return
    torch._check_type(isinstance(candidates, Tensor),
                      lambda: f"candidates must be a torch.Tensor; got {type(candidates).__name__}")
    torch._check_type(candidates.dtype in (torch.int32, torch.int64),
                      lambda: f"candidates must be an int32 or int64 tensor of gallery ids; got {candidates.dtype}")
    torch._check_value(candidates.dim() == 2 and candidates.shape[0] == Q and candidates.shape[1] >= 1,
                       lambda: f"candidates must be (Q, L) = ({Q}, L >= 1); got {tuple(candidates.shape)}")
    torch._check_value(candidates.device == device,
                       lambda: f"candidates must be on the features' device {device}; got {candidates.device}")
    c = candidates.long()
    lo, hi = int(c.min()), int(c.max())
    torch._check_value(lo >= -1 and hi < G, lambda: f"candidates must be gallery ids in [0, {G - 1}] or -1 "
                       f"(padding); got ids in [{lo}, {hi}]")
    pad = c < 0
    torch._check_value(not bool((pad[:, 1:] < pad[:, :-1]).any()),
                       lambda: "candidates may hold -1 padding only at the end of a row")
    torch._check_value(not bool(pad[:, 0].any()), lambda: "every row of candidates needs at least one gallery id")
    s = torch.where(pad, -1 - torch.arange(c.shape[1], device=c.device), c).sort(dim=1).values
    torch._check_value(not bool((s[:, 1:] == s[:, :-1]).any()), lambda: "candidates must be distinct within a row")


def unit_rows(x: Tensor) -> Tensor:
    """Rows scaled to unit L2 norm (a zero row stays zero)."""
    n = x.norm(dim=1, keepdim=True)
    return torch.where(n > 0, x / n.clamp_min(torch.finfo(x.dtype).tiny), x)
