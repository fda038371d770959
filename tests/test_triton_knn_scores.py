"""Dense k-NN scores Triton kernel (``icfrr_fast.triton.knn_scores``) run under TRITON_INTERPRET=1 (conftest.py) on
CPU tensors, against the CPU op ``icfrr_fast::knn_scores`` and against the fused k-NN kernel whose tiles it shares.

Small-integer features make every product and sum exact in fp32 in any order, so "ip", "l2sq" and "l2" must equal
the CPU op bit for bit; "cosine" multiplies by rounded inverse norms in another association than the C++ kernel, so
it is compared with a tolerance there -- and bit for bit, like every metric on random real-valued features, with
the values ``knn_topk_triton`` selects (the same arithmetic, the same tiles).
"""

from __future__ import annotations

import pytest
import torch
import triton  # noqa: F401  -- no skip: without triton these tests must fail, not vanish

from icfrr_fast import ops, reference
from icfrr_fast.triton.knn_scores import knn_scores_triton
from icfrr_fast.triton.knn_topk import knn_topk_triton
from _assertions import assert_values_equal


def _int_features(n: int, d: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-4, 5, (n, d), generator=gen).to(dtype)


CASES = [
    pytest.param(dict(Q=19, G=37, D=20, metric="ip", dtype=torch.float32), id="ip-fp32-tails"),
    pytest.param(dict(Q=17, G=18, D=7, metric="l2", dtype=torch.float64), id="l2-fp64"),
    pytest.param(dict(Q=9, G=40, D=33, metric="cosine", dtype=torch.float32), id="cosine-fp32-D=33"),
    pytest.param(dict(Q=7, G=40, D=16, metric="ip", dtype=torch.bfloat16), id="ip-bf16"),
    pytest.param(dict(Q=20, G=33, D=5, metric="l2", dtype=torch.float16), id="l2-fp16"),
    pytest.param(dict(Q=11, G=30, D=10, metric="l2sq", dtype=torch.float32, precision="bf16"), id="l2sq-as-bf16"),
    pytest.param(dict(Q=5, G=21, D=9, metric="l2sq", dtype=torch.float64, precision="bf16"), id="l2sq-fp64-as-bf16"),
]


@pytest.mark.parametrize("case", CASES)
def test_knn_scores_triton_matches_cpu(case):
    case = dict(case)
    Q, G, D, metric, dtype = (case.pop(n) for n in ("Q", "G", "D", "metric", "dtype"))
    precision = case.pop("precision", "fp32")
    x, y = _int_features(Q, D, dtype, seed=Q), _int_features(G, D, dtype, seed=G + D)
    got = knn_scores_triton(x, y, metric, precision, alloc=ops.alloc_output)
    cpu = ops.knn_scores(x, y, metric, precision)
    assert got.dtype == cpu.dtype and got.shape == (Q, G)
    if metric == "cosine":
        torch.testing.assert_close(got, cpu, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(got.double(), reference.knn_scores(x, y, metric, precision), atol=1e-6, rtol=1e-6)
    else:
        assert_values_equal(got, cpu, "scores vs CPU op")


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2", "l2sq"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_knn_scores_triton_are_the_scores_knn_topk_ranks(metric, dtype):
    """Random real-valued features (rounding everywhere): the values knn_topk selects are the dense scores at the
    selected ids, bit for bit, and they are the best k of them."""
    gen = torch.Generator().manual_seed(7)
    x, y = torch.randn(21, 35, generator=gen, dtype=dtype), torch.randn(38, 35, generator=gen, dtype=dtype)
    largest = metric in ("ip", "cosine")
    scores = knn_scores_triton(x, y, metric, alloc=ops.alloc_output)
    v, i = knn_topk_triton(x, y, 9, metric, largest, alloc=ops.alloc_output)
    assert_values_equal(scores.gather(1, i), v, "knn_topk values vs dense scores")
    best = scores.sort(dim=1, descending=largest, stable=True)
    assert_values_equal(best.values[:, :9], v, "the best 9 of the dense scores")


def test_knn_scores_triton_sqrt_l2_off_gives_the_squared_distance():
    x, y = _int_features(6, 5, torch.float32, 1), _int_features(23, 5, torch.float32, 2)
    assert_values_equal(knn_scores_triton(x, y, "l2", sqrt_l2=False), ops.knn_scores(x, y, "l2sq", "fp32"))


def test_knn_scores_cuda_kernel_uses_triton(monkeypatch):
    """The op's CUDA kernel, called directly on CPU tensors (the interpreter), runs the Triton kernel: no warning."""
    import warnings

    monkeypatch.setattr(ops, "_warned", set())
    x, y = _int_features(13, 8, torch.float32, 3), _int_features(29, 8, torch.float32, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = ops._knn_scores_cuda(x, y, "l2sq", "fp32")
    assert_values_equal(got, ops.knn_scores(x, y, "l2sq", "fp32"))
    with pytest.raises(ValueError, match="metric must be one of"):
        ops._knn_scores_cuda(x, y, "manhattan", "fp32")
