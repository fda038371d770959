"""Loads the compiled kernels (``icfrr_fast._C``) on first use and holds the CPU thread-count setting.

Import never fails when ``_C`` is missing (a source checkout that was not built): the error is raised when a CPU
kernel is called, and it names the build command.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

import torch

_module: Optional[ModuleType] = None
_num_threads: Optional[int] = None

BUILD_HINT = "build it with `pip install -e .` (or `pip install .`) from the repository root"


def load() -> ModuleType:
    """Return the native module ``icfrr_fast._C``, importing it on first use."""
    global _module
    if _module is None:
        try:
            _module = importlib.import_module("icfrr_fast._C")
        except ImportError as e:  # pragma: no cover - exercised only in unbuilt checkouts
            raise RuntimeError(f"icfrr_fast's compiled CPU kernels (icfrr_fast._C) are not available: {e}; "
                               f"{BUILD_HINT}") from e
    return _module


def available() -> bool:
    """True when the compiled module can be imported."""
    try:
        load()
    except RuntimeError:
        return False
    return True


def set_num_threads(n: Optional[int]) -> None:
    """Threads used by the CPU kernels (None: follow ``torch.get_num_threads()``). Results never depend on it."""
    global _num_threads
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"num_threads must be a positive int or None; got {n!r}")
    _num_threads = n


def get_num_threads() -> int:
    """Threads the CPU kernels will use."""
    return _num_threads if _num_threads is not None else max(1, torch.get_num_threads())


#: SIMD paths of the knn_topk CPU kernel, by the code the native module uses for each.
CPU_SIMD = {"auto": 0, "portable": 1, "avx2": 2, "avx512": 3}
_cpu_simd = "auto"


def cpu_simd_supported(name: str) -> bool:
    """True when the knn_topk SIMD path ``name`` ("auto", "portable", "avx2", "avx512") can run on this CPU."""
    if name not in CPU_SIMD:
        raise ValueError(f"simd must be one of {tuple(CPU_SIMD)}; got {name!r}")
    return bool(load().knn_topk_simd_supported(CPU_SIMD[name]))


def set_cpu_simd(name: Optional[str]) -> None:
    """Force the knn_topk CPU micro-kernel: "portable" (plain C++ with std::fma, any CPU), "avx2", "avx512", or
    "auto"/None (the widest the CPU supports). Every path computes bit-identical float32 scores (same FMA chain).

    Raises:
        ValueError: unknown name, or a path this CPU cannot run.
    """
    global _cpu_simd
    name = "auto" if name is None else name
    if not cpu_simd_supported(name):
        raise ValueError(f"simd {name!r} is not supported by this CPU; supported: "
                         f"{[n for n in CPU_SIMD if cpu_simd_supported(n)]}")
    _cpu_simd = name


def get_cpu_simd(resolve: bool = False) -> str:
    """The knn_topk SIMD path in use ("auto" unless forced); with ``resolve`` the path "auto" stands for here."""
    if resolve and _cpu_simd == "auto":
        code = load().knn_topk_best_simd()
        return next(n for n, c in CPU_SIMD.items() if c == code)
    return _cpu_simd
