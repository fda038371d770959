"""Launch arithmetic shared by the Triton launchers: interpreter detection, persistent grid size, block shapes.

Every kernel of this package is *persistent*: it launches a fixed number of programs (a few per SM on a GPU) that
loop over row blocks, so per-program scratch (queues, buffers, hash tables) is bounded by the grid, not by the
problem size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch


def interpreted(kernel) -> bool:
    """True when ``kernel`` was decorated under ``TRITON_INTERPRET=1`` (it then runs on CPU tensors)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (>= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()


def persistent_programs(device: torch.device, n_blocks: int, per_sm: int) -> int:
    """Programs of a persistent grid: ``per_sm`` per streaming multiprocessor on a GPU, capped by the work.

    In the interpreter (CPU tensors) two programs are used, so tests exercise the loop over several row blocks
    per program and the reuse of per-program scratch.
    """
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(n_blocks, sms * per_sm))
    return max(1, min(n_blocks, 2))


@dataclass(frozen=True)
class SelectConfig:
    """Tile shape of a top-K selection kernel (``knn_topk``/``dense_topk``).

    Attributes:
        block_m: rows per program block. block_n: items per tile. block_k: features per ``tl.dot`` step (k-NN only).
        num_warps, num_stages: Triton launch options. per_sm: persistent programs per SM.
        merge_pairs: pairs per merge step (MR rows x KP): bounds the merge's registers, since the bitonic network
            keeps every pair and its partner live.
    """

    block_m: int
    block_n: int
    block_k: int = 64
    num_warps: int = 8
    num_stages: int = 3
    per_sm: int = 1
    merge_pairs: int = 512

    def collector_shape(self, k: int) -> dict:
        """Constexprs of the collector for k results: KP (buffer), QC (queue), CH (merge chunk), MR (merge rows).

        The queue holds two tiles' worth of candidates per row (a tile adds at most BLOCK_N); merges work on MR rows
        at a time so that an (MR, KP) pair tensor stays near ``merge_pairs`` elements (registers, not local
        memory). KP >= 16 keeps register layouts regular for tiny k.
        """
        kp = max(16, next_pow2(k))
        qc = 2 * self.block_n
        return dict(KP=kp, QC=qc, CH=min(qc, kp), MR=max(1, min(self.block_m, self.merge_pairs // kp)))


def collector_scratch(programs: int, block_m: int, shape: dict, device) -> Tuple[torch.Tensor, ...]:
    """Per-program scratch of the top-K collector (``_collector.py``), in kernel argument order: fill counts,
    threshold (value, id), queue (key, id) of QC slots and buffer (key, position) of KP slots, per row of a block."""
    P, bm, dev = programs, block_m, device
    return (
        torch.empty((P, bm), dtype=torch.int32, device=dev),
        torch.empty((P, bm), dtype=torch.float64, device=dev),
        torch.empty((P, bm), dtype=torch.int32, device=dev),
        torch.empty((P, bm, shape["QC"]), dtype=torch.int64, device=dev),
        torch.empty((P, bm, shape["QC"]), dtype=torch.int32, device=dev),
        torch.empty((P, bm, shape["KP"]), dtype=torch.int64, device=dev),
        torch.empty((P, bm, shape["KP"]), dtype=torch.int32, device=dev),
    )


def empty(shape, dtype: torch.dtype, device) -> torch.Tensor:
    """Default output allocator of the launchers: ``alloc(shape, dtype, device)`` (ops passes one that poisons
    outputs in tests)."""
    return torch.empty(shape, dtype=dtype, device=device)
