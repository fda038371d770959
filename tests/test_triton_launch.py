"""Launch geometry of the persistent Triton kernels (``icfrr_fast.triton._launch``), checked without a GPU: the
programs resident on one SM follow from a compiled kernel's registers, shared memory and warps and the
architecture's limits (the CUDA occupancy rules), and the launchers size their grid from the kernel they compiled.
A fake compiled kernel stands in for Triton's ``CompiledKernel`` (``n_regs``/``n_spills`` need a GPU to load)."""

from __future__ import annotations

import types

import pytest
import torch

from icfrr_fast.triton import _launch
from icfrr_fast.triton._launch import ARCH_LIMITS, KernelResources, grid_programs, resident_programs

H100, A100 = ARCH_LIMITS[90], ARCH_LIMITS[80]


@pytest.mark.parametrize("n_regs, shared, warps, limits, want", [
    (32, 0, 4, H100, 16),          # threads: 2048 / 128
    (32, 0, 1, H100, 32),          # the CTA limit (64 by threads)
    (255, 0, 8, H100, 1),          # 255 regs -> 8192 per warp -> 8 warps per SM
    (128, 0, 4, H100, 4),          # 4096 per warp -> 16 warps -> 4 CTAs
    (129, 0, 4, H100, 3),          # 4128 -> 4352 per warp (256-register units) -> 15 warps -> 3 CTAs
    (64, 100 * 1024, 4, H100, 2),  # 101 KB with the reserved 1 KB: 2 in 228 KB
    (64, 100 * 1024, 4, A100, 1),  # 1 in 164 KB
    (64, 113 * 1024, 4, H100, 2),  # 114 KB twice is exactly 228 KB
    (64, 113 * 1024 + 1, 4, H100, 1),  # one byte more rounds up to the next 128-byte unit
    (64, 228 * 1024, 4, H100, 0),  # beyond the per-block maximum: does not fit at all
    (168, 48 * 1024, 8, H100, 1),  # registers bind (168 * 32 = 5376 per warp -> 12 warps)
])
def test_resident_programs(n_regs, shared, warps, limits, want):
    assert resident_programs(n_regs, shared, warps, limits) == want


def test_resident_programs_rejects_nonsense():
    with pytest.raises(ValueError, match="num_warps=0"):
        resident_programs(32, 0, 0, H100)


def _fake_compiled(n_regs, n_spills, shared, num_warps):
    return types.SimpleNamespace(n_regs=n_regs, n_spills=n_spills,
                                 metadata=types.SimpleNamespace(shared=shared, num_warps=num_warps))


def test_kernel_resources_of_compiled_kernel():
    r = KernelResources.of(_fake_compiled(128, 0, 48 * 1024, 4))
    assert r == KernelResources(n_regs=128, n_spills=0, shared=48 * 1024, num_warps=4)
    assert r.per_sm(H100) == 4 and r.per_sm(A100) == 3  # registers bind on sm_90, shared memory on sm_80


def test_grid_programs_is_one_wave_capped_by_work():
    assert grid_programs(10_000, 132, 3) == 396
    assert grid_programs(7, 132, 3) == 7
    assert grid_programs(10_000, 132, 0) == 132  # nothing fits: one per SM, the launch reports the error


class _FakeKernel:
    """Records warmup and launch: warmup returns a fake compiled kernel of the given resources."""

    def __init__(self, compiled):
        self.compiled, self.warmups, self.launches = compiled, [], []

    def warmup(self, *args, grid, **options):
        self.warmups.append((args, grid, options))
        return self.compiled

    def __getitem__(self, grid):
        return lambda *args, **options: self.launches.append((args, grid, options))


@pytest.mark.parametrize("cc, sms, n_regs, shared, warps, n_blocks, want", [
    ((9, 0), 132, 255, 0, 8, 10_000, 132),          # one 255-register CTA of 8 warps per SM
    ((9, 0), 132, 96, 60 * 1024, 4, 10_000, 396),   # shared memory binds: 3 per SM
    ((8, 0), 108, 96, 60 * 1024, 4, 10_000, 216),   # 2 per SM in 164 KB
    ((9, 0), 132, 64, 0, 4, 50, 50),                # capped by the work
])
def test_launch_persistent_sizes_the_grid_from_the_compiled_kernel(monkeypatch, cc, sms, n_regs, shared, warps,
                                                                   n_blocks, want):
    props = types.SimpleNamespace(multi_processor_count=sms, major=cc[0], minor=cc[1])
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    kernel = _FakeKernel(_fake_compiled(n_regs, 0, shared, warps))
    made = []

    def make_args(P):
        made.append(P)
        return ("scratch", P)

    P = _launch.launch_persistent(kernel, torch.device("cuda", 0), n_blocks, make_args, {"num_warps": warps})
    assert P == want
    assert made == [2, want]  # warmup with 2 programs' scratch, then the launch's own
    assert kernel.warmups[0][1] == (2,) and kernel.warmups[0][2] == {"num_warps": warps}
    assert kernel.launches == [(("scratch", want), (want,), {"num_warps": warps})]


def test_launch_persistent_in_the_interpreter_and_with_a_given_grid():
    kernel = _FakeKernel(None)
    assert _launch.launch_persistent(kernel, torch.device("cpu"), 9, lambda P: (P,), {}) == 2
    assert _launch.launch_persistent(kernel, torch.device("cpu"), 9, lambda P: (P,), {}, programs=5) == 5
    assert kernel.warmups == [] and [g for _, g, _ in kernel.launches] == [(2,), (5,)]


def test_unknown_architecture_uses_the_device_properties(monkeypatch):
    props = types.SimpleNamespace(multi_processor_count=84, major=8, minor=6, regs_per_multiprocessor=65536,
                                  shared_memory_per_multiprocessor=100 * 1024, shared_memory_per_block_optin=99 * 1024,
                                  max_threads_per_multi_processor=1536)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    lim = _launch.arch_limits(torch.device("cuda", 0))
    assert (lim.smem_per_sm, lim.max_threads) == (100 * 1024, 1536)
    assert resident_programs(32, 0, 8, lim) == 6  # 1536 threads / 256
