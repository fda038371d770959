"""The common file-list format of zero-shot sketch-based retrieval benchmarks (SAKE / ZSE-SBIR style).

A benchmark folder holds the images and one split folder (e.g. ``Sketchy/zeroshot1``) with

* ``cname_cid.txt`` (training classes) and ``cname_cid_zero.txt`` (test classes): one ``<class name> <id>`` per line;
* image lists, one ``<relative/image/path> <class id>`` per line (the path may contain spaces: the id is the last
  token), paths relative to the benchmark folder, ids indexing the matching class file.

Example line: ``256x256/sketch/tx_000000000000/airplane/n02691156_58-1.png 0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple, Union

__all__ = ["read_class_ids", "read_file_list", "write_file_list"]

PathLike = Union[str, Path]


def read_class_ids(path: PathLike) -> Dict[int, str]:
    """``{id: class name}`` from a ``cname_cid`` file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed line or a repeated id (message gives file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class list not found: {path} (expected lines '<class name> <id>')")
    out: Dict[int, str] = {}
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        name, _, cid = line.strip().rpartition(" ")
        if not name or not cid.lstrip("-").isdigit():
            raise ValueError(f"{path}:{no}: expected '<class name> <id>'; got {line.strip()!r}")
        if int(cid) in out:
            raise ValueError(f"{path}:{no}: class id {cid} appears twice")
        out[int(cid)] = name.strip()
    if not out:
        raise ValueError(f"{path}: no classes listed")
    return out


def read_file_list(path: PathLike, root: PathLike) -> Tuple[List[str], List[int]]:
    """(paths joined to ``root``, class ids) from an image list.

    Raises:
        FileNotFoundError: no such list.
        ValueError: a malformed line (message gives file and line) or an empty list.
    """
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise FileNotFoundError(f"image list not found: {path} (expected lines '<relative/image/path> <class id>')")
    paths, ids = [], []
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        rel, _, cid = line.strip().rpartition(" ")
        if not rel or not cid.lstrip("-").isdigit():
            raise ValueError(f"{path}:{no}: expected '<relative/image/path> <class id>'; got {line.strip()!r}")
        paths.append(str(root / rel.strip()))
        ids.append(int(cid))
    if not paths:
        raise ValueError(f"{path}: the image list is empty")
    return paths, ids


def write_file_list(path: PathLike, rel_paths: List[str], ids: List[int]) -> None:
    """Write ``<path> <id>`` lines (used by tests and by anyone converting a folder tree)."""
    Path(path).write_text("".join(f"{p} {i}\n" for p, i in zip(rel_paths, ids)), encoding="utf-8")
