"""The emoji line-art -> colour set shipped with the package, as a zero-shot training benchmark (``emoji``).

The images come from :func:`icfrr_fast.demo.emoji.load_emoji` (1,594 emoji, 64 x 64: Fluent Emoji High Contrast
line art as the query domain, Noto Emoji colour as the gallery domain; item i of both is the same emoji). They are
written once as PNG files under ``data.root`` (``lineart/<i>.png``, ``colour/<i>.png``, plus ``emoji.json`` naming
the data set's sha256; rewritten only when it changes) so that they go through the ordinary loaders and
augmentations.

Split (the data set's own, seeded at build time): the Unicode subgroups are seen or unseen (24 of 95 unseen,
413 emoji). Training uses the seen emoji of both domains, labelled at ``data.emoji_train_level`` (default
``subgroup``: 71 seen classes); validation uses the unseen emoji only, line art -> colour, labelled at
``data.emoji_eval_level`` (default ``group``: the 8 Unicode groups the unseen subgroups belong to, about 52 gallery
items per class, the setting in which the demo reports ICFRR; ``subgroup`` gives the strict zero-shot task of 24
never-seen classes with about 17 gallery items each). At either level the unseen emoji themselves are never trained
on; at group level their groups are (unseen subcategories of seen categories).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np

from .image_list import ImageRecords

__all__ = ["DOMAINS", "export_emoji", "emoji_splits"]

#: domain folder names: the query domain (line art, sketch-like) and the gallery domain (colour)
DOMAINS = ("lineart", "colour")


def export_emoji(root, dataset=None) -> Path:
    """Write the emoji images as PNG under ``root`` (kept when ``emoji.json`` shows the same data set).

    Args:
        root: output folder.
        dataset: an :class:`~icfrr_fast.demo.emoji.EmojiDataset` (default: the shipped one).

    Returns:
        ``root`` as a Path.
    """
    from PIL import Image

    from icfrr_fast.demo.emoji import load_emoji

    ds = load_emoji() if dataset is None else dataset
    root = Path(root)
    marker = root / "emoji.json"
    params = {"version": 1, "sha256": ds.metadata.get("sha256"), "items": len(ds)}
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return root
    marker.unlink(missing_ok=True)
    for name, images in zip(DOMAINS, (ds.queries, ds.gallery)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            Image.fromarray(np.ascontiguousarray(img)).save(root / name / f"{i:04d}.png")
    marker.write_text(json.dumps(params))
    return root


def _records(root: Path, items: np.ndarray, labels: np.ndarray, names, domains: List[int], part: str
             ) -> ImageRecords:
    present = sorted(set(labels[items].tolist()))
    remap = {c: k for k, c in enumerate(present)}
    paths, labs, doms = [], [], []
    for d in domains:
        paths += [str(root / DOMAINS[d] / f"{i:04d}.png") for i in items]
        labs += [remap[int(labels[i])] for i in items]
        doms += [d] * len(items)
    return ImageRecords(paths, labs, doms, [names[c] for c in present], list(DOMAINS), f"emoji/{part}")


def emoji_splits(cfg):
    """:class:`~icfrr_fast.training.data.benchmarks.RetrievalSplits` of the emoji benchmark (module docstring).

    Args:
        cfg: a :class:`~icfrr_fast.training.config.DataConfig` (``root``, ``emoji_train_level``,
            ``emoji_eval_level``).
    """
    from icfrr_fast.demo.emoji import load_emoji

    from .benchmarks import RetrievalSplits

    ds = load_emoji()
    root = export_emoji(cfg.root, ds)
    unseen = ds.unseen_mask()
    seen_items, unseen_items = np.flatnonzero(~unseen), np.flatnonzero(unseen)
    tl, el = cfg.emoji_train_level, cfg.emoji_eval_level
    train = _records(root, seen_items, ds.labels(tl), ds.class_names(tl), [0, 1], "train")
    query = _records(root, unseen_items, ds.labels(el), ds.class_names(el), [0], "query")
    gallery = _records(root, unseen_items, ds.labels(el), ds.class_names(el), [1], "gallery")
    return RetrievalSplits(train, query, gallery, 0,
                           f"emoji line art -> colour: train on {len(seen_items)} seen emoji x 2 domains "
                           f"({len(train.classes)} {tl}s); evaluate on the {len(unseen_items)} unseen emoji "
                           f"({int(ds.subgroup_unseen.sum())} unseen subgroups) at {el} level "
                           f"({len(query.classes)} classes)")
