"""Class embeddings (word vectors or any per-class vectors) read from a user file, for the semantic losses.

Formats (chosen by suffix):

* ``.txt`` / ``.vec``: word2vec/GloVe text, one ``name v_1 ... v_S`` per line (an optional ``count dim`` header line
  is skipped); multi-word names may use ``_``, ``-`` or spaces (the last S tokens are the vector);
* ``.json``: ``{"name": [v_1, ..., v_S], ...}``;
* ``.pth`` / ``.pt``: ``{"name": tensor(S), ...}`` or ``{"names": [...], "embeddings": tensor(M, S)}``, loaded with
  ``weights_only=True``.

Names match class names case-insensitively with ``_``, ``-`` and spaces treated alike (``"teddy-bear"`` matches
``"Teddy_bear"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["read_class_embeddings", "class_embedding_matrix", "normalize_class_name"]


def normalize_class_name(name: str) -> str:
    """Canonical form used for matching: lower case, ``_``/``-``/runs of spaces -> one space, stripped."""
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def read_class_embeddings(path: Union[str, Path]) -> Dict[str, Tensor]:
    """Read ``{name: (S,) float32}`` from a file (see the module docstring for formats).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unsupported suffix, malformed content, or vectors of different lengths.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class_embeddings: no such file: {path}")
    suffix = path.suffix.lower()
    out: Dict[str, Tensor] = {}
    if suffix in (".txt", ".vec"):
        lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if lines and len(lines[0]) == 2 and all(t.isdigit() for t in lines[0]):
            lines = lines[1:]
        widths = set()
        for no, toks in enumerate(lines, 1):
            nums = []
            while toks and _is_float(toks[-1]):
                nums.append(float(toks.pop()))
            if not toks or not nums:
                raise ValueError(f"class_embeddings {path}:{no}: expected 'name v_1 ... v_S'")
            out[" ".join(toks)] = torch.tensor(nums[::-1], dtype=torch.float32)
            widths.add(len(nums))
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"class_embeddings {path}: invalid JSON: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"class_embeddings {path}: expected an object {{name: [floats]}}")
        out = {str(k): torch.tensor(v, dtype=torch.float32) for k, v in data.items()}
    elif suffix in (".pth", ".pt"):
        from icfrr_fast.io import load_tensor_file

        data = load_tensor_file(path)
        if isinstance(data, dict) and "names" in data and "embeddings" in data:
            names, emb = list(data["names"]), torch.as_tensor(data["embeddings"], dtype=torch.float32)
            if emb.dim() != 2 or emb.shape[0] != len(names):
                raise ValueError(f"class_embeddings {path}: 'embeddings' must be (len(names), S); got "
                                 f"{tuple(emb.shape)} for {len(names)} names")
            out = {str(n): emb[i] for i, n in enumerate(names)}
        elif isinstance(data, dict):
            out = {str(k): torch.as_tensor(v, dtype=torch.float32) for k, v in data.items()}
        else:
            raise ValueError(f"class_embeddings {path}: expected a dict; got {type(data).__name__}")
    else:
        raise ValueError(f"class_embeddings must be a .txt/.vec, .json or .pth/.pt file; got {path.name}")
    if not out:
        raise ValueError(f"class_embeddings {path}: no embeddings found")
    shapes = {tuple(v.shape) for v in out.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"class_embeddings {path}: all vectors must be 1-D of one length; got shapes "
                         f"{sorted(shapes)[:4]}")
    return out


def _is_float(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False


def class_embedding_matrix(embeddings: Dict[str, Tensor], classes: Sequence[str],
                           exclude: Sequence[str] = ()) -> Tuple[Tensor, List[str]]:
    """Stack the vectors of ``classes`` (rows 0..C-1, in order) followed by the rest of the vocabulary.

    Args:
        embeddings: ``{name: (S,)}`` from :func:`read_class_embeddings`.
        classes: the training classes; every one must have a vector.
        exclude: names never to include (the test classes, so nothing leaks into a zero-shot run).

    Returns:
        ((M, S) float32 matrix, its M names), M >= C.

    Raises:
        ValueError: a training class has no vector.
    """
    table = {normalize_class_name(k): (k, v) for k, v in embeddings.items()}
    missing = [c for c in classes if normalize_class_name(c) not in table]
    if missing:
        raise ValueError(f"class_embeddings: no vector for {len(missing)} training classes: "
                         f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    skip = {normalize_class_name(c) for c in classes} | {normalize_class_name(c) for c in exclude}
    rows = [table[normalize_class_name(c)][1] for c in classes]
    names = list(classes)
    for key, (name, vec) in table.items():
        if key not in skip:
            rows.append(vec)
            names.append(name)
    return torch.stack(rows), names
