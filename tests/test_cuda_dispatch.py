"""The CUDA kernels registered in ``icfrr_fast.ops`` and their fallbacks, tested where no GPU exists.

The kernel functions are called directly with CPU tensors: with Triton available they run the Triton kernels in the
interpreter (conftest.py); without it (mocked) they run the CUDA build of the C++ core -- mocked by a module whose
``icfrr_rerank_cuda`` forwards the very same pointers to the CPU kernel, so the argument plumbing is checked end to
end -- or the bounded exact fallbacks (row-batched sorts, CPU kernels on host copies), each with exactly one warning.
"""

from __future__ import annotations

import subprocess
import sys
import types
import warnings

import pytest
import torch
import triton  # noqa: F401  -- no skip: without triton these tests must fail, not vanish

from icfrr_fast import _native, ops, reference
from _assertions import assert_knn_equal_with_ties, assert_rankings_equal, assert_values_equal


def _problem(Q=3, G=30, K_g=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(Q, G, generator=gen)
    g = torch.randn(G, 3, generator=gen, dtype=torch.float64)
    nbr = reference.dense_topk(torch.cdist(g, g), K_g, largest=False, exclude_self=True)[1].to(torch.int32)
    return scores, nbr


ARGS = (6, 0.5, 3, "reference", True, 30, 12, True, False)  # k_q, beta, iters, semantics, largest, L, k, hist, stop


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(ops, "_warned", set())


def _no_triton(monkeypatch, cuda_build: bool):
    monkeypatch.setattr(ops, "_triton_found", False)
    monkeypatch.setattr(ops, "_cuda_build_available", lambda: cuda_build)


class _FakeCudaBuild(types.SimpleNamespace):
    """Stands in for a ``_C`` compiled with nvcc: runs the CPU kernel on the pointers it receives (CPU tensors)."""

    has_cuda = True

    def __init__(self):
        super().__init__(calls=[])
        self._real = _native.load()

    def icfrr_rerank_cuda_scratch_bytes(self, G, K_g, k_q, depth):
        return 8 * (G + depth)

    def icfrr_rerank_cuda(self, *, scratch, workers, stream, **kw):
        self.calls.append(dict(kw, scratch=scratch, workers=workers, stream=stream))
        self._real.icfrr_rerank(**kw, num_threads=1)


def test_cuda_kernels_are_registered():
    for op in ("icfrr_rerank", "icfrr_candidates", "dense_topk", "knn_topk", "knn_scores"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"icfrr_fast::{op}", "CUDA"), op
        assert "cuda" in ops.KERNEL_DEVICES[op], op


def test_icfrr_cuda_kernel_uses_triton(fresh_warnings):
    scores, nbr = _problem()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the Triton path warns about nothing
        got = ops._icfrr_rerank_cuda(scores, nbr, *ARGS)
    want = ops.icfrr_rerank(scores, nbr, *ARGS)
    assert_rankings_equal(got[1], want[1])
    assert_values_equal(got[0], want[0])
    assert_rankings_equal(got[2], want[2])


def test_dense_topk_cuda_kernel_uses_triton(fresh_warnings):
    x = torch.randint(0, 5, (4, 21)).to(torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v, i = ops._dense_topk_cuda(x, 6, False, True, 0)
    rv, ri = ops.dense_topk(x, 6, False, True, 0)
    assert_rankings_equal(i, ri)
    assert_values_equal(v, rv)


def test_knn_topk_cuda_kernel_uses_triton(fresh_warnings):
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(-3, 4, (6, 10), generator=gen).float()
    y = torch.randint(-3, 4, (23, 10), generator=gen).float()
    args = (5, "l2", False, False, 0, "fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v, i = ops._knn_topk_cuda(x, y, *args)
    rv, ri = ops.knn_topk(x, y, *args)
    assert_rankings_equal(i, ri)
    assert_values_equal(v, rv)


def test_knn_topk_without_triton_runs_the_cpu_kernel(monkeypatch, fresh_warnings):
    _no_triton(monkeypatch, cuda_build=False)
    x, y = torch.randn(4, 8), torch.randn(19, 8)
    with pytest.warns(RuntimeWarning, match="knn_topk on CUDA: triton is not installed; running the CPU kernel"):
        v, i = ops._knn_topk_cuda(x, y, 3, "ip", True, False, 0, "fp32")
    want = ops.knn_topk(x, y, 3, "ip", True, False, 0, "fp32")
    assert v.dtype == torch.float32
    assert_rankings_equal(i, want[1])
    assert_values_equal(v, want[0])


def test_knn_scores_without_triton_runs_the_cpu_kernel(monkeypatch, fresh_warnings):
    _no_triton(monkeypatch, cuda_build=False)
    x, y = torch.randn(4, 8), torch.randn(19, 8)
    with pytest.warns(RuntimeWarning, match="knn_scores on CUDA: triton is not installed; running the CPU kernel"):
        got = ops._knn_scores_cuda(x, y, "cosine", "fp32")
    assert_values_equal(got, ops.knn_scores(x, y, "cosine", "fp32"))


@pytest.mark.parametrize("metric, largest, exclude_self, row_offset", [
    ("l2", False, False, 0), ("l2", False, True, 3), ("ip", True, True, 0), ("cosine", True, False, 0),
    ("l2sq", True, False, 0)])
def test_knn_topk_beyond_the_on_chip_k_sorts_knn_scores_in_row_batches(monkeypatch, fresh_warnings, metric, largest,
                                                                      exclude_self, row_offset):
    """k above the Triton limit (lowered to 4 here): the knn_scores kernel on row batches (3 rows of 23 per batch)
    and a stable sort give knn_topk's answer: integer features, so ids and values match the CPU op exactly (ties
    included); cosine within rounding."""
    monkeypatch.setattr(ops, "TRITON_MAX_K", 4)
    monkeypatch.setattr(ops, "_FALLBACK_BATCH_ELEMENTS", 3 * 23)
    gen = torch.Generator().manual_seed(2)
    y = torch.randint(-2, 3, (23, 6), generator=gen).float()
    x = y[row_offset:row_offset + 8] if exclude_self else torch.randint(-2, 3, (8, 6), generator=gen).float()
    args = (9, metric, largest, exclude_self, row_offset, "fp32")
    with pytest.warns(RuntimeWarning, match=r"k = 9 > 4 \(Triton on-chip limit\); running the knn_scores"):
        v, i = ops._knn_topk_cuda(x, y, *args)
    rv, ri = ops.knn_topk(x, y, *args)
    if metric == "cosine":
        assert_knn_equal_with_ties(v, i, rv, ri, atol=1e-6, rtol=1e-6)
    else:
        assert_rankings_equal(i, ri)
        assert_values_equal(v, rv)


def test_icfrr_without_triton_runs_cuda_build_once_warned(monkeypatch, fresh_warnings):
    scores, nbr = _problem()
    want = ops.icfrr_rerank(scores, nbr, *ARGS)
    _no_triton(monkeypatch, cuda_build=True)
    fake = _FakeCudaBuild()
    monkeypatch.setattr(_native, "load", lambda: fake)
    monkeypatch.setattr(ops, "_cuda_stream", lambda device: 1234)
    with pytest.warns(RuntimeWarning, match="triton is not installed; running the CUDA build"):
        got = ops._icfrr_rerank_cuda(scores, nbr, *ARGS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process, not per call
        ops._icfrr_rerank_cuda(scores, nbr, *ARGS)
    call = fake.calls[0]
    assert call["stream"] == 1234 and 1 <= call["workers"] <= scores.shape[0]
    assert call["depth"] == 30 and call["k"] == 12 and call["out_history"] != 0
    assert_rankings_equal(got[1], want[1])
    assert_values_equal(got[0], want[0])
    assert_rankings_equal(got[2], want[2])


def test_icfrr_without_triton_or_cuda_build_runs_the_cpu_kernel(monkeypatch, fresh_warnings):
    _no_triton(monkeypatch, cuda_build=False)
    monkeypatch.setattr(ops, "_FALLBACK_BATCH_ELEMENTS", 2 * 30)  # query batches of 2 rows
    scores, nbr = _problem(Q=5)
    with pytest.warns(RuntimeWarning, match="no CUDA build; running the CPU kernel on host copies of query batches"):
        got = ops._icfrr_rerank_cuda(scores, nbr, *ARGS)
    want = ops.icfrr_rerank(scores, nbr, *ARGS)
    assert_rankings_equal(got[1], want[1])
    assert_values_equal(got[0], want[0])
    assert_rankings_equal(got[2], want[2])


def test_icfrr_deeper_than_triton_holds_falls_back(monkeypatch, fresh_warnings):
    monkeypatch.setattr(ops, "TRITON_MAX_DEPTH", 16)
    monkeypatch.setattr(ops, "_cuda_build_available", lambda: False)
    scores, nbr = _problem()
    with pytest.warns(RuntimeWarning, match=r"depth L = 30 > 16 candidates"):
        got = ops._icfrr_rerank_cuda(scores, nbr, *ARGS)
    assert_rankings_equal(got[1], ops.icfrr_rerank(scores, nbr, *ARGS)[1])


def test_dense_topk_without_triton_sorts_row_batches(monkeypatch, fresh_warnings):
    _no_triton(monkeypatch, cuda_build=False)
    x = torch.randn(3, 20)
    with pytest.warns(RuntimeWarning, match="triton is not installed; running a stable torch.sort of row batches"):
        v, i = ops._dense_topk_cuda(x, 4, True, False, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops._dense_topk_cuda(x, 4, True, False, 0)
    assert_rankings_equal(i, ops.dense_topk(x, 4, True, False, 0)[1])


@pytest.mark.parametrize("largest, exclude_self, row_offset, k", [
    (True, False, 0, 7), (False, True, 0, 7), (True, True, 5, 12), (False, True, 2, 17), (True, False, 0, 18)])
def test_dense_topk_beyond_the_on_chip_k_sorts_row_batches(monkeypatch, fresh_warnings, largest, exclude_self,
                                                           row_offset, k):
    """Ties everywhere (values 0..3), batches of 4 rows, self exclusion at an offset: the CPU op's answer."""
    monkeypatch.setattr(ops, "TRITON_MAX_K", 4)
    monkeypatch.setattr(ops, "_FALLBACK_BATCH_ELEMENTS", 4 * 18)
    x = torch.randint(0, 4, (11, 18), generator=torch.Generator().manual_seed(3)).to(torch.float16)
    with pytest.warns(RuntimeWarning, match=rf"k = {k} > 4 \(Triton on-chip limit\); running a stable torch.sort"):
        v, i = ops._dense_topk_cuda(x, k, largest, exclude_self, row_offset)
    rv, ri = ops.dense_topk(x, k, largest, exclude_self, row_offset)
    assert v.dtype == rv.dtype == torch.float16
    assert_rankings_equal(i, ri)
    assert_values_equal(v, rv)


def test_cuda_workers_bounded():
    assert ops._cuda_workers(10, 1 << 20, torch.device("cpu")) == 10
    assert ops._cuda_workers(10**6, 1 << 30, torch.device("cpu")) == 1  # 1 GiB per worker: a 1 GiB budget
    assert ops._cuda_workers(10**6, 1, torch.device("cpu")) == 1 << 16


def test_choosing_a_cuda_path_does_not_import_triton():
    code = (
        "import sys, icfrr_fast\n"
        "from icfrr_fast import ops\n"
        "assert ops._triton_available()\n"
        "assert 'triton' not in sys.modules, 'looked up, not imported'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
