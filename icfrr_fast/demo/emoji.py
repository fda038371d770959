"""The emoji sketch -> colour retrieval data set shipped with the package (``icfrr_fast/data/emoji/``).

Queries are black line-art emoji (Fluent Emoji High Contrast, MIT), the gallery the same emoji in colour (Noto Emoji,
Apache-2.0): item i of both is one emoji. Labels are the Unicode emoji group (9 classes, the category-level task
the demo evaluates: many gallery items per class, which is what ICFRR needs) and subgroup (95 classes), with a
seen/unseen split of the subgroups for zero-shot training. ``scripts/build_emoji_dataset.py`` builds the files;
``metadata.json`` beside them records where every byte came from. Loading needs numpy only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

__all__ = ["EmojiDataset", "load_emoji", "data_dir", "license_texts", "LEVELS"]

#: label levels: "group" (Unicode emoji group, 9 classes) and "subgroup" (95 classes)
LEVELS = ("group", "subgroup")
_FORMAT = "icfrr_fast.emoji/1"


def data_dir() -> Path:
    """The folder holding the shipped artefact, its ``metadata.json`` and the licence texts."""
    return Path(__file__).resolve().parent.parent / "data" / "emoji"


@dataclass(frozen=True)
class EmojiDataset:
    """Paired line-art / colour emoji with Unicode labels.

    Attributes:
        queries: (N, S, S) uint8 line art, black on white (the query domain).
        gallery: (N, S, S, 3) uint8 RGB colour emoji on white (the gallery domain).
        names: (N,) str, the Unicode CLDR name of each emoji.
        codepoints: (N,) str, hex code points joined by "-" (variation selector 16 dropped).
        group: (N,) int64 Unicode group id, an index into ``group_names``.
        subgroup: (N,) int64 Unicode subgroup id, an index into ``subgroup_names``.
        group_names: the group titles ("Smileys & Emotion", ...).
        subgroup_names: the subgroup slugs ("face-smiling", ...).
        subgroup_group: (num_subgroups,) int64, the group of each subgroup.
        subgroup_unseen: (num_subgroups,) bool, True for the subgroups held out as unseen classes.
        metadata: the provenance record (``metadata.json``).
    """

    queries: np.ndarray
    gallery: np.ndarray
    names: np.ndarray
    codepoints: np.ndarray
    group: np.ndarray
    subgroup: np.ndarray
    group_names: Tuple[str, ...]
    subgroup_names: Tuple[str, ...]
    subgroup_group: np.ndarray
    subgroup_unseen: np.ndarray
    metadata: dict

    def __len__(self) -> int:
        return len(self.names)

    @property
    def image_size(self) -> int:
        return int(self.queries.shape[1])

    def labels(self, level: str = "group") -> np.ndarray:
        """(N,) int64 class labels at ``level`` ("group" or "subgroup")."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}; got {level!r}")
        return self.group if level == "group" else self.subgroup

    def class_names(self, level: str = "group") -> Tuple[str, ...]:
        """The names of the classes of ``labels(level)``."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}; got {level!r}")
        return self.group_names if level == "group" else self.subgroup_names

    def unseen_mask(self) -> np.ndarray:
        """(N,) bool: items whose subgroup is held out as unseen (the zero-shot test classes)."""
        return self.subgroup_unseen[self.subgroup]

    def subset(self, index: np.ndarray) -> "EmojiDataset":
        """The items ``index`` (int array or (N,) bool mask), both domains alike; class tables are kept."""
        index = np.asarray(index)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise ValueError(f"index mask must have shape ({len(self)},); got {index.shape}")
        elif not np.issubdtype(index.dtype, np.integer):
            raise TypeError(f"index must be an int array or a bool mask; got dtype {index.dtype}")
        return EmojiDataset(self.queries[index], self.gallery[index], self.names[index], self.codepoints[index],
                            self.group[index], self.subgroup[index], self.group_names, self.subgroup_names,
                            self.subgroup_group, self.subgroup_unseen, self.metadata)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_emoji(path: Optional[Union[str, Path]] = None, *, verify: bool = True) -> EmojiDataset:
    """Load the emoji data set.

    Args:
        path: folder holding ``metadata.json`` and the ``.npz`` it names (default: the copy inside the package).
        verify: check the ``.npz`` against the sha256 recorded in ``metadata.json`` (about 10 ms).

    Returns:
        :class:`EmojiDataset`.

    Raises:
        FileNotFoundError: the folder, its metadata or its ``.npz`` is missing.
        ValueError: unknown format, checksum mismatch, or arrays of inconsistent shapes.

    Example:
        >>> from icfrr_fast.demo.emoji import load_emoji
        >>> ds = load_emoji()
        >>> ds.queries.shape[1:], ds.gallery.shape[1:], len(ds.group_names)
        ((64, 64), (64, 64, 3), 9)
    """
    folder = data_dir() if path is None else Path(path)
    meta_path = folder / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found; rebuild the data set with scripts/build_emoji_dataset.py")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {_FORMAT!r}")
    npz = folder / meta["file"]
    if not npz.is_file():
        raise FileNotFoundError(f"{npz} not found; rebuild the data set with scripts/build_emoji_dataset.py")
    if verify and _sha256(npz) != meta["sha256"]:
        raise ValueError(f"{npz}: sha256 differs from metadata.json (corrupt or rebuilt without its metadata)")
    with np.load(npz, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    n = len(a["names"])
    s = int(meta["image_size"])
    if a["queries"].shape != (n, s, s) or a["gallery"].shape != (n, s, s, 3):
        raise ValueError(f"{npz}: image arrays {a['queries'].shape}, {a['gallery'].shape} do not match "
                         f"{n} items of {s} px")
    return EmojiDataset(
        queries=a["queries"], gallery=a["gallery"], names=a["names"], codepoints=a["codepoints"],
        group=a["group"].astype(np.int64), subgroup=a["subgroup"].astype(np.int64),
        group_names=tuple(str(x) for x in a["group_names"]),
        subgroup_names=tuple(str(x) for x in a["subgroup_names"]),
        subgroup_group=a["subgroup_group"].astype(np.int64), subgroup_unseen=a["subgroup_unseen"].astype(bool),
        metadata=meta,
    )


def license_texts(path: Optional[Union[str, Path]] = None) -> Dict[str, str]:
    """``{licence file name: text}`` for every licence the data set's metadata names (queries, gallery, labels)."""
    folder = data_dir() if path is None else Path(path)
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    files = [meta[part]["license_file"] for part in ("queries", "gallery", "labels")]
    return {f: (folder / f).read_text(encoding="utf-8") for f in files}
