"""The demo's experiment: embed the emoji data, rank, re-rank with ICFRR (both semantics) and ClusterRetri, measure.

Everything the report and the printed table show comes out of :func:`run_experiment` as one :class:`DemoResult`, so
the numbers in the table, the JSON and the plot are the same objects.

Retrieval setting (the published one, docs/design.md §2): features are L2-normalised, query-gallery scores are Euclidean
distances (ranked smallest first), and the gallery graph holds each item's K_g nearest other items by Euclidean
distance. Labels are the Unicode emoji group (``level="group"``, the category-level task) unless told otherwise.
The ICFRR runs go through :class:`icfrr_fast.ICFRRIndex` (fused k-NN graph, fused scores and re-ranking), the way a
user would call the package; the timing compares the fused re-ranking with ``icfrr_fast.reference`` on identical
inputs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor

from .. import metrics, reference, rerankers
from ..cluster_retrieve import cluster_retrieve
from ..index import ICFRRIndex
from ..rerank import icfrr
from .._checks import check_gallery_size
from .backbone import EfficientNetLite0, FeatureCache
from .emoji import LEVELS, EmojiDataset, load_emoji

__all__ = ["DemoConfig", "DemoResult", "run_experiment", "build_index", "compare_features", "METHODS"]

#: method key -> label used in the table, the plot and the report
METHODS = {
    "none": "no re-ranking",
    "icfrr_reference": "ICFRR (reference)",
    "icfrr_paper": "ICFRR (paper)",
    "cluster_retri": "ClusterRetri",
}
METRIC_NAMES = ("mAP@all", "mAP@200", "P@100", "P@200")
SPLITS = ("all", "unseen")


@dataclass
class DemoConfig:
    """Settings of one demo run (the command's options).

    Attributes:
        k_g, k_q, beta, iters: ICFRR settings (package defaults); k_g and k_q are clipped to the data only if needed.
        queries: number of queries (a seeded random subset), None = all.
        gallery: number of gallery items (a seeded random subset), None = all.
        split: "all" items, or only the "unseen" subgroups (the zero-shot test classes).
        level: label level for relevance, "group" or "subgroup".
        input_size: side the 64 px images are resized to for the network.
        cache_dir: feature cache folder, None = no cache.
        clusters: ClusterRetri's K (default: the number of classes in the gallery, as in its paper).
        subspaces: ClusterRetri's M.
        fusion: ClusterRetri's lambda.
        report_queries: queries shown in the report.
        timing_repeats: runs of the fast path per timing (the median is reported; the reference runs once).
        timing_queries: queries on which the re-ranking is timed (the reference is slow; all queries are ranked).
        seed: seed of the subsets, the report's query choice and k-means.
    """

    k_g: int = 256
    k_q: int = 250
    beta: float = 0.5
    iters: int = 5
    queries: Optional[int] = None
    gallery: Optional[int] = None
    split: str = "all"
    level: str = "group"
    input_size: int = 128
    cache_dir: Optional[str] = None
    clusters: Optional[int] = None
    subspaces: int = 1
    fusion: float = 0.0
    report_queries: int = 6
    timing_repeats: int = 3
    timing_queries: int = 50
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError/TypeError naming the option that is out of range."""
        ints = {"k_g": (self.k_g, 1), "k_q": (self.k_q, 1), "iters": (self.iters, 0), "subspaces": (self.subspaces, 1),
                "report_queries": (self.report_queries, 0), "timing_repeats": (self.timing_repeats, 1),
                "timing_queries": (self.timing_queries, 1),
                "input_size": (self.input_size, 32), "seed": (self.seed, 0)}
        for name in ("queries", "gallery", "clusters"):
            if getattr(self, name) is not None:
                ints[name] = (getattr(self, name), 1)
        for name, (v, lo) in ints.items():
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int; got {type(v).__name__}")
            if v < lo:
                raise ValueError(f"{name} must be >= {lo}; got {v}")
        for name, v in (("beta", self.beta), ("fusion", self.fusion)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{name} must be a number; got {type(v).__name__}")
        if not (np.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be finite and >= 0; got {self.beta}")
        if not 0.0 <= self.fusion <= 1.0:
            raise ValueError(f"fusion must be in [0, 1]; got {self.fusion}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {self.split!r}")
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}; got {self.level!r}")


@dataclass
class DemoResult:
    """What one demo run measured (all plain Python / tensors; ``to_json`` gives the JSON written beside the report).

    Attributes:
        config: the settings, after clipping (``notes`` says what was clipped).
        metrics: method key -> list of metric dicts; ICFRR methods have one per iteration (index 0 = initial
            ranking), the others a single entry.
        timings: seconds per stage and provider, plus speed-up ratios.
        notes: human-readable remarks (clipping, subsets, cache hits, agreement of fast and reference rankings).
        query_ids, gallery_ids: the dataset items used, in order.
        query_labels, gallery_labels: (Q,), (G,) int64 labels at ``config.level``.
        rankings: method key -> (Q, 10) int64 top-10 gallery positions (final iteration for ICFRR).
        average_precision: method key -> (Q,) float64 AP of each query's full final ranking.
        per_class: class name -> {"queries", "gallery" (item counts), method key -> mAP@all of its queries}.
        report_queries: positions (into query_ids) of the queries the report shows.
    """

    config: DemoConfig
    metrics: Dict[str, List[Dict[str, float]]]
    timings: Dict[str, float]
    notes: List[str]
    query_ids: np.ndarray
    gallery_ids: np.ndarray
    query_labels: Tensor
    gallery_labels: Tensor
    rankings: Dict[str, Tensor]
    average_precision: Dict[str, Tensor]
    per_class: Dict[str, Dict[str, float]]
    report_queries: List[int]
    dataset: EmojiDataset = field(repr=False)
    class_names: tuple = ()
    backbone: Dict[str, str] = field(default_factory=dict)
    comparison: Dict[str, Dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "config": asdict(self.config),
            "methods": dict(METHODS),
            "metrics": self.metrics,
            "per_class_map_all": self.per_class,
            "timings": self.timings,
            "notes": self.notes,
            "queries": len(self.query_ids),
            "gallery": len(self.gallery_ids),
            "classes": list(self.class_names),
            "report_queries": [int(self.query_ids[i]) for i in self.report_queries],
            "backbone": self.backbone,
            "comparison": self.comparison,
            "dataset": {k: self.dataset.metadata[k] for k in ("file", "sha256", "built", "items", "image_size")},
        }


def build_index(gallery: Tensor, k_g: int) -> ICFRRIndex:
    """The faiss-style ICFRR index of the gallery: its graph holds each item's k_g nearest other items by Euclidean
    distance (self excluded by index), built with the fused k-NN kernel, never a G x G matrix.

    Args:
        gallery: (G, D) float32 L2-normalised features.
        k_g: neighbours per item, in [1, G - 1].
    """
    return ICFRRIndex(gallery, k_g=k_g, metric="l2")


def _timed(fn: Callable[[], object], repeats: int, warmup: int = 0):
    """(median seconds over ``repeats`` runs after ``warmup`` untimed ones, the last result)."""
    for _ in range(warmup):
        fn()
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def _pick_report_queries(labels: Tensor, n: int, seed: int) -> List[int]:
    """Up to n query positions: one seeded random query per class in turn (classes in label order), so the report
    covers several classes without choosing queries by how well any method does on them."""
    if n == 0:
        return []
    rng = np.random.default_rng(seed + 1)
    lab = labels.numpy()
    per_class = [list(rng.permutation(np.flatnonzero(lab == c))) for c in np.unique(lab)]
    picks: List[int] = []
    while len(picks) < min(n, len(lab)):
        for members in per_class:
            if members and len(picks) < n:
                picks.append(int(members.pop(0)))
    return picks


#: the comparison table's rows (the paper's comparison): method key -> label
COMPARED = {
    "none": "no re-ranking",
    "superglobal": "SuperGlobal (M=400, K=9, beta=0.15)",
    "aqe": "AQE (top 5)",
    "alpha_qe": "alpha-QE (top 5, alpha 3)",
    "dba": "DBA (top 5)",
    "ecn": "ECN (t=3, q=8, top 100)",
    "k_reciprocal": "k-reciprocal (k1=20, k2=6, lambda=0.3)",
    "cluster_retri": "ClusterRetri",
    "icfrr": "ICFRR (reference semantics)",
}


def _complete(ids: Tensor, base: Tensor) -> Tensor:
    """Each row of ``ids`` (Q, L) followed by the rest of ``base`` (Q, G) in its order: a full ranking from a
    re-ranked shortlist (the items beyond it keep their initial order, as the shortlist methods define)."""
    Q, G = base.shape
    seen = torch.zeros((Q, G), dtype=torch.bool)
    seen.scatter_(1, ids, True)
    rest = base[~torch.gather(seen, 1, base)].view(Q, G - ids.shape[1])
    return torch.cat([ids, rest], dim=1)


def compare_rerankers(q_feat: Tensor, g_feat: Tensor, q_lab: Tensor, g_lab: Tensor, base: Tensor,
                      index: ICFRRIndex, config: "DemoConfig", t_cr: float, cr_idx: Tensor, clean, ev
                      ) -> Dict[str, Dict[str, float]]:
    """Every re-ranker of ``icfrr_fast.rerankers`` beside ClusterRetri and ICFRR on the same features: the full
    ranking of every query (shortlist methods complete it with the initial order), its metrics and its time
    (one run over all queries, graph or k-NN included)."""
    G = g_feat.shape[0]
    qn = torch.nn.functional.normalize(q_feat, dim=1)
    gn = torch.nn.functional.normalize(g_feat, dim=1)
    runs = {
        "none": lambda: index.search(q_feat, G, iters=0)[1],
        "superglobal": lambda: _complete(rerankers.superglobal(qn, gn, M=min(400, G), K=9, beta=0.15)[1], base),
        "aqe": lambda: rerankers.aqe(qn, gn, top=min(5, G), k=G)[1],
        "alpha_qe": lambda: rerankers.alpha_qe(qn, gn, top=min(5, G), alpha=3.0, k=G)[1],
        "dba": lambda: rerankers.dba(qn, gn, top=min(5, G - 1), k=G)[1],
        "ecn": lambda: _complete(rerankers.ecn(q_feat, g_feat, t=min(3, G - 1), q=min(8, G - 1),
                                               depth=min(100, G))[1], base),
        "k_reciprocal": lambda: rerankers.k_reciprocal_features(q_feat, g_feat, k1=min(20, G), k2=6, k=G)[1],
        "icfrr": lambda: ICFRRIndex(g_feat, k_g=config.k_g, metric="l2").search(
            q_feat, G, k_q=config.k_q, beta=config.beta, iters=config.iters)[1],
    }
    out: Dict[str, Dict[str, float]] = {}
    for key in COMPARED:
        if key == "cluster_retri":
            seconds, ids = t_cr, cr_idx
        else:
            seconds, ids = _timed(runs[key], 1)
        out[key] = {**clean(metrics.evaluate(ids, q_lab, g_lab, **ev)), "seconds": float(seconds)}
    return out


def run_experiment(config: DemoConfig, *, dataset: Optional[EmojiDataset] = None,
                   backbone: Optional[EfficientNetLite0] = None, log: Callable[[str], None] = print,
                   progress: bool = True) -> DemoResult:
    """Run every method on the emoji data set and measure it.

    Args:
        config: the settings (validated here).
        dataset: the data (default: the shipped set).
        backbone: the feature extractor (default: EfficientNet-Lite0 at ``config.input_size``).
        log: receives progress lines.
        progress: show tqdm bars while embedding.

    Returns:
        :class:`DemoResult`.
    """
    config.validate()
    ds = load_emoji() if dataset is None else dataset
    notes: List[str] = []
    rng = np.random.default_rng(config.seed)
    pool = np.flatnonzero(ds.unseen_mask()) if config.split == "unseen" else np.arange(len(ds))
    gallery_ids = np.sort(rng.choice(pool, size=config.gallery, replace=False)) if (
        config.gallery is not None and config.gallery < len(pool)) else pool
    query_ids = np.sort(rng.choice(pool, size=config.queries, replace=False)) if (
        config.queries is not None and config.queries < len(pool)) else pool
    if config.split == "unseen":
        notes.append(f"split=unseen: only the {int(ds.subgroup_unseen.sum())} unseen subgroups ({len(pool)} emoji)")
    if len(gallery_ids) < len(pool):
        notes.append(f"gallery: a random subset of {len(gallery_ids)} of {len(pool)} items (seed {config.seed})")
    if len(query_ids) < len(pool):
        notes.append(f"queries: a random subset of {len(query_ids)} of {len(pool)} (seed {config.seed})")
    G = len(gallery_ids)
    check_gallery_size(G)

    # -- features -------------------------------------------------------------------------------------------------
    bb = EfficientNetLite0(input_size=config.input_size) if backbone is None else backbone
    cache = FeatureCache(config.cache_dir)
    t0 = time.perf_counter()
    q_feat, q_hit = cache.embed_rows(bb, ds.queries, query_ids, progress="queries (line art)" if progress else False)
    g_feat, g_hit = cache.embed_rows(bb, ds.gallery, gallery_ids, progress="gallery (colour)" if progress else False)
    t_embed = time.perf_counter() - t0
    notes.append(f"features: {bb.name}, {bb.dim}-d, input {bb.input_size} px; " + (
        "read from the cache" if q_hit and g_hit else f"computed in {t_embed:.1f} s" + (
            f" and cached in {cache.directory}" if cache.directory is not None else "")))

    labels = ds.labels(config.level)
    q_lab = torch.from_numpy(labels[query_ids])
    g_lab = torch.from_numpy(labels[gallery_ids])

    # -- clip ICFRR settings to the data, only if needed ----------------------------------------------------------
    k_g, k_q = config.k_g, config.k_q
    if k_g > G - 1:
        notes.append(f"k_g clipped from {k_g} to G - 1 = {G - 1} (the gallery has {G} items)")
        k_g = G - 1
    if k_q > G:
        notes.append(f"k_q clipped from {k_q} to G = {G}")
        k_q = G
    config = DemoConfig(**{**asdict(config), "k_g": k_g, "k_q": k_q})

    # -- rank and re-rank -----------------------------------------------------------------------------------------
    log("ranking and re-ranking ...")
    t_graph, index = _timed(lambda: build_index(g_feat, k_g), config.timing_repeats, warmup=1)
    graph = index.graph
    # every query against the whole gallery (k = G: mAP@all needs full rankings); H[:, 0] is the initial ranking
    search = dict(k=G, k_q=k_q, beta=config.beta, iters=config.iters, return_history=True)
    _, idx_ref, hist_ref = index.search(q_feat, semantics="reference", **search)
    _, idx_paper, hist_paper = index.search(q_feat, semantics="paper", **search)
    base = hist_ref[:, 0]

    # timing: the same re-ranking through icfrr_fast (fused kernel) and icfrr_fast.reference (the plain algorithm:
    # dense G x G rank matrix, per-query loop, full sorts), from the same scores and graph so that both must agree
    # exactly. The reference takes ~0.1-0.4 s per query here, so it runs on a seeded subset of the queries.
    n_t = min(config.timing_queries, len(query_ids))
    t_sel = torch.from_numpy(np.sort(np.random.default_rng(config.seed + 2).permutation(len(query_ids))[:n_t]))
    sc = torch.cdist(q_feat[t_sel], g_feat)  # (n_t, G) Euclidean distances
    kw = dict(k_g=k_g, k_q=k_q, beta=config.beta, iters=config.iters, largest=False)
    t_fast, fast_t = _timed(lambda: icfrr(sc, graph, semantics="reference", **kw), config.timing_repeats, warmup=1)
    t0 = time.perf_counter()
    _, ref_idx, _ = reference.icfrr_rerank(sc, graph.neighbors_for(k_g), k_q=k_q, beta=config.beta,
                                           iters=config.iters, semantics="reference", largest=False)
    t_ref = time.perf_counter() - t0
    same = float((ref_idx == fast_t.indices).double().mean())
    t0 = time.perf_counter()
    _, ref_neighbors = reference.knn_topk(g_feat, g_feat, k_g, metric="l2", exclude_self=True)
    t_graph_ref = time.perf_counter() - t0
    same_graph = float((ref_neighbors == graph.neighbors_for(k_g).long()).double().mean())
    notes.append(f"gallery graph: {100 * same_graph:.2f} % of neighbour entries equal the float64 reference k-NN; "
                 f"ICFRR re-ranking ({n_t} timed queries): icfrr_fast and icfrr_fast.reference agree on "
                 f"{100 * same:.2f} % of positions")

    n_classes = int(torch.unique(g_lab).numel())
    K = n_classes if config.clusters is None else config.clusters
    if K > G:
        notes.append(f"ClusterRetri K clipped from {K} to G = {G}")
        K = G
    config = DemoConfig(**{**asdict(config), "clusters": K})
    t_cr, (_, cr_idx) = _timed(lambda: cluster_retrieve(q_feat, g_feat, num_clusters=K,
                                                        num_subspaces=min(config.subspaces, g_feat.shape[1]),
                                                        fusion=config.fusion, seed=config.seed), 1)

    # -- metrics --------------------------------------------------------------------------------------------------
    ev = dict(map_at=(200,), precision_at=(100, 200))

    def clean(m: Dict[str, float]) -> Dict[str, float]:
        return {name: float(m[name]) for name in METRIC_NAMES}

    results = {
        "none": [clean(metrics.evaluate(base, q_lab, g_lab, **ev))],
        "icfrr_reference": [clean(m) for m in metrics.evaluate_history(hist_ref, q_lab, g_lab, **ev)],
        "icfrr_paper": [clean(m) for m in metrics.evaluate_history(hist_paper, q_lab, g_lab, **ev)],
        "cluster_retri": [clean(metrics.evaluate(cr_idx, q_lab, g_lab, **ev))],
    }
    timings = {
        "embed_s": t_embed,
        "graph_icfrr_fast_s": t_graph,
        "graph_reference_s": t_graph_ref,
        "rerank_queries": n_t,
        "rerank_icfrr_fast_s": t_fast,
        "rerank_reference_s": t_ref,
        "cluster_retri_s": t_cr,
        "speedup_graph": t_graph_ref / max(t_graph, 1e-9),
        "speedup_rerank": t_ref / max(t_fast, 1e-9),
        "speedup_total": (t_graph_ref + t_ref) / max(t_graph + t_fast, 1e-9),
        "threads": torch.get_num_threads(),
    }
    # per-query AP over the whole ranking (mAP@all's terms), for the report's figures and the share of queries helped
    n_pos = (g_lab[None, :] == q_lab[:, None]).sum(1)
    ap = {key: metrics.average_precision(metrics.relevance(idx, q_lab, g_lab), n_pos)
          for key, idx in (("none", base), ("icfrr_reference", idx_ref), ("icfrr_paper", idx_paper),
                           ("cluster_retri", cr_idx))}
    valid = n_pos > 0
    for key in ("icfrr_reference", "icfrr_paper", "cluster_retri"):
        d = (ap[key] - ap["none"])[valid]
        notes.append(f"{METHODS[key]}: AP up for {100 * float((d > 0).double().mean()):.1f} % of queries, down for "
                     f"{100 * float((d < 0).double().mean()):.1f} %")
    per_class = {}
    for c in torch.unique(q_lab).tolist():
        m = (q_lab == c) & valid
        if bool(m.any()):
            per_class[ds.class_names(config.level)[c]] = {
                "queries": int(m.sum()), "gallery": int((g_lab == c).sum()),
                **{key: float(v[m].mean()) for key, v in ap.items()}}
    comparison = compare_rerankers(q_feat, g_feat, q_lab, g_lab, base, index, config, t_cr, cr_idx, clean, ev)
    top = 10
    rankings = {"none": base[:, :top], "icfrr_reference": idx_ref[:, :top], "icfrr_paper": idx_paper[:, :top],
                "cluster_retri": cr_idx[:, :top]}
    return DemoResult(
        config=config, metrics=results, timings=timings, notes=notes, query_ids=query_ids, gallery_ids=gallery_ids,
        query_labels=q_lab, gallery_labels=g_lab, rankings=rankings, average_precision=ap, per_class=per_class,
        report_queries=_pick_report_queries(q_lab, config.report_queries, config.seed), dataset=ds,
        class_names=ds.class_names(config.level),
        backbone={"name": bb.name, "weights": str(Path(bb.weights_path).name), "weights_sha256": bb.weights_sha256,
                  "weights_kind": "fine-tuned: " + str(Path(bb.weights_path).name) if getattr(bb, "fine_tuned", False)
                  else "ImageNet weights",
                  "input_size": str(bb.input_size)},
        comparison=comparison,
    )


def compare_features(results: Dict[str, DemoResult]) -> List[Dict[str, object]]:
    """Side-by-side rows of runs that differ only in their features (e.g. ImageNet vs fine-tuned): for each run,
    the ranking before re-ranking and after the last ICFRR iteration (reference semantics).

    Args:
        results: feature label -> :class:`DemoResult`, all on the same queries, gallery and labels.

    Returns:
        dicts with "features", "method" (label), "iter" (None or the ICFRR iteration) and the metrics.

    Raises:
        ValueError: the runs used different queries, gallery items or labels.
    """
    runs = list(results.values())
    for r in runs[1:]:
        if not (np.array_equal(r.query_ids, runs[0].query_ids) and np.array_equal(r.gallery_ids, runs[0].gallery_ids)
                and r.config.level == runs[0].config.level):
            raise ValueError("results must share queries, gallery and label level to be compared")
    rows: List[Dict[str, object]] = []
    for label, r in results.items():
        for key, series in (("none", r.metrics["none"]), ("icfrr_reference", r.metrics["icfrr_reference"])):
            it = None if key == "none" else len(series) - 1
            rows.append({"features": label, "method": METHODS[key], "iter": it, **series[-1]})
    return rows
