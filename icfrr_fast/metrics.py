"""Retrieval metrics on rankings (gallery ids, best first), vectorised over queries, never a Q x G matrix of scores.

Conventions (docs/design.md §5), each an explicit argument:

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

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["evaluate", "evaluate_history", "IterationMetrics", "average_precision", "relevance"]

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


class IterationMetrics:
    """Per-iteration means of :func:`evaluate`'s metrics over an ICFRR history that arrives in query chunks.

    Each chunk's histories (chunk, T + 1, n) are scored with :func:`evaluate_history`; a metric's mean over all
    chunks is ``sum_c m_c * n_c / sum_c n_c`` with ``m_c`` the chunk's mean over its ``n_c`` counted queries (those
    with a positive in the gallery), so it equals the mean over all queries at once. Only one chunk's history is
    held at a time.

    Args:
        gallery_labels: (G,) int class labels of the gallery.
        **evaluate_kwargs: ``map_at``, ``precision_at``, ``ap``, ``at_k``, ``chunk_size`` of :func:`evaluate`.

    Attributes:
        queries: queries counted so far (with a positive in the gallery).
        queries_without_positive: queries excluded so far.

    Example:
        >>> import torch
        >>> acc = IterationMetrics(torch.tensor([1, 0, 1]), map_at=(2,), precision_at=(2,))
        >>> acc.update(torch.tensor([[[0, 1, 2], [0, 2, 1]]]), torch.tensor([1]))  # one query, T = 1
        >>> acc.update(torch.tensor([[[1, 0, 2], [1, 0, 2]]]), torch.tensor([0]))
        >>> [round(m["mAP@all"], 4) for m in acc.compute()], acc.queries
        ([0.9167, 1.0], 2)
    """

    def __init__(self, gallery_labels: Tensor, **evaluate_kwargs) -> None:
        self.gallery_labels = gallery_labels
        self.evaluate_kwargs = evaluate_kwargs
        self._sums: List[Dict[str, float]] = []
        self.queries = 0
        self.queries_without_positive = 0

    def update(self, history: Tensor, query_labels: Tensor) -> None:
        """Add a chunk: ``history`` (chunk, T + 1, n) int gallery ids, ``query_labels`` (chunk,) int.

        Raises:
            ValueError: a different number of iterations than the chunks before, or what :func:`evaluate` raises.
        """
        per_iter = evaluate_history(history, query_labels, self.gallery_labels, **self.evaluate_kwargs)
        if self._sums and len(per_iter) != len(self._sums):
            raise ValueError(f"history has {len(per_iter)} iterations (T + 1); earlier chunks had {len(self._sums)}")
        n = per_iter[0]["queries"]
        for t, m in enumerate(per_iter):
            if len(self._sums) <= t:
                self._sums.append({key: 0.0 for key in m if key.startswith(("mAP", "P@"))})
            if n:  # a chunk without counted queries has NaN means and adds nothing
                for key in self._sums[t]:
                    self._sums[t][key] += m[key] * n
        self.queries += n
        self.queries_without_positive += per_iter[0]["queries_without_positive"]

    def compute(self) -> List[Dict[str, float]]:
        """Element t: ``{"mAP@all", "mAP@K", "P@K": mean over the counted queries}`` after iteration t (0 = initial);
        NaN where no query was counted; ``[]`` before any chunk."""
        return [{key: (v / self.queries if self.queries else float("nan")) for key, v in s.items()}
                for s in self._sums]


# ------------------------------------------------------------------------------------------------------------------
# Protocol evaluators: per-query ignore ("junk") sets, CMC, mAP, mINP
# ------------------------------------------------------------------------------------------------------------------
#: setups of the revisited Oxford / Paris protocol (Radenovic, Iscen, Tolias, Avrithis & Chum, CVPR 2018):
#: (positives, junk) as unions of each query's "easy", "hard" and "junk" lists
REVISITED_SETUPS = {"easy": (("easy",), ("junk", "hard")), "medium": (("easy", "hard"), ("junk",)),
                    "hard": (("hard",), ("junk", "easy"))}
PROTOCOL_AP = ("non_interpolated", "trapezoid")


def _check_rank_list(indices: Tensor, G: Optional[int]) -> None:
    if not isinstance(indices, Tensor):
        raise TypeError(f"indices must be a torch.Tensor; got {type(indices).__name__}")
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise TypeError(f"indices must be an integer tensor of gallery ids; got {indices.dtype}")
    if indices.dim() != 2:
        raise ValueError(f"indices must be 2-D (Q, n); got shape {tuple(indices.shape)}")
    if G is not None and indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= G):
        raise ValueError(f"indices must be gallery ids in [0, {G - 1}]; got ids in [{int(indices.min())}, "
                         f"{int(indices.max())}]")


def _check_cutoffs(name: str, ks: Sequence[int]) -> None:
    for K in ks:
        if isinstance(K, bool) or not isinstance(K, int) or K < 1:
            raise ValueError(f"{name} must hold positive ints; got {K!r}")


def _protocol_chunk(rel: Tensor, junk: Tensor, n_pos: Tensor, ap: str, cmc_at: Sequence[int],
                    precision_at: Sequence[int]) -> Dict[str, Tensor]:
    """Per-query metrics of one chunk of ranked lists with the junk entries removed.

    rel, junk: (B, n) bool (positive / ignored at each rank); n_pos: (B,) positives in the whole gallery.
    Returns (B,) float64 tensors: "AP", "INP", "CMC@r", "P@k".
    """
    keep = ~junk
    hit = rel & keep
    rank = torch.cumsum(keep.to(torch.int64), dim=1) - 1  # 0-based rank after removing junk
    j = torch.cumsum(hit.to(torch.int64), dim=1) - 1  # 0-based index of each hit among the hits
    r64, j64 = rank.to(torch.float64), j.to(torch.float64)
    den = n_pos.to(torch.float64).clamp(min=1)[:, None]
    if ap == "non_interpolated":  # sum over hits of P@rank
        contrib = (j64 + 1) / (r64 + 1)
    else:  # revisitop's trapezoid between the precision before and at each hit
        before = torch.where(rank > 0, j64 / r64.clamp(min=1), torch.ones_like(r64))
        contrib = (before + (j64 + 1) / (r64 + 1)) / 2
    out = {"AP": torch.where(hit, contrib / den, 0.0).sum(dim=1)}
    inf = torch.iinfo(torch.int64).max
    first = torch.where(hit, rank, inf).min(dim=1).values if rel.shape[1] else torch.full_like(n_pos, inf)
    last = torch.where(hit, rank, -1).max(dim=1).values if rel.shape[1] else torch.full_like(n_pos, -1)
    found = hit.sum(dim=1)
    out["INP"] = torch.where((found == n_pos) & (n_pos > 0), n_pos.to(torch.float64) / (last + 1).clamp(min=1),
                             0.0)
    for r in cmc_at:
        out[f"CMC@{r}"] = (first < r).to(torch.float64)
    for k in precision_at:
        out[f"P@{k}"] = (hit & (rank < k)).sum(dim=1).to(torch.float64) / k
    return out


def _accumulate(sums: Dict[str, float], per_query: Dict[str, Tensor], ok: Tensor) -> None:
    for name, v in per_query.items():
        sums[name] = sums.get(name, 0.0) + float(v[ok].sum())


def _means(sums: Dict[str, float], n_valid: int, Q: int, names: Dict[str, str]) -> Dict[str, float]:
    out = {public: (sums.get(internal, 0.0) / n_valid if n_valid else float("nan"))
           for public, internal in names.items()}
    out["queries"] = n_valid
    out["queries_without_positive"] = Q - n_valid
    return out


def evaluate_reid(
    indices: Tensor,
    query_ids: Tensor,
    gallery_ids: Tensor,
    query_cams: Tensor,
    gallery_cams: Tensor,
    *,
    cmc_at: Sequence[int] = (1, 5, 10),
    junk_ids: Sequence[int] = (-1,),
    chunk_size: int = 1024,
) -> Dict[str, float]:
    """Person re-ID protocol (Market-1501, DukeMTMC, MSMT17): CMC Rank-r, mAP and mINP.

    For query q, gallery items of the same identity seen by the same camera are ignored ("junk": removed from the
    ranking before scoring), as are items whose identity is in ``junk_ids`` (Market-1501's -1 "junk" images);
    positives are the same identity from another camera. After removing junk from each ranked list:

    * Rank-r (CMC) = 1 if the first positive is among the first r;
    * AP = (1 / n_pos) sum over positives of P@(their rank) (non-interpolated; scikit-learn's
      ``average_precision_score`` on the list);
    * INP = n_pos / (rank of the last positive) (Ye et al., "Deep Learning for Person Re-identification: A Survey
      and Outlook", TPAMI 2021), 0 when a truncated list misses a positive.

    n_pos counts the query's positives in the whole gallery, so a truncated list (top K) scores the positives it
    misses as never retrieved. Means are over queries with at least one positive.

    Args:
        indices: (Q, n) int gallery ids, best first (n = G for the full ranking; any n for a top-K list).
        query_ids, gallery_ids: (Q,) and (G,) int identities.
        query_cams, gallery_cams: (Q,) and (G,) int camera ids.
        cmc_at: the ranks r of the CMC.
        junk_ids: identities that are always ignored.
        chunk_size: queries per vectorised chunk (memory chunk_size x n).

    Returns:
        dict with "Rank-r" for each r, "mAP", "mINP" (floats in [0, 1]), "queries", "queries_without_positive".

    Example:
        >>> import torch
        >>> from icfrr_fast.metrics import evaluate_reid
        >>> m = evaluate_reid(torch.tensor([[0, 1, 2, 3]]), torch.tensor([7]), torch.tensor([7, 7, 5, 7]),
        ...                   torch.tensor([0]), torch.tensor([0, 1, 1, 2]))  # item 0: same camera, ignored
        >>> m["Rank-1"], round(m["mAP"], 4), round(m["mINP"], 4)
        (1.0, 0.8333, 0.6667)
    """
    _check_rank_list(indices, gallery_ids.shape[0] if isinstance(gallery_ids, Tensor) else None)
    for name, t, n in (("query_ids", query_ids, indices.shape[0]), ("gallery_ids", gallery_ids, None),
                       ("query_cams", query_cams, indices.shape[0]), ("gallery_cams", gallery_cams, None)):
        _check_labels(name, t)
        if n is not None and t.shape[0] != n:
            raise ValueError(f"{name} must have one entry per row of indices ({n}); got {t.shape[0]}")
    if gallery_cams.shape[0] != gallery_ids.shape[0]:
        raise ValueError(f"gallery_cams must have one entry per gallery item ({gallery_ids.shape[0]}); got "
                         f"{gallery_cams.shape[0]}")
    _check_cutoffs("cmc_at", cmc_at)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
    dev = indices.device
    gid, gcam = gallery_ids.to(dev), gallery_cams.to(dev)
    qid, qcam = query_ids.to(dev), query_cams.to(dev)
    junk_t = torch.as_tensor(list(junk_ids), dtype=gid.dtype, device=dev)
    # positives in the whole gallery: same identity, another camera (counted per (identity, camera) pair)
    pair = gid.to(torch.int64) * (int(gcam.max()) + 2 if gcam.numel() else 1) + gcam.to(torch.int64)
    uid, cid = torch.unique(gid, return_counts=True)
    upair, cpair = torch.unique(pair, return_counts=True)
    sums: Dict[str, float] = {}
    valid_total = 0
    Q = indices.shape[0]
    for start in range(0, Q, chunk_size):
        sl = slice(start, min(Q, start + chunk_size))
        idx = indices[sl].long()
        same_id = gid[idx] == qid[sl, None]
        same_cam = gcam[idx] == qcam[sl, None]
        junk = (same_id & same_cam) | torch.isin(gid[idx], junk_t)
        rel = same_id & ~same_cam
        n_id = _count_of(uid, cid, qid[sl])
        qpair = qid[sl].to(torch.int64) * (int(gcam.max()) + 2 if gcam.numel() else 1) + qcam[sl].to(torch.int64)
        n_pos = n_id - _count_of(upair, cpair, qpair)
        n_pos = torch.where(torch.isin(qid[sl], junk_t), torch.zeros_like(n_pos), n_pos)
        ok = n_pos > 0
        _accumulate(sums, _protocol_chunk(rel, junk, n_pos, "non_interpolated", cmc_at, ()), ok)
        valid_total += int(ok.sum())
    names = {f"Rank-{r}": f"CMC@{r}" for r in cmc_at}
    names.update({"mAP": "AP", "mINP": "INP"})
    return _means(sums, valid_total, Q, names)


def _count_of(keys: Tensor, counts: Tensor, query: Tensor) -> Tensor:
    """counts[keys == query] for each query (0 where absent); keys sorted ascending."""
    if keys.numel() == 0:
        return torch.zeros(query.shape, dtype=torch.int64, device=query.device)
    pos = torch.searchsorted(keys, query.to(keys.dtype)).clamp(max=keys.numel() - 1)
    return torch.where(keys[pos] == query.to(keys.dtype), counts[pos], 0)


def evaluate_revisited(
    indices: Tensor,
    gnd: Sequence[Dict[str, Sequence[int]]],
    *,
    setups: Sequence[str] = ("easy", "medium", "hard"),
    precision_at: Sequence[int] = (1, 5, 10),
    ap: str = "trapezoid",
    chunk_size: int = 1024,
) -> Dict[str, float]:
    """Revisited Oxford / Paris protocol (Radenovic et al., CVPR 2018): mAP and mP@k per setup.

    ``gnd[q]`` holds query q's gallery ids under "easy", "hard" and "junk" (the ``gnd`` of the protocol's
    ``gnd_roxford5k.pkl``). Setups: easy (positives easy; ignored junk + hard), medium (easy + hard; junk), hard
    (hard; junk + easy). Ignored items are removed from each ranked list before scoring. AP as the protocol's own
    evaluation computes it (``ap="trapezoid"``: each positive contributes the mean of the precision just before and
    at its rank, times 1 / n_pos), or the non-interpolated AP (``ap="non_interpolated"``, scikit-learn's). Queries
    without a positive in a setup are excluded from its means.

    Args:
        indices: (Q, n) int gallery ids, best first.
        gnd: Q dicts with int lists "easy", "hard", "junk" (missing keys = empty).
        setups: any of "easy", "medium", "hard".
        precision_at: the k of each mP@k.
        ap: "trapezoid" (the protocol's) or "non_interpolated".
        chunk_size: queries per vectorised chunk.

    Returns:
        dict with "<setup>/mAP", "<setup>/mP@k", "<setup>/queries", "<setup>/queries_without_positive".

    Example:
        >>> import torch
        >>> from icfrr_fast.metrics import evaluate_revisited
        >>> m = evaluate_revisited(torch.tensor([[3, 0, 1, 2]]), [{"easy": [0], "hard": [2], "junk": [3]}],
        ...                        setups=("medium",), precision_at=(2,))
        >>> round(m["medium/mAP"], 4), m["medium/mP@2"]  # hits at ranks 1 and 3: (1 + (1/2 + 2/3) / 2) / 2
        (0.7917, 0.5)
    """
    _check_rank_list(indices, None)
    if not isinstance(gnd, Sequence) or len(gnd) != indices.shape[0]:
        raise ValueError(f"gnd must be a sequence of one dict per row of indices ({indices.shape[0]}); got "
                         f"{type(gnd).__name__} of length {len(gnd) if hasattr(gnd, '__len__') else '?'}")
    for s in setups:
        if s not in REVISITED_SETUPS:
            raise ValueError(f"setups must hold names in {tuple(REVISITED_SETUPS)}; got {s!r}")
    _check_cutoffs("precision_at", precision_at)
    if ap not in PROTOCOL_AP:
        raise ValueError(f"ap must be one of {PROTOCOL_AP}; got {ap!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
    dev = indices.device
    Q = indices.shape[0]
    span = int(indices.max()) + 1 if indices.numel() else 1
    out: Dict[str, float] = {}
    for setup in setups:
        pos_keys, junk_keys = REVISITED_SETUPS[setup]
        sums: Dict[str, float] = {}
        valid_total = 0
        for start in range(0, Q, chunk_size):
            stop = min(Q, start + chunk_size)
            idx = indices[start:stop].long()
            rows = torch.arange(stop - start, device=dev)[:, None]

            def keyset(names) -> Tuple[Tensor, Tensor]:
                ids = [sorted({int(i) for n in names for i in gnd[q].get(n, ())}) for q in range(start, stop)]
                flat = torch.tensor([r * span + i for r, lst in enumerate(ids) for i in lst if i < span],
                                    dtype=torch.int64, device=dev)
                return flat.sort().values, torch.tensor([len(lst) for lst in ids], dtype=torch.int64, device=dev)

            pos_sorted, n_pos = keyset(pos_keys)
            junk_sorted, _ = keyset(junk_keys)
            key = rows * span + idx
            rel = torch.isin(key, pos_sorted)
            junk = torch.isin(key, junk_sorted) & ~rel
            ok = n_pos > 0
            _accumulate(sums, _protocol_chunk(rel, junk, n_pos, ap, (), precision_at), ok)
            valid_total += int(ok.sum())
        names = {"mAP": "AP"}
        names.update({f"mP@{k}": f"P@{k}" for k in precision_at})
        out.update({f"{setup}/{n}": v for n, v in _means(sums, valid_total, Q, names).items()})
    return out


__all__ += ["evaluate_reid", "evaluate_revisited", "REVISITED_SETUPS"]
