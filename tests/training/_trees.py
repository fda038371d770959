"""Tiny synthetic dataset trees and file lists written into tmp_path by the data tests."""

from pathlib import Path
from typing import Dict, Iterable, List

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


def folder_tree(root: Path, domains: Dict[str, Iterable[str]], per_class: int = 2, suffix: str = ".png") -> Path:
    """``root/<domain>/<class>/<k><suffix>`` for every listed class of every domain."""
    n = 0
    for d, classes in domains.items():
        for c in classes:
            for k in range(per_class):
                write_image(root / d / c / f"{k}{suffix}", n)
                n += 1
    return root


def sake_split(root: Path, split: str, sketch_pattern: str, photo_pattern: str, seen: List[str],
               unseen: List[str], per_class: int = 2, sketch_dir: str = "sketch", photo_dir: str = "photo") -> Path:
    """Images under ``root/{sketch_dir,photo_dir}/<class>/`` and SAKE-style lists in ``root/<split>/``."""
    (root / split).mkdir(parents=True, exist_ok=True)
    for fname, classes in (("cname_cid.txt", seen), ("cname_cid_zero.txt", unseen)):
        (root / split / fname).write_text("".join(f"{c} {i}\n" for i, c in enumerate(classes)))
    n = 0
    for part, classes in (("train", seen), ("zero", unseen)):
        for pattern, sub in ((sketch_pattern, sketch_dir), (photo_pattern, photo_dir)):
            lines = []
            for i, c in enumerate(classes):
                for k in range(per_class):
                    rel = f"{sub}/{c}/{k}.png"
                    write_image(root / rel, n)
                    n += 1
                    lines.append(f"{rel} {i}\n")
            (root / split / pattern.format(part)).write_text("".join(lines))
    return root
