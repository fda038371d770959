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


#: the most CPU threads a kernel may be asked to use (OpenMP takes a C int; more threads than this never help)
MAX_THREADS = 4096


def set_num_threads(n: Optional[int]) -> None:
    """Threads used by the CPU kernels (None: follow ``torch.get_num_threads()``), in [1, MAX_THREADS]. Results
    never depend on it."""
    global _num_threads
    if n is not None and (not isinstance(n, int) or isinstance(n, bool)):
        raise TypeError(f"num_threads must be an int or None; got {type(n).__name__}")
    if n is not None and not 1 <= n <= MAX_THREADS:
        raise ValueError(f"num_threads must be in [1, {MAX_THREADS}] or None; got {n!r}")
    _num_threads = n


def get_num_threads() -> int:
    """Threads the CPU kernels will use."""
    return _num_threads if _num_threads is not None else max(1, min(MAX_THREADS, torch.get_num_threads()))


#: SIMD levels of the CPU kernels, lowest first; each includes the ones before it. "scalar": portable C++;
#: "avx2": AVX2 + FMA; "avx512": AVX-512 F/BW/VL/DQ k-NN micro-kernel; "avx512_bf16": vdpbf16ps dot products for
#: knn's precision="bf16". Results are bit-identical across levels (docs/knn.md: the one bf16 exception).
SIMD_LEVELS = ("scalar", "avx2", "avx512", "avx512_bf16")


def set_simd_level(level: Optional[str]) -> None:
    """Force the CPU kernels' SIMD level (tests run every level the CPU has); None: the best this CPU supports.

    Args:
        level: one of ``SIMD_LEVELS`` or None.

    Raises:
        ValueError: unknown level, or a level this CPU (or OS) does not support (the message lists the CPU's best).
    """
    C = load()
    if level is None:
        C.set_simd_enabled(True)
        return
    if level not in SIMD_LEVELS:
        raise ValueError(f"level must be one of {SIMD_LEVELS} or None; got {level!r}")
    if not C.set_simd_level(SIMD_LEVELS.index(level)):
        best = SIMD_LEVELS[C.cpu_simd_level()]
        raise ValueError(f"level {level!r} is not supported by this CPU (best: {best!r}; flags: {C.cpu_flags()})")


def simd_level() -> str:
    """The SIMD level in use (one of ``SIMD_LEVELS``)."""
    return SIMD_LEVELS[load().simd_level()]


def cpu_info() -> dict:
    """What the CPU kernels see and use: ``{"flags": {name: bool} (cpuid), "best_level", "level", "knn_kernel":
    {"fp32": name, "bf16": name}}`` (e.g. ``"avx512 12x32"``: the k-NN micro-kernel and its register tile)."""
    C = load()
    return {"flags": dict(C.cpu_flags()), "best_level": SIMD_LEVELS[C.cpu_simd_level()], "level": simd_level(),
            "knn_kernel": {"fp32": C.knn_topk_kernel_name(0), "bf16": C.knn_topk_kernel_name(1)}}


def set_simd_enabled(enabled: bool) -> None:
    """True: the best SIMD level this CPU supports (the default); False: the scalar paths (``set_simd_level``)."""
    load().set_simd_enabled(bool(enabled))


def simd_enabled() -> bool:
    """Whether a vectorised level is in use (``simd_level() != "scalar"``)."""
    return bool(load().simd_enabled())


def set_knn_symmetric_enabled(enabled: bool) -> None:
    """Allow (True, default) or forbid (False) knn_topk's symmetric graph build (x is y with exclude_self: each pair
    of row blocks computed once, half the FLOPs). Results are identical either way; tests run both."""
    load().knn_topk_set_symmetric(bool(enabled))


def knn_symmetric_enabled() -> bool:
    """Whether knn_topk may use the symmetric graph build."""
    return bool(load().knn_topk_symmetric_enabled())
