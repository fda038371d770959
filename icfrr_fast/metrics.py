"""Retrieval metrics on rankings (gallery ids, best first), vectorised over queries, never a Q x G matrix of scores.

Conventions (DESIGN §5), each an explicit argument:

* ``ap="non_interpolated"`` (default, what the ICFRR paper reports):
  ``AP = (1 / n_pos) * sum_{i: rel_i} P@i`` over the whole list, ``n_pos`` = the query's positives in the gallery.
  Positives missing from a truncated list count as never retrieved.
* ``ap="voc"`` (SAKE-derived ZS-SBIR code): the area under the precision-recall curve with precision made
  monotone, ``(1 / n_pos) * sum_{i: rel_i} max_{j >= i} P@j``.
* mAP@K: AP over the top-K list, normalised by the positives retrieved in it (``at_k="retrieved"``, ICFRR /
  torchmetrics) or by ``min(K, n_pos)`` (``at_k="min_k_pos"``). A list with no positive in its top K scores 0.
* P@K = (positives in the top K) / K.
* Means are over queries with at least one positive in the gallery; the others are excluded and counted in
  ``"queries_without_positive"``.

Metrics depend only on the ranking, never on the sign or scale of scores.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import Tensor

__all__ = ["evaluate", "evaluate_history", "average_precision", "relevance"]

AP_VARIANTS = ("non_interpolated", "voc")
AT_K_VARIANTS = ("retrieved", "min_k_pos")


def _check_labels(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor; got layout {t.layout}")
    if t.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (a shape without data); metrics need its values")
    wide_unsigned = tuple(getattr(torch, d) for d in ("uint16", "uint32", "uint64") if hasattr(torch, d))
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype in wide_unsigned:
        raise TypeError(f"{name} must be an integer (signed or uint8) or bool tensor of class labels; got {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D; got shape {tuple(t.shape)}")


def _validate_evaluate(indices: Tensor, query_labels: Tensor, gallery_labels: Tensor, map_at: Sequence[int],
                       precision_at: Sequence[int], ap: str, at_k: str, chunk_size: int = 1) -> None:
    if not isinstance(indices, Tensor):
        raise TypeError(f"indices must be a torch.Tensor; got {type(indices).__name__}")
    if indices.layout != torch.strided:
        raise TypeError(f"indices must be a dense (strided) tensor; got layout {indices.layout}")
    if indices.device.type == "meta":
        raise ValueError("indices is a meta tensor (a shape without data); metrics need its values")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be an int; got {type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise TypeError(f"indices must be an integer tensor of gallery ids; got {indices.dtype}")
    if indices.dim() != 2:
        raise ValueError(f"indices must be 2-D (Q, n); got shape {tuple(indices.shape)}")
    _check_labels("query_labels", query_labels)
    _check_labels("gallery_labels", gallery_labels)
    if query_labels.shape[0] != indices.shape[0]:
        raise ValueError(f"query_labels must have one label per row of indices ({indices.shape[0]}); "
                         f"got {query_labels.shape[0]}")
    G = gallery_labels.shape[0]
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= G):
        raise ValueError(f"indices must be gallery ids in [0, {G - 1}]; got ids in "
                         f"[{int(indices.min())}, {int(indices.max())}]")
    for name, ks in (("map_at", map_at), ("precision_at", precision_at)):
        if isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__"):
            raise TypeError(f"{name} must be a sequence of positive ints; got {type(ks).__name__}")
        for K in ks:
            if isinstance(K, bool) or not isinstance(K, int) or not 1 <= K < 2**63:
                raise ValueError(f"{name} must hold positive ints (< 2^63); got {K!r}")
    if ap not in AP_VARIANTS:
        raise ValueError(f"ap must be one of {AP_VARIANTS}; got {ap!r}")
    if at_k not in AT_K_VARIANTS:
        raise ValueError(f"at_k must be one of {AT_K_VARIANTS}; got {at_k!r}")


def _check_distinct_rows(indices: Tensor, start: int) -> None:
    """A ranking lists each gallery item at most once (a repeated id would count its relevance twice)."""
    if indices.shape[1] < 2:
        return
    srt = torch.sort(indices, dim=1).values
    dup = (srt[:, 1:] == srt[:, :-1]).any(dim=1).nonzero()
    if dup.numel():
        raise ValueError(f"indices row {start + int(dup[0, 0])} lists a gallery id twice; a ranking must hold "
                         f"distinct ids")


def _common_label_dtype(a: Tensor, b: Tensor) -> torch.dtype:
    """A dtype holding every value of both label tensors (query 300 vs uint8 gallery labels must not wrap)."""
    return torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.int64)


def relevance(indices: Tensor, query_labels: Tensor, gallery_labels: Tensor) -> Tensor:
    """(Q, n) bool: ``gallery_labels[indices[q, i]] == query_labels[q]``."""
    return gallery_labels.to(indices.device)[indices] == query_labels.to(indices.device)[:, None]


def _positives_per_query(query_labels: Tensor, gallery_labels: Tensor) -> Tensor:
    """(Q,) int64: number of gallery items sharing each query's label."""
    uniq, counts = torch.unique(gallery_labels, return_counts=True)
    pos = torch.searchsorted(uniq, query_labels.to(uniq.dtype)).clamp(max=max(len(uniq) - 1, 0))
    found = uniq[pos] == query_labels.to(uniq.dtype) if len(uniq) else torch.zeros_like(query_labels, dtype=bool)
    return torch.where(found, counts[pos], torch.zeros_like(pos))


def average_precision(rel: Tensor, n_pos: Tensor, ap: str = "non_interpolated") -> Tensor:
    """(Q,) float64 AP of relevance rows ``rel`` (Q, n), normalised by ``n_pos`` (Q,) (0 where n_pos = 0)."""
    relf = rel.to(torch.float64)
    hits = torch.cumsum(relf, dim=1)
    ranks = torch.arange(1, rel.shape[1] + 1, dtype=torch.float64, device=rel.device)
    prec = hits / ranks
    if ap == "voc":  # precision made monotone: max over the rest of the list
        prec = torch.flip(torch.cummax(torch.flip(prec, [1]), dim=1).values, [1])
    num = (prec * relf).sum(dim=1)
    den = n_pos.to(torch.float64)
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def evaluate(
    indices: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    *,
    map_at: Sequence[int] = (200,),
    precision_at: Sequence[int] = (100, 200),
    ap: str = "non_interpolated",
    at_k: str = "retrieved",
    chunk_size: int = 256,
) -> Dict[str, float]:
    """mAP@all, mAP@K and P@K of rankings.

    Args:
        indices: (Q, n) int gallery ids, best first (n = G for a full ranking).
        query_labels: (Q,) int class labels of the queries.
        gallery_labels: (G,) int class labels of the gallery.
        map_at: the K of each mAP@K.
        precision_at: the K of each P@K.
        ap: "non_interpolated" or "voc".
        at_k: mAP@K normaliser, "retrieved" or "min_k_pos".
        chunk_size: queries per vectorised chunk (bounds memory to chunk_size x n), >= 1.

    Returns:
        dict with "mAP@all", "mAP@K" and "P@K" (floats in [0, 1]), "queries" (evaluated) and
        "queries_without_positive" (excluded).

    Raises:
        TypeError / ValueError: bad types or shapes, ids outside [0, G - 1], a row listing an id twice, K < 1,
            chunk_size < 1, unknown ap / at_k. Labels are compared in a dtype that holds both (never wrapped).

    Example:
        >>> import torch
        >>> from icfrr_fast.metrics import evaluate
        >>> m = evaluate(torch.tensor([[0, 1, 2]]), torch.tensor([1]), torch.tensor([1, 0, 1]), map_at=(2,),
        ...              precision_at=(2,))
        >>> round(m["mAP@all"], 4), m["P@2"]
        (0.8333, 0.5)
    """
    _validate_evaluate(indices, query_labels, gallery_labels, map_at, precision_at, ap, at_k, chunk_size)
    label_dtype = _common_label_dtype(query_labels, gallery_labels)
    query_labels, gallery_labels = query_labels.to(label_dtype), gallery_labels.to(label_dtype)
    Q, n = indices.shape
    n_pos_all = _positives_per_query(query_labels.cpu(), gallery_labels.cpu()).to(indices.device)
    valid = n_pos_all > 0
    sums: Dict[str, float] = {"mAP@all": 0.0}
    sums.update({f"mAP@{K}": 0.0 for K in map_at})
    sums.update({f"P@{K}": 0.0 for K in precision_at})
    for start in range(0, Q, chunk_size):
        sl = slice(start, min(Q, start + chunk_size))
        _check_distinct_rows(indices[sl], start)
        rel = relevance(indices[sl], query_labels[sl], gallery_labels)
        n_pos, ok = n_pos_all[sl], valid[sl]
        sums["mAP@all"] += float(average_precision(rel, n_pos, ap)[ok].sum())
        for K in map_at:
            relk = rel[:, :K]
            norm = relk.sum(dim=1) if at_k == "retrieved" else torch.clamp(n_pos, max=K)
            sums[f"mAP@{K}"] += float(average_precision(relk, norm, ap)[ok].sum())
        for K in precision_at:
            sums[f"P@{K}"] += float((rel[:, :K].sum(dim=1).to(torch.float64) / K)[ok].sum())
    n_valid = int(valid.sum())
    out = {name: (v / n_valid if n_valid else float("nan")) for name, v in sums.items()}
    out["queries"] = n_valid
    out["queries_without_positive"] = Q - n_valid
    return out


def evaluate_history(history: Tensor, query_labels: Tensor, gallery_labels: Tensor, **kwargs) -> List[Dict[str, float]]:
    """``evaluate`` for each iteration of an ICFRR history (Q, T + 1, n): element t is iteration t (0 = initial)."""
    if not isinstance(history, Tensor) or history.dim() != 3:
        raise ValueError("history must be a (Q, T + 1, n) tensor (icfrr(..., return_history=True).history)")
    return [evaluate(history[:, t], query_labels, gallery_labels, **kwargs) for t in range(history.shape[1])]
