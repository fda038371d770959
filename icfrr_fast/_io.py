"""Safe file I/O for untrusted inputs and interrupted runs.

* ``load_tensor_file``: ``.pth``/``.pt`` via ``torch.load(weights_only=True)`` (a pickle that would run code is
  refused with a clear message) and ``.npy`` via ``numpy.load(allow_pickle=False)``.
* ``atomic_save``: writes to a temporary file in the destination folder, fsyncs, then renames, so an interrupted run
  never leaves a truncated result behind.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

import torch

PathLike = Union[str, os.PathLike]


def load_tensor_file(path: PathLike) -> Any:
    """Load a tensor (or a dict/list of tensors) from ``.pth``/``.pt`` or ``.npy`` without executing code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix == ".npy":
        import numpy as np

        try:
            return torch.from_numpy(np.load(path, allow_pickle=False))
        except ValueError as e:
            raise ValueError(f"{path}: not a plain .npy array (object arrays are refused): {e}") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path}: refused to load; it is not a plain tensor file (torch.load(weights_only=True) rejected it, "
            f"since loading it would run arbitrary code): {str(e).splitlines()[0]}"
        ) from e
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"{path}: not a readable torch file: {str(e).splitlines()[0]}") from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path`` (same folder, so the rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the permissions open() would
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj, path)`` atomically."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
