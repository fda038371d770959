"""A tiny real-image cross-domain set generated offline from the photos scikit-image ships.

Each class is one real photo from ``skimage.data`` (astronaut, cat, coffee, rocket, motorcycle, camera man, coins,
brick wall, ...). Its "photo" domain holds random crops of it (position, scale, flip); its "sketch" domain holds edge
maps of other random crops (Canny edges drawn as dark strokes on white, thickened by one pixel), so retrieval is
sketch -> photo of the same scene, with a real domain gap. Written as a folder dataset
(``<root>/{sketch,photo}/<class>/<n>.png``) so that it goes through the ordinary loaders; regenerated only when its
parameters change (``toyset.json``). Used by the smoke config and the training tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Union

import numpy as np

__all__ = ["SOURCES", "make_toyset"]


def _rgb(a: np.ndarray) -> np.ndarray:
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return a[..., :3].astype(np.uint8)


def _sources() -> Dict[str, Callable[[], np.ndarray]]:
    from skimage import data

    return {
        "astronaut": data.astronaut, "cat": data.chelsea, "coffee": data.coffee, "rocket": data.rocket,
        "motorcycle": lambda: data.stereo_motorcycle()[0], "cameraman": data.camera, "coins": data.coins,
        "brick": data.brick, "hubble": data.hubble_deep_field, "ihc": data.immunohistochemistry,
        "clock": data.clock, "moon": data.moon,
    }


#: class names available, in order (``num_classes`` takes a prefix)
SOURCES: List[str] = ["astronaut", "cat", "coffee", "rocket", "motorcycle", "cameraman", "coins", "brick", "hubble",
                      "ihc", "clock", "moon"]


def _crop(img: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    from skimage.transform import resize

    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.45, 0.85))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    c = img[y:y + side, x:x + side]
    if rng.random() < 0.5:
        c = c[:, ::-1]
    return resize(c, (size, size), anti_aliasing=True, preserve_range=True).astype(np.float64)


def _sketch(crop: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_dilation
    from skimage.color import rgb2gray
    from skimage.feature import canny

    edges = canny(rgb2gray(crop / 255.0), sigma=1.5)
    edges = binary_dilation(edges, iterations=1)
    return np.where(edges, 0, 255).astype(np.uint8)


def make_toyset(root: Union[str, Path], *, num_classes: int = 8, per_class: int = 16, image_size: int = 48,
                seed: int = 0) -> Path:
    """Write the toy set under ``root`` (or keep it when already written with the same parameters).

    Args:
        root: output folder.
        num_classes: classes (a prefix of :data:`SOURCES`), 2..12.
        per_class: images per class and domain.
        image_size: side of the square images written.
        seed: crop RNG seed.

    Returns:
        ``root`` as a Path.
    """
    from PIL import Image

    if not 2 <= num_classes <= len(SOURCES):
        raise ValueError(f"num_classes must be in [2, {len(SOURCES)}]; got {num_classes}")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1; got {per_class}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8; got {image_size}")
    root = Path(root)
    params = {"version": 1, "num_classes": num_classes, "per_class": per_class, "image_size": image_size,
              "seed": seed}
    marker = root / "toyset.json"
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return root
    import shutil

    for domain in ("photo", "sketch"):  # drop what an earlier generation wrote (only our own class folders)
        for name in SOURCES:
            if (root / domain / name).is_dir():
                shutil.rmtree(root / domain / name)
    marker.unlink(missing_ok=True)
    sources = _sources()
    for k, name in enumerate(SOURCES[:num_classes]):
        img = _rgb(sources[name]())
        rng = np.random.default_rng([seed, k])
        for domain in ("photo", "sketch"):
            (root / domain / name).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            photo = _crop(img, rng, image_size)
            Image.fromarray(photo.clip(0, 255).astype(np.uint8)).save(root / "photo" / name / f"{n:03d}.png")
            sk = _sketch(_crop(img, rng, image_size))
            Image.fromarray(sk).save(root / "sketch" / name / f"{n:03d}.png")
    marker.write_text(json.dumps(params))
    return root
