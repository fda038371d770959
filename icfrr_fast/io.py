"""Safe file I/O for untrusted inputs and interrupted runs (public: the commands, the demo and training use it).

* ``load_tensor_file``: ``.pth``/``.pt`` via ``torch.load(weights_only=True)`` (a pickle that would run code is
  refused with a clear message) and ``.npy`` via ``numpy.load(allow_pickle=False)``; any file that cannot be read
  (truncated, corrupt, an unsupported dtype) is a ``ValueError`` naming the file. Big-endian ``.npy`` arrays are
  converted to the native byte order.
* ``check_fields``: the keys and types a loaded dict must have, checked before anything uses them.
* ``atomic_save``: writes to a temporary file in the destination folder, fsyncs it, renames it, then fsyncs the
  folder, so an interrupted run never leaves a truncated result behind. The file gets the permissions ``open()``
  would give it (a new file: 0o666 less the umask, applied by the OS; an existing file keeps its mode).
"""

from __future__ import annotations

import os
import pickle
import secrets
import stat
from pathlib import Path
from typing import Any, Callable, Dict, Union

import torch

PathLike = Union[str, os.PathLike]


def load_tensor_file(path: PathLike) -> Any:
    """Load a tensor (or a dict/list of tensors) from ``.pth``/``.pt`` or ``.npy`` without executing code.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a plain tensor file (pickled code, truncated, corrupt, unsupported dtype).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix == ".npy":
        return _load_npy(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path}: refused to load; it is not a plain tensor file (torch.load(weights_only=True) rejected it, "
            f"since loading it would run arbitrary code): {str(e).splitlines()[0] if str(e) else e!r}"
        ) from e
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 -- a corrupt file can fail in many ways inside torch.load / zipfile
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: not a readable torch file: {first}") from e


def _load_npy(path: Path) -> torch.Tensor:
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(f"{path}: refused to load an object array (it would need pickle): {e}") from e
        raise ValueError(f"{path}: not a readable .npy file (truncated or corrupt?): {e}") from e
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npy file (truncated or corrupt?): {e}") from e
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path}: expected one array; got {type(arr).__name__}")
    if arr.dtype.byteorder not in ("=", "|"):  # big-endian (or explicitly little-endian) data
        arr = arr.astype(arr.dtype.newbyteorder("="))
    try:
        return torch.from_numpy(arr)
    except TypeError as e:
        raise ValueError(f"{path}: unsupported array dtype {arr.dtype} (numbers or bools only)") from e


def check_fields(path: PathLike, d: Dict[str, Any], fields: Dict[str, Any]) -> None:
    """Raise ValueError naming ``path`` unless ``d`` has every key of ``fields`` with a value of its type(s)."""
    for key, types in fields.items():
        if key not in d:
            raise ValueError(f"{path}: missing entry {key!r}")
        if not isinstance(d[key], types):
            want = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            raise ValueError(f"{path}: entry {key!r} must be {want}; got {type(d[key]).__name__}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform/filesystem without directory handles: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path`` (same folder, so the rename is atomic).

    Raises:
        ValueError: ``path`` is an existing directory.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        keep = stat.S_IMODE(os.stat(path).st_mode)  # an existing file keeps its permissions
    except FileNotFoundError:
        keep = None
    mode = 0o666 if keep is None else keep & 0o777  # a new file: the OS applies the umask, as for open()
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            break
        except FileExistsError:
            continue
    os.close(fd)
    if keep is not None:
        os.chmod(tmp, keep)  # exactly the old mode (os.open applied the umask)
    try:
        write(str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj, path)`` atomically."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
