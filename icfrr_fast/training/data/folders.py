"""Folder datasets: ``<root>/<domain>/<class>/<image>``.

Class folders become classes (sorted by name); files with an image suffix (``.jpg .jpeg .png .bmp .gif .webp .tif
.tiff``, any case) become images; hidden files and folders are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Union

__all__ = ["IMAGE_SUFFIXES", "scan_domain", "list_domains"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_domains(root: Union[str, Path]) -> List[str]:
    """Sub-folder names of ``root`` (the domains of a folder dataset), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root} (expected <root>/<domain>/<class>/<image>)")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_domain(domain_dir: Union[str, Path]) -> Dict[str, List[str]]:
    """``{class name: [image paths]}`` of one domain folder.

    Raises:
        FileNotFoundError: the folder is missing.
        ValueError: no class folders, or a class folder without images (the message names them).
    """
    domain_dir = Path(domain_dir)
    if not domain_dir.is_dir():
        raise FileNotFoundError(f"domain folder not found: {domain_dir} (expected {domain_dir}/<class>/<image>)")
    out: Dict[str, List[str]] = {}
    empty = []
    for cdir in sorted(p for p in domain_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(str(f) for f in cdir.iterdir()
                       if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            out[cdir.name] = files
        else:
            empty.append(cdir.name)
    if not out:
        raise ValueError(f"{domain_dir}: no class folders with images (expected {domain_dir}/<class>/<image> with "
                         f"suffixes {' '.join(IMAGE_SUFFIXES)})")
    if empty:
        raise ValueError(f"{domain_dir}: {len(empty)} class folders hold no images: {', '.join(empty[:5])}")
    return out
