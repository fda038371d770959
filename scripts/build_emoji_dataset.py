#!/usr/bin/env python
"""Build the emoji sketch -> colour retrieval data set shipped in ``icfrr_fast/data/emoji/``.

Queries are black line art (Fluent Emoji High Contrast, MIT, Microsoft), the gallery is full colour (Noto Emoji,
Apache-2.0, Google); both come as SVG from the npm packages ``@iconify-json/fluent-emoji-high-contrast`` and
``@iconify-json/noto``. Every Fluent high-contrast emoji also exists in Noto, so item i of the queries and item i of
the gallery are the same emoji drawn in two domains. Labels are the Unicode emoji group (Smileys & Emotion, Animals &
Nature, ...; the category-level task) and subgroup (animal-mammal, food-fruit, ...; the fine task), taken from the
Unicode emoji-test data as packaged by ``emojibase-data`` (MIT) and joined by code point. The seen/unseen split is
over subgroups, per group, so that a zero-shot model can be trained on seen subgroups and tested on unseen ones.

This script is the only way the artefact is made; it needs ``npm`` (the npm registry) and ``resvg-py``, ``numpy``
and ``pillow`` from PyPI. The demo that uses the artefact never touches the network.

Usage:
    python scripts/build_emoji_dataset.py                      # fetch the pinned packages with npm pack, build
    python scripts/build_emoji_dataset.py --tarballs DIR       # use tarballs already in DIR (no network)

Writes ``emoji64.npz`` (images and labels), ``metadata.json`` (provenance: package versions and integrity hashes,
renderer version, build date, split seed) and ``LICENSE-emojibase-data.txt`` into ``--out``. The licence texts of
the two icon sets (``LICENSE-fluent-emoji.txt``, ``LICENSE-noto-emoji.txt``) are kept in the repository beside the
artefact; the script checks that each package still declares the licence those files hold.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "icfrr_fast" / "data" / "emoji"

#: npm package -> pinned version (the versions the shipped artefact was built from)
PACKAGES = {
    "@iconify-json/fluent-emoji-high-contrast": "1.2.6",
    "@iconify-json/noto": "1.2.9",
    "emojibase-data": "17.0.0",
}
#: icon set -> (SPDX id it must declare, licence file kept beside the artefact)
ICON_LICENSES = {
    "@iconify-json/fluent-emoji-high-contrast": ("MIT", "LICENSE-fluent-emoji.txt"),
    "@iconify-json/noto": ("Apache-2.0", "LICENSE-noto-emoji.txt"),
}


@dataclass
class Package:
    name: str
    version: str
    integrity: str  # npm's sha512 integrity string of the tarball
    sha256: str  # sha256 of the tarball file
    tarball: Path


# -- fetching ---------------------------------------------------------------------------------------------------------
def _tarball_name(name: str, version: str) -> str:
    """The file name ``npm pack`` gives a package: '@scope/name' -> 'scope-name-<version>.tgz'."""
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def fetch_packages(dest: Path, tarballs: Path | None) -> Dict[str, Package]:
    """``npm pack`` each pinned package into ``dest`` (or take it from ``tarballs``) and hash it."""
    out = {}
    for name, version in PACKAGES.items():
        fname = _tarball_name(name, version)
        if tarballs is not None:
            path = tarballs / fname
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found (expected the npm tarball of {name}@{version})")
        else:
            path = dest / fname
            if not path.is_file():
                subprocess.run(["npm", "pack", f"{name}@{version}", "--pack-destination", str(dest), "--silent"],
                               check=True, stdout=subprocess.DEVNULL)
        data = path.read_bytes()
        integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
        out[name] = Package(name, version, integrity, hashlib.sha256(data).hexdigest(), path)
    return out


def read_json(tarball: Path, member: str):
    """Parse ``package/<member>`` of an npm tarball without extracting anything to disk."""
    with tarfile.open(tarball, "r:gz") as tar:
        f = tar.extractfile(f"package/{member}")
        if f is None:
            raise ValueError(f"{tarball}: package/{member} is not a file")
        return json.load(f)


def read_text(tarball: Path, member: str) -> str:
    with tarfile.open(tarball, "r:gz") as tar:
        f = tar.extractfile(f"package/{member}")
        if f is None:
            raise ValueError(f"{tarball}: package/{member} is not a file")
        return f.read().decode("utf-8")


# -- joining and labelling --------------------------------------------------------------------------------------------
def normalise_hexcode(h: str) -> str:
    """'2764-FE0F' -> '2764': lower case, variation selector 16 dropped (packages differ on writing it)."""
    return "-".join(p for p in h.lower().split("-") if p != "fe0f")


def unicode_labels(emojibase: Path) -> Tuple[Dict[str, dict], Dict[int, str], Dict[int, str]]:
    """hexcode -> emojibase record (skin-tone variants included), group id -> name, subgroup id -> name."""
    records = {}
    for e in read_json(emojibase, "en/data.json"):
        records[normalise_hexcode(e["hexcode"])] = e
        for s in e.get("skins") or []:
            records.setdefault(normalise_hexcode(s["hexcode"]), {**s, "subgroup": e.get("subgroup"),
                                                                  "group": e.get("group"), "order": e.get("order")})
    meta = read_json(emojibase, "meta/groups.json")
    groups = {int(k): v for k, v in meta["groups"].items()}
    subgroups = {int(k): v for k, v in meta["subgroups"].items()}
    return records, groups, subgroups


GROUP_TITLES = {  # emojibase slugs -> the Unicode emoji-test group names
    "smileys-emotion": "Smileys & Emotion", "people-body": "People & Body", "component": "Component",
    "animals-nature": "Animals & Nature", "food-drink": "Food & Drink", "travel-places": "Travel & Places",
    "activities": "Activities", "objects": "Objects", "symbols": "Symbols", "flags": "Flags",
}


# -- rendering --------------------------------------------------------------------------------------------------------
def icon_svg(icon_set: dict, name: str, color: str | None) -> str:
    """A square SVG document of one iconify icon (non-square icons are centred; ``color`` fills currentColor)."""
    icons, aliases = icon_set["icons"], icon_set.get("aliases", {})
    h_flip = False
    while name not in icons:  # resolve aliases (only plain renames and horizontal flips occur in these sets)
        alias = aliases[name]
        h_flip ^= bool(alias.get("hFlip", False))
        name = alias["parent"]
    icon = icons[name]
    left, top = icon.get("left", icon_set.get("left", 0)), icon.get("top", icon_set.get("top", 0))
    w, h = icon.get("width", icon_set.get("width", 16)), icon.get("height", icon_set.get("height", 16))
    side = max(w, h)
    x0, y0 = left - (side - w) / 2, top - (side - h) / 2
    body = icon["body"]
    if h_flip:
        body = f'<g transform="translate({2 * left + w} 0) scale(-1 1)">{body}</g>'
    col = f' color="{color}"' if color else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{x0} {y0} {side} {side}"{col}>{body}</svg>')


def render(svg: str, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB of an SVG drawn on white."""
    import resvg_py
    from PIL import Image

    png = resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size, background="#ffffff")
    img = Image.open(io.BytesIO(bytes(png))).convert("RGB")
    if img.size != (size, size):
        raise ValueError(f"resvg returned {img.size}, expected {(size, size)}")
    return np.asarray(img)


# -- split ------------------------------------------------------------------------------------------------------------
def seen_unseen_split(subgroup_group: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """(S,) bool, True = unseen: in every group with >= 2 subgroups, round(fraction * n) of them (at least 1,
    at most n - 1), drawn with a seeded generator; groups with one subgroup stay seen."""
    rng = np.random.default_rng(seed)
    unseen = np.zeros(len(subgroup_group), dtype=bool)
    for g in np.unique(subgroup_group):
        members = np.flatnonzero(subgroup_group == g)
        if len(members) < 2:
            continue
        n = min(max(int(round(fraction * len(members))), 1), len(members) - 1)
        unseen[rng.choice(members, size=n, replace=False)] = True
    return unseen


# -- main -------------------------------------------------------------------------------------------------------------
def build(out: Path, size: int, seed: int, unseen_fraction: float, tarballs: Path | None) -> dict:
    import resvg_py

    for _, fname in ICON_LICENSES.values():
        if not (out / fname).is_file():
            raise FileNotFoundError(f"{out / fname} is missing: the licence texts are kept in the repository")
    with tempfile.TemporaryDirectory() as tmp:
        pkgs = fetch_packages(Path(tmp), tarballs)
        fluent, noto, ebase = (pkgs[n].tarball for n in PACKAGES)
        for name, (spdx, _) in ICON_LICENSES.items():
            info = read_json(pkgs[name].tarball, "info.json")
            if info["license"]["spdx"] != spdx:
                raise ValueError(f"{name} now declares licence {info['license']['spdx']}, not {spdx}: "
                                 f"update the licence file before shipping it")
        f_icons, n_icons = read_json(fluent, "icons.json"), read_json(noto, "icons.json")
        f_chars = {normalise_hexcode(k): v for k, v in read_json(fluent, "chars.json").items()}
        n_chars = {normalise_hexcode(k): v for k, v in read_json(noto, "chars.json").items()}
        records, groups, subgroups = unicode_labels(ebase)
        ebase_license = read_text(ebase, "LICENSE")

    common = [h for h in f_chars if h in n_chars]
    missing = [h for h in common if h not in records or "subgroup" not in records[h]]
    if missing:
        raise ValueError(f"{len(missing)} emoji have no Unicode subgroup in emojibase-data, e.g. {missing[:5]}")
    common.sort(key=lambda h: (records[h]["order"], h))  # the Unicode emoji order

    used_groups = sorted({records[h]["group"] for h in common})
    used_subgroups = sorted({records[h]["subgroup"] for h in common})
    g_index = {g: i for i, g in enumerate(used_groups)}
    s_index = {s: i for i, s in enumerate(used_subgroups)}
    subgroup_group = np.array([g_index[next(records[h]["group"] for h in common if records[h]["subgroup"] == s)]
                               for s in used_subgroups], dtype=np.int16)
    unseen = seen_unseen_split(subgroup_group, unseen_fraction, seed)

    queries = np.empty((len(common), size, size), dtype=np.uint8)
    gallery = np.empty((len(common), size, size, 3), dtype=np.uint8)
    for i, h in enumerate(common):
        sketch = render(icon_svg(f_icons, f_chars[h], color="#000000"), size)
        # the line art is black (currentColor) on white: keep one channel (all three are equal)
        queries[i] = sketch.min(axis=2)
        gallery[i] = render(icon_svg(n_icons, n_chars[h], color=None), size)

    arrays = {
        "queries": queries,
        "gallery": gallery,
        "codepoints": np.array(common),
        "names": np.array([records[h]["label"] for h in common]),
        "query_icons": np.array([f_chars[h] for h in common]),
        "gallery_icons": np.array([n_chars[h] for h in common]),
        "group": np.array([g_index[records[h]["group"]] for h in common], dtype=np.int16),
        "subgroup": np.array([s_index[records[h]["subgroup"]] for h in common], dtype=np.int16),
        "group_names": np.array([GROUP_TITLES.get(groups[g], groups[g]) for g in used_groups]),
        "subgroup_names": np.array([subgroups[s] for s in used_subgroups]),
        "subgroup_group": subgroup_group,
        "subgroup_unseen": unseen,
    }
    out.mkdir(parents=True, exist_ok=True)
    npz = out / f"emoji{size}.npz"
    tmp_npz = out / f".emoji{size}.tmp.npz"
    np.savez_compressed(tmp_npz, **arrays)
    os.replace(tmp_npz, npz)
    (out / "LICENSE-emojibase-data.txt").write_text(ebase_license, encoding="utf-8")

    counts = np.bincount(arrays["group"], minlength=len(used_groups))
    meta = {
        "format": "icfrr_fast.emoji/1",
        "file": npz.name,
        "sha256": hashlib.sha256(npz.read_bytes()).hexdigest(),
        "built": datetime.date.today().isoformat(),
        "items": len(common),
        "image_size": size,
        "queries": {"package": "@iconify-json/fluent-emoji-high-contrast", "style": "black line art (sketch-like)",
                    "license": "MIT", "copyright": "Microsoft Corporation", "license_file": "LICENSE-fluent-emoji.txt"},
        "gallery": {"package": "@iconify-json/noto", "style": "full colour", "license": "Apache-2.0",
                    "copyright": "Google Inc.", "license_file": "LICENSE-noto-emoji.txt"},
        "labels": {"package": "emojibase-data", "what": "Unicode emoji group and subgroup (emoji-test.txt)",
                   "license": "MIT", "license_file": "LICENSE-emojibase-data.txt"},
        "packages": {p.name: {"version": p.version, "integrity": p.integrity, "sha256": p.sha256}
                     for p in pkgs.values()},
        "renderer": {"package": "resvg-py", "version": getattr(resvg_py, "__version__", "unknown"),
                     "resvg": getattr(resvg_py, "__resvg_version__", "unknown"), "background": "#ffffff"},
        "groups": {str(n): int(c) for n, c in zip(arrays["group_names"], counts)},
        "subgroups": len(used_subgroups),
        "split": {"over": "subgroup, per group", "seed": seed, "unseen_fraction": unseen_fraction,
                  "unseen_subgroups": int(unseen.sum()),
                  "unseen_items": int(unseen[arrays["subgroup"]].sum())},
        "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
        "command": "python scripts/build_emoji_dataset.py " + " ".join(sys.argv[1:]),
    }
    (out / "metadata.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return meta


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the seen/unseen split (default: %(default)s)")
    p.add_argument("--unseen-fraction", type=float, default=0.25,
                   help="share of each group's subgroups held out as unseen (default: %(default)s)")
    p.add_argument("--tarballs", type=Path, default=None,
                   help="folder holding the npm tarballs already (skips npm pack; works offline)")
    args = p.parse_args(argv)
    if args.size < 8:
        raise SystemExit("--size must be >= 8")
    if not 0.0 < args.unseen_fraction < 1.0:
        raise SystemExit("--unseen-fraction must be in (0, 1)")
    meta = build(args.out, args.size, args.seed, args.unseen_fraction, args.tarballs)
    size_mb = (args.out / meta["file"]).stat().st_size / 2**20
    print(f"wrote {args.out / meta['file']} ({size_mb:.2f} MiB): {meta['items']} emoji, "
          f"{len(meta['groups'])} groups, {meta['subgroups']} subgroups "
          f"({meta['split']['unseen_subgroups']} unseen, {meta['split']['unseen_items']} items)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
