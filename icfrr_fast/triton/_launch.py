"""Launch arithmetic shared by the Triton launchers: interpreter detection, persistent grid size, block shapes.

Every kernel of this package is *persistent*: it launches a fixed number of programs (a few per SM on a GPU) that
loop over row blocks, so per-program scratch (queues, buffers, hash tables) is bounded by the grid, not by the
problem size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch


def interpreted(kernel) -> bool:
    """True when ``kernel`` was decorated under ``TRITON_INTERPRET=1`` (it then runs on CPU tensors)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (>= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass(frozen=True)
class ArchLimits:
    """Per-SM resources of a GPU architecture that bound how many programs (CTAs) are resident at once.

    Attributes:
        regs_per_sm: 32-bit registers per SM. reg_unit: registers are allocated per warp in units of this many.
        smem_per_sm: shared memory per SM (bytes) usable by CTAs. smem_per_block: the most one CTA may use.
        smem_reserved: shared memory the driver reserves per resident CTA (bytes). smem_unit: allocation granularity.
        max_threads: resident threads per SM. max_blocks: resident CTAs per SM.
    """

    regs_per_sm: int = 65536
    reg_unit: int = 256
    smem_per_sm: int = 228 * 1024
    smem_per_block: int = 227 * 1024
    smem_reserved: int = 1024
    smem_unit: int = 128
    max_threads: int = 2048
    max_blocks: int = 32


#: CUDA occupancy limits (CUDA C++ Programming Guide, "Compute capabilities", table of technical specifications):
#: A100 (sm_80): 164 KB of shared memory per SM, 163 KB per block; H100/H200 (sm_90): 228 KB per SM, 227 KB per block.
ARCH_LIMITS = {
    80: ArchLimits(smem_per_sm=164 * 1024, smem_per_block=163 * 1024),
    90: ArchLimits(),
}


def arch_limits(device: torch.device) -> ArchLimits:
    """The limits of ``device``'s architecture: the table for sm_80/sm_90, the device's reported properties else."""
    props = torch.cuda.get_device_properties(device)
    known = ARCH_LIMITS.get(props.major * 10 + props.minor)
    if known is not None:
        return known
    per_sm = getattr(props, "shared_memory_per_multiprocessor", 100 * 1024)
    return ArchLimits(
        regs_per_sm=getattr(props, "regs_per_multiprocessor", 65536), smem_per_sm=per_sm,
        smem_per_block=getattr(props, "shared_memory_per_block_optin", per_sm - 1024),
        max_threads=getattr(props, "max_threads_per_multi_processor", 1536), max_blocks=16)


def resident_programs(n_regs: int, shared: int, num_warps: int, limits: ArchLimits) -> int:
    """Programs (CTAs) of one kernel resident on one SM at once: the tightest of the thread, register, shared
    memory and CTA limits, as the CUDA occupancy calculator computes them.

        by threads:   floor(max_threads / (32 num_warps))
        by registers: floor(floor(regs_per_sm / ceil(32 n_regs / reg_unit) reg_unit) / num_warps)
        by shared:    floor(smem_per_sm / ceil((shared + smem_reserved) / smem_unit) smem_unit)
        result:       min(those, max_blocks); 0 when one CTA does not fit at all

    Args:
        n_regs: registers per thread of the compiled kernel. shared: its shared memory per CTA (bytes).
        num_warps: warps per CTA. limits: the architecture's limits.
    """
    if num_warps < 1 or n_regs < 0 or shared < 0:
        raise ValueError(f"bad kernel resources: n_regs={n_regs}, shared={shared}, num_warps={num_warps}")
    if shared > limits.smem_per_block:
        return 0
    by_threads = limits.max_threads // (32 * num_warps)
    regs_per_warp = -(-32 * n_regs // limits.reg_unit) * limits.reg_unit
    by_regs = (limits.regs_per_sm // regs_per_warp) // num_warps if regs_per_warp else limits.max_blocks
    smem = -(-(shared + limits.smem_reserved) // limits.smem_unit) * limits.smem_unit
    by_smem = limits.smem_per_sm // smem
    return max(0, min(by_threads, by_regs, by_smem, limits.max_blocks))


@dataclass(frozen=True)
class KernelResources:
    """What the compiler made of one kernel: registers per thread, spilled bytes per thread, shared memory per CTA
    (bytes) and warps per CTA."""

    n_regs: int
    n_spills: int
    shared: int
    num_warps: int

    @classmethod
    def of(cls, compiled) -> "KernelResources":
        """From a Triton ``CompiledKernel`` (``n_regs``/``n_spills`` exist once its binary is loaded on a GPU)."""
        init = getattr(compiled, "_init_handles", None)
        if init is not None and getattr(compiled, "n_regs", None) is None:
            init()
        md = compiled.metadata
        return cls(int(compiled.n_regs), int(compiled.n_spills), int(md.shared), int(md.num_warps))

    def per_sm(self, limits: ArchLimits) -> int:
        """Resident programs per SM (``resident_programs``)."""
        return resident_programs(self.n_regs, self.shared, self.num_warps, limits)


def grid_programs(n_blocks: int, sms: int, per_sm: int) -> int:
    """Programs of a persistent grid: one full wave (``per_sm`` on each of ``sms`` SMs), capped by the work and at
    least 1 (a kernel whose CTA does not fit is left to fail at launch with the driver's error)."""
    return max(1, min(n_blocks, sms * max(1, per_sm)))


def persistent_programs(device: torch.device, n_blocks: int, compiled: Optional[Callable[[], object]] = None) -> int:
    """Programs of a persistent grid on ``device``: as many as are resident at once, capped by the work.

    On a GPU, ``compiled()`` returns the Triton ``CompiledKernel`` that will run (e.g. ``kernel.warmup(...)``); its
    registers and shared memory, with the architecture's limits (``arch_limits``), give the programs per SM
    (``resident_programs``), so the grid is exactly one wave. In the interpreter (CPU tensors) two programs are used,
    so tests exercise the loop over several row blocks per program and the reuse of per-program scratch.
    """
    if device.type != "cuda":
        return max(1, min(n_blocks, 2))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    per_sm = KernelResources.of(compiled()).per_sm(arch_limits(device)) if compiled is not None else 1
    return grid_programs(n_blocks, sms, per_sm)


def launch_persistent(kernel, device: torch.device, n_blocks: int, make_args: Callable[[int], tuple], options: dict,
                      programs: Optional[int] = None) -> int:
    """Launch ``kernel[(P,)](*make_args(P), **options)`` on a persistent grid of P programs and return P.

    P is ``programs`` when given, else ``persistent_programs``: on a GPU the kernel is first compiled (or found in
    Triton's cache) by ``kernel.warmup`` with the scratch of 2 programs -- an integer argument of 2 specialises like
    any grid size that is neither 1 nor a multiple of 16 -- and its registers and shared memory size the grid.
    ``make_args(P)`` allocates the per-program scratch for P programs.
    """
    if programs is None:
        programs = persistent_programs(device, n_blocks,
                                       lambda: kernel.warmup(*make_args(2), grid=(2,), **options))
    kernel[(programs,)](*make_args(programs), **options)
    return programs


@dataclass(frozen=True)
class SelectConfig:
    """Tile shape of a top-K selection kernel (``knn_topk``/``dense_topk``).

    Attributes:
        block_m: rows per program block. block_n: items per tile. block_k: features per ``tl.dot`` step (k-NN only).
        num_warps, num_stages: Triton launch options (the programs per SM come from the compiled kernel:
            ``persistent_programs``).
        merge_pairs: pairs per merge step (MR rows x KP): bounds the merge's registers, since the bitonic network
            keeps every pair and its partner live.
    """

    block_m: int
    block_n: int
    block_k: int = 64
    num_warps: int = 8
    num_stages: int = 3
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
