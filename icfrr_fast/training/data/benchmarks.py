"""Benchmarks of zero-shot / universal cross-domain retrieval -> training, query and gallery image records.

``build_splits(data_cfg)`` returns :class:`RetrievalSplits`. Layouts (details and examples in icfrr_fast/training/README.md):

* ``sketchy_25`` / ``sketchy_21`` (Sketchy-Extended), ``tuberlin_30`` (TU-Berlin-Extended), ``quickdraw``
  (QuickDraw-Extended): the common file lists (``layout: filelist``, default; :mod:`.file_lists`) in a split folder
  of ``root`` -- Sketchy ``zeroshot1`` (25 unseen classes, random split of Shen et al., CVPR 2018) and ``zeroshot0``
  (21 unseen classes not in ImageNet, Yelamarthi et al., ECCV 2018), TU-Berlin ``zeroshot`` (30 unseen), QuickDraw
  ``zeroshot`` (30 unseen, Dey et al., CVPR 2019) -- or folders (``layout: folders``:
  ``<root>/{sketch,photo}/<class>/<image>`` with ``unseen_classes``; sketchy_21 knows its 21 classes).
* ``office_home``: ``<root>/{Art,Clipart,Product,Real World}/<class>/<image>``; one query and one gallery domain
  (default Clipart -> Real World), unseen classes from ``unseen_classes`` or ``num_unseen`` drawn with
  ``split_seed``.
* ``domainnet``: ``<root>/{clipart,infograph,painting,quickdraw,real,sketch}/<class>/<image>`` under the universal
  cross-domain protocol (Paul et al., ICCV 2021): the query domain is held out of training, training uses the seen
  classes of the other domains, the gallery is the ``real`` domain with the unseen classes (``gallery: unseen``) or
  all classes (``gallery: seen+unseen``). With ``layout: filelist`` the official ``<domain>_{train,test}.txt`` lists
  are used and seen-class gallery images come from ``real_test.txt`` only.
* ``folders``: any ``<root>/<domain>/<class>/<image>`` tree.
* ``skimage_toy``: the generated toy set (:mod:`.toyset`).
* ``emoji``: the emoji line-art -> colour set shipped with the package, seen/unseen subgroups (:mod:`.emoji`).

With no unseen classes (folder layouts), ``holdout_fraction`` of each class's images are held out for evaluation
instead (not zero-shot; what the smoke config does). Missing files or folders raise ``FileNotFoundError`` and a
wrong layout ``ValueError``, each saying what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..class_embeddings import normalize_class_name
from .file_lists import read_class_ids, read_file_list
from .folders import list_domains, scan_domain
from .image_list import ImageRecords

__all__ = ["RetrievalSplits", "build_splits", "BENCHMARKS", "SKETCHY_21_UNSEEN"]

#: The 21 Sketchy classes absent from ImageNet-1k (Yelamarthi et al., ECCV 2018), the "Sketchy-21" test split.
SKETCHY_21_UNSEEN = ("bat", "cabin", "cow", "dolphin", "door", "giraffe", "helicopter", "mouse", "pear", "raccoon",
                     "rhinoceros", "saw", "scissors", "seagull", "skyscraper", "songbird", "sword", "tree",
                     "wheelchair", "windmill", "window")

OFFICE_HOME_DOMAINS = ("Art", "Clipart", "Product", "Real World")
DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")


@dataclass
class RetrievalSplits:
    """What training and evaluation need.

    Attributes:
        train: seen-class images of the training domains (labels index ``train.classes``).
        query: evaluation queries (labels index ``query.classes``, shared with ``gallery``).
        gallery: evaluation gallery.
        query_domain: index of the query domain in ``train.domain_names`` (None when it is held out of training).
        description: one line for the log.
    """

    train: ImageRecords
    query: ImageRecords
    gallery: ImageRecords
    query_domain: Optional[int]
    description: str


# ----------------------------------------------------------------------------------------------------------------
# file-list benchmarks

_FILELISTS = {
    #            split dir    sketch list pattern                           photo list pattern
    "sketchy_25": ("zeroshot1", "sketch_tx_000000000000_ready_filelist_{}.txt", "all_photo_filelist_{}.txt"),
    "sketchy_21": ("zeroshot0", "sketch_tx_000000000000_ready_filelist_{}.txt", "all_photo_filelist_{}.txt"),
    "tuberlin_30": ("zeroshot", "png_ready_filelist_{}.txt", "ImageResized_ready_filelist_{}.txt"),
    "quickdraw": ("zeroshot", "sketch_{}.txt", "all_photo_{}.txt"),
}


def _records_from_lists(name: str, root: Path, lists: Sequence[Tuple[str, Path]], class_file: Path) -> ImageRecords:
    """Records of several (domain, list file) pairs whose ids index ``class_file`` (re-indexed to 0..C-1)."""
    ids = read_class_ids(class_file)
    order = sorted(ids)
    remap = {cid: k for k, cid in enumerate(order)}
    paths, labels, domains = [], [], []
    domain_names = [d for d, _ in lists]
    for k, (_, lst) in enumerate(lists):
        p, c = read_file_list(lst, root)
        unknown = sorted(set(c) - set(remap))
        if unknown:
            raise ValueError(f"{lst}: class ids {unknown[:5]} are not in {class_file}")
        paths += p
        labels += [remap[i] for i in c]
        domains += [k] * len(p)
    return ImageRecords(paths, labels, domains, [ids[i] for i in order], domain_names, name)


def _filelist_splits(benchmark: str, cfg) -> RetrievalSplits:
    root = Path(cfg.root)
    default_dir, sketch_pat, photo_pat = _FILELISTS[benchmark]
    split = root / (cfg.split_dir or default_dir)
    if not split.is_dir():
        raise FileNotFoundError(f"{benchmark}: split folder not found: {split} (expected the file lists "
                                f"cname_cid.txt, cname_cid_zero.txt, {sketch_pat.format('train|zero')}, "
                                f"{photo_pat.format('train|zero')}; or set data.layout: folders)")
    train = _records_from_lists(f"{benchmark}/train", root, [("sketch", split / sketch_pat.format("train")),
                                                             ("photo", split / photo_pat.format("train"))],
                                split / "cname_cid.txt")
    test = [("sketch", split / sketch_pat.format("zero")), ("photo", split / photo_pat.format("zero"))]
    query = _records_from_lists(f"{benchmark}/query", root, test[:1], split / "cname_cid_zero.txt")
    gallery = _records_from_lists(f"{benchmark}/gallery", root, test[1:], split / "cname_cid_zero.txt")
    query.domain_names = gallery.domain_names = ["sketch", "photo"]
    gallery.domains = [1] * len(gallery)
    overlap = {normalize_class_name(c) for c in train.classes} & {normalize_class_name(c) for c in query.classes}
    if overlap:
        raise ValueError(f"{benchmark}: {len(overlap)} classes are both training and test classes "
                         f"(e.g. {sorted(overlap)[:3]}); check {split}")
    return RetrievalSplits(train, query, gallery, 0, f"{benchmark} (file lists in {split}): {len(train.classes)} "
                           f"seen / {len(query.classes)} unseen classes")


# ----------------------------------------------------------------------------------------------------------------
# folder benchmarks

def _read_unseen(cfg, all_classes: Sequence[str], default: Sequence[str] = ()) -> List[str]:
    """Unseen class names: ``unseen_classes`` (names, or one file of names), else ``num_unseen`` random, else
    ``default``. Names are matched to folder names (case, ``_``, ``-`` and spaces ignored)."""
    names: List[str] = list(cfg.unseen_classes or [])
    if len(names) == 1 and Path(names[0]).is_file():
        lines = [ln.strip() for ln in Path(names[0]).read_text(encoding="utf-8").splitlines() if ln.strip()]
        # accept cname_cid-style "<name> <id>" lines too
        names = [ln.rpartition(" ")[0] if ln.rpartition(" ")[2].isdigit() and " " in ln else ln for ln in lines]
    elif len(names) == 1 and ("/" in names[0] or names[0].endswith(".txt")):
        raise FileNotFoundError(f"data.unseen_classes file not found: {names[0]}")
    if not names and cfg.num_unseen:
        if cfg.num_unseen >= len(all_classes):
            raise ValueError(f"data.num_unseen must be < the {len(all_classes)} classes; got {cfg.num_unseen}")
        g = torch.Generator().manual_seed(cfg.split_seed)
        pick = torch.randperm(len(all_classes), generator=g)[:cfg.num_unseen].tolist()
        return sorted(all_classes[i] for i in pick)
    if not names:
        names = list(default)
    table = {normalize_class_name(c): c for c in all_classes}
    unknown = [n for n in names if normalize_class_name(n) not in table]
    if unknown:
        raise ValueError(f"data.unseen_classes: {len(unknown)} names match no class folder: {', '.join(unknown[:8])} "
                         f"(classes are e.g. {', '.join(list(all_classes)[:5])})")
    return sorted({table[normalize_class_name(n)] for n in names})


def _resolve_domain(root: Path, name: str, available: Sequence[str], key: str) -> str:
    table = {normalize_class_name(d): d for d in available}
    hit = table.get(normalize_class_name(name))
    if hit is None:
        raise FileNotFoundError(f"data.{key}: no folder {root / name} (domains found in {root}: "
                                f"{', '.join(available) or 'none'})")
    return hit


def _holdout(paths: List[str], fraction: float, seed: int, key: str) -> Tuple[List[str], List[str]]:
    """(train, held-out) split of one class's images, deterministic in ``seed`` and ``key``."""
    n_out = round(len(paths) * fraction)
    if fraction > 0 and len(paths) >= 2:
        n_out = min(max(n_out, 1), len(paths) - 1)
    g = torch.Generator().manual_seed(seed * 7919 + sum(map(ord, key)))
    perm = torch.randperm(len(paths), generator=g).tolist()
    out = set(perm[:n_out])
    return [p for i, p in enumerate(paths) if i not in out], [p for i, p in enumerate(paths) if i in out]


def _folder_splits(name: str, cfg, *, query_domain: str, gallery_domain: str, train_domains: Sequence[str],
                   default_unseen: Sequence[str] = (), gallery_mode: str = "unseen") -> RetrievalSplits:
    root = Path(cfg.root)
    available = list_domains(root)
    q = _resolve_domain(root, query_domain, available, "query_domain")
    gdom = _resolve_domain(root, gallery_domain, available, "gallery_domain")
    tdoms = [_resolve_domain(root, d, available, "train_domains") for d in train_domains]
    scans = {d: scan_domain(root / d) for d in dict.fromkeys(tdoms + [q, gdom])}
    all_classes = sorted(set().union(*[set(s) for s in scans.values()]))
    unseen = _read_unseen(cfg, all_classes, default_unseen)
    for d in (q, gdom):
        missing = [c for c in unseen if c not in scans[d]]
        if missing:
            raise ValueError(f"{name}: unseen classes without images in {root / d}: {', '.join(missing[:8])}")
    seen = [c for c in all_classes if c not in set(unseen)]
    holdout = not unseen
    if holdout and cfg.holdout_fraction <= 0:
        raise ValueError(f"{name}: no unseen classes (data.unseen_classes / data.num_unseen) and "
                         f"data.holdout_fraction = 0: nothing to evaluate on")
    seen_index = {c: k for k, c in enumerate(seen)}
    paths, labels, domains = [], [], []
    held: Dict[str, Dict[str, List[str]]] = {q: {}, gdom: {}}
    for k, d in enumerate(tdoms):
        for c in seen:
            files = scans[d].get(c, [])
            if holdout and d in held:
                files, held[d][c] = _holdout(files, cfg.holdout_fraction, cfg.split_seed, f"{d}/{c}")
            paths += files
            labels += [seen_index[c]] * len(files)
            domains += [k] * len(files)
    if not paths:
        raise ValueError(f"{name}: no training images (training domains {tdoms}, {len(seen)} seen classes)")
    train = ImageRecords(paths, labels, domains, seen, tdoms, f"{name}/train")
    if holdout:
        eval_classes = seen
        q_files = {c: held[q].get(c) or [] for c in seen}
        g_files = {c: held[gdom].get(c) or [] for c in seen}
        if q not in tdoms:
            q_files = scans[q]
        if gdom not in tdoms:
            g_files = scans[gdom]
    else:
        eval_classes = sorted(unseen) if gallery_mode == "unseen" else all_classes
        q_files = {c: scans[q][c] for c in unseen}
        g_files = {c: scans[gdom].get(c, []) for c in eval_classes}
    eval_index = {c: k for k, c in enumerate(eval_classes)}
    dn = [q, gdom]

    def records(files: Dict[str, List[str]], dom: int, part: str) -> ImageRecords:
        ps = [p for c in eval_classes for p in files.get(c, [])]
        ls = [eval_index[c] for c in eval_classes for _ in files.get(c, [])]
        return ImageRecords(ps, ls, [dom] * len(ps), list(eval_classes), dn, f"{name}/{part}")

    query, gallery = records(q_files, 0, "query"), records(g_files, 1, "gallery")
    qd = tdoms.index(q) if q in tdoms else None
    kind = "held-out images of seen classes" if holdout else f"{len(unseen)} unseen classes"
    return RetrievalSplits(train, query, gallery, qd, f"{name} (folders in {root}): train on {len(seen)} classes of "
                           f"{', '.join(tdoms)}; evaluate {q} -> {gdom} on {kind}")


def _sketch_photo(benchmark: str, default_unseen: Sequence[str] = ()):
    def build(cfg) -> RetrievalSplits:
        layout = cfg.layout or "filelist"
        if layout == "filelist":
            return _filelist_splits(benchmark, cfg)
        q, g = cfg.query_domain or "sketch", cfg.gallery_domain or "photo"
        if not cfg.unseen_classes and not cfg.num_unseen and not default_unseen:
            raise ValueError(f"{benchmark} with data.layout: folders needs data.unseen_classes (a file with one "
                             f"class per line) or data.num_unseen")
        return _folder_splits(benchmark, cfg, query_domain=q, gallery_domain=g,
                              train_domains=cfg.train_domains or [q, g], default_unseen=default_unseen)

    return build


def _office_home(cfg) -> RetrievalSplits:
    if cfg.layout == "filelist":
        raise ValueError("office_home has no file-list layout; use data.layout: folders")
    q, g = cfg.query_domain or "Clipart", cfg.gallery_domain or "Real World"
    return _folder_splits("office_home", cfg, query_domain=q, gallery_domain=g,
                          train_domains=cfg.train_domains or [q, g])


def _domainnet(cfg) -> RetrievalSplits:
    q, g = cfg.query_domain or "sketch", cfg.gallery_domain or "real"
    if normalize_class_name(q) == normalize_class_name(g):
        raise ValueError(f"data.query_domain and data.gallery_domain must differ; both are {q!r}")
    train_domains = cfg.train_domains or [d for d in DOMAINNET_DOMAINS if d != q]
    if q in train_domains:
        raise ValueError(f"domainnet (universal protocol): the query domain {q!r} must be held out of "
                         f"data.train_domains")
    if not cfg.unseen_classes and not cfg.num_unseen:
        raise ValueError("domainnet needs data.unseen_classes (a file with one class per line, e.g. the universal "
                         "protocol's test classes) or data.num_unseen")
    if (cfg.layout or "folders") == "folders":
        return _folder_splits("domainnet", cfg, query_domain=q, gallery_domain=g, train_domains=train_domains,
                              gallery_mode=cfg.gallery)
    return _domainnet_lists(cfg, q, g, train_domains)


def _domainnet_lists(cfg, q: str, g: str, train_domains: Sequence[str]) -> RetrievalSplits:
    """DomainNet from its official ``<domain>_{train,test}.txt`` lists (``<domain>/<class>/<file> <id>``)."""
    root = Path(cfg.root)

    def read(domain: str, part: str) -> Dict[str, List[str]]:
        paths, _ = read_file_list(root / f"{domain}_{part}.txt", root)
        out: Dict[str, List[str]] = {}
        for p in paths:
            out.setdefault(Path(p).parent.name, []).append(p)
        return out

    tr = {d: read(d, "train") for d in train_domains}
    te = {d: read(d, "test") for d in dict.fromkeys([q, g])}
    qtrain = read(q, "train")
    all_classes = sorted(set().union(*[set(v) for v in list(tr.values()) + list(te.values())]))
    unseen = _read_unseen(cfg, all_classes)
    seen = [c for c in all_classes if c not in set(unseen)]
    si = {c: k for k, c in enumerate(seen)}
    paths, labels, domains = [], [], []
    for k, d in enumerate(train_domains):
        for c in seen:
            fs = tr[d].get(c, [])
            paths += fs
            labels += [si[c]] * len(fs)
            domains += [k] * len(fs)
    train = ImageRecords(paths, labels, domains, seen, list(train_domains), "domainnet/train")
    eval_classes = sorted(unseen) if cfg.gallery == "unseen" else all_classes
    ei = {c: k for k, c in enumerate(eval_classes)}
    q_files = {c: qtrain.get(c, []) + te[q].get(c, []) for c in unseen}
    g_files = {c: (tr.get(g, {}).get(c, []) if c in set(unseen) else []) + te[g].get(c, []) for c in eval_classes}

    def records(files, dom, part):
        ps = [p for c in eval_classes for p in files.get(c, [])]
        return ImageRecords(ps, [ei[c] for c in eval_classes for _ in files.get(c, [])], [dom] * len(ps),
                            list(eval_classes), [q, g], f"domainnet/{part}")

    return RetrievalSplits(train, records(q_files, 0, "query"), records(g_files, 1, "gallery"), None,
                           f"domainnet (official lists in {root}): {len(seen)} seen / {len(unseen)} unseen classes, "
                           f"{q} -> {g}, gallery {cfg.gallery}")


def _folders(cfg) -> RetrievalSplits:
    if not cfg.query_domain or not cfg.gallery_domain:
        raise ValueError("the folders benchmark needs data.query_domain and data.gallery_domain (sub-folders of "
                         "data.root)")
    return _folder_splits("folders", cfg, query_domain=cfg.query_domain, gallery_domain=cfg.gallery_domain,
                          train_domains=cfg.train_domains or [cfg.query_domain, cfg.gallery_domain])


def _skimage_toy(cfg) -> RetrievalSplits:
    from .toyset import make_toyset

    make_toyset(cfg.root, num_classes=cfg.toy_classes, per_class=cfg.toy_per_class, image_size=cfg.toy_image_size,
                seed=cfg.split_seed)
    return _folder_splits("skimage_toy", cfg, query_domain=cfg.query_domain or "sketch",
                          gallery_domain=cfg.gallery_domain or "photo",
                          train_domains=cfg.train_domains or ["sketch", "photo"])


def _emoji(cfg) -> RetrievalSplits:
    from .emoji import emoji_splits

    return emoji_splits(cfg)


#: benchmarks whose images are generated or exported into data.root (the folder may not exist yet)
GENERATED = ("skimage_toy", "emoji")

BENCHMARKS: Dict[str, Callable] = {
    "sketchy_25": _sketch_photo("sketchy_25"),
    "sketchy_21": _sketch_photo("sketchy_21", SKETCHY_21_UNSEEN),
    "tuberlin_30": _sketch_photo("tuberlin_30"),
    "quickdraw": _sketch_photo("quickdraw"),
    "office_home": _office_home,
    "domainnet": _domainnet,
    "folders": _folders,
    "skimage_toy": _skimage_toy,
    "emoji": _emoji,
}


def _stride(rec: ImageRecords, step: int) -> ImageRecords:
    return rec if step == 1 else rec.subset(range(0, len(rec), step))


def build_splits(cfg, check_files: bool = True) -> RetrievalSplits:
    """Training/query/gallery records of ``cfg.benchmark`` (a :class:`~icfrr_fast.training.config.DataConfig`).

    Raises:
        ValueError: unknown benchmark, wrong layout, bad class lists.
        FileNotFoundError: missing folders, lists or listed images.
    """
    if cfg.benchmark not in BENCHMARKS:
        raise ValueError(f"data.benchmark must be one of {', '.join(BENCHMARKS)}; got {cfg.benchmark!r}")
    if cfg.benchmark in GENERATED and not cfg.root:
        raise ValueError(f"data.root is required: the folder the {cfg.benchmark} images are written to")
    if not Path(cfg.root).is_dir() and cfg.benchmark not in GENERATED:
        raise FileNotFoundError(f"data.root not found: {cfg.root} (the {cfg.benchmark} dataset folder)")
    splits = BENCHMARKS[cfg.benchmark](cfg)
    splits.query = _stride(splits.query, cfg.query_stride)
    splits.gallery = _stride(splits.gallery, cfg.gallery_stride)
    for part in ("query", "gallery"):
        if not len(getattr(splits, part)):
            raise ValueError(f"{cfg.benchmark}: the evaluation {part} set is empty")
    if check_files:
        for rec in (splits.train, splits.query, splits.gallery):
            rec.check_files()
    return splits
