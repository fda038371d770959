"""Fused similarity + top-K Triton kernel run eagerly under TRITON_INTERPRET=1 (conftest.py) on CPU tensors, against
the CPU op ``icfrr_fast::knn_topk`` (C++) and the float64 oracle ``reference.knn_topk``.

Features are small integers, so every product and sum is exact in fp32 whatever the order (and bf16/fp16 hold them
exactly): "ip", "l2sq" and "l2" scores are then identical on every backend, ties included, so ids and values must be
identical; "cosine" multiplies by rounded inverse norms, so it is compared tie-aware with a tolerance. Shapes are off
the 16 x 16 x 16 interpreter tiles (masks and tails in Q, G and D), Q spans several row blocks per program, and k
reaches G (- 1 with exclude_self).
"""

from __future__ import annotations

import pytest
import torch
import triton  # noqa: F401  -- no skip: without triton these tests must fail, not vanish

from icfrr_fast import ops, reference
from icfrr_fast.triton import knn_topk as tri
from icfrr_fast.triton._launch import SelectConfig
from _assertions import assert_knn_equal_with_ties, assert_rankings_equal, assert_values_equal


def _int_features(n: int, d: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-4, 5, (n, d), generator=gen).to(dtype)


CASES = [
    pytest.param(dict(Q=37, G=45, D=20, k=5, metric="ip", dtype=torch.float32), id="ip-fp32-tails"),
    pytest.param(dict(Q=18, G=18, D=7, k=17, metric="l2", dtype=torch.float64, exclude_self=True),
                 id="l2-fp64-self-k=G-1"),
    pytest.param(dict(Q=9, G=40, D=33, k=16, metric="cosine", dtype=torch.float32), id="cosine-fp32-D=33"),
    pytest.param(dict(Q=7, G=40, D=16, k=3, metric="ip", dtype=torch.bfloat16), id="ip-bf16"),
    pytest.param(dict(Q=20, G=33, D=5, k=4, metric="l2", dtype=torch.float16), id="l2-fp16"),
    pytest.param(dict(Q=5, G=29, D=9, k=29, metric="ip", dtype=torch.float32, largest=False), id="ip-smallest-k=G"),
    pytest.param(dict(Q=6, G=50, D=12, k=6, metric="l2", dtype=torch.float32, largest=True), id="l2-farthest"),
    pytest.param(dict(Q=40, G=40, D=16, k=8, metric="cosine", dtype=torch.float16, exclude_self=True),
                 id="cosine-fp16-self"),
    pytest.param(dict(Q=11, G=30, D=10, k=7, metric="l2sq", dtype=torch.float32, precision="bf16"),
                 id="l2sq-fp32-as-bf16"),
    pytest.param(dict(Q=9, G=37, D=6, k=5, metric="ip", dtype=torch.float32, exclude_self=True, row_offset=20),
                 id="ip-self-row_offset=20"),
]


@pytest.mark.parametrize("case", CASES)
def test_knn_topk_triton_matches_cpu(case):
    case = dict(case)
    Q, G, D, k, metric, dtype = (case.pop(n) for n in ("Q", "G", "D", "k", "metric", "dtype"))
    exclude_self = case.pop("exclude_self", False)
    row_offset = case.pop("row_offset", 0)
    precision = case.pop("precision", "fp32")
    largest = case.pop("largest", metric not in ("l2", "l2sq"))
    y = _int_features(G, D, dtype, seed=D)
    x = y[row_offset:row_offset + Q] if exclude_self else _int_features(Q, D, dtype, seed=Q + G)
    args = (k, metric, largest, exclude_self, row_offset, precision)
    values, indices = tri.knn_topk_triton(x, y, *args, alloc=ops.alloc_output)
    cpu_v, cpu_i = ops.knn_topk(x, y, *args)
    ref_v, ref_i = reference.knn_topk(x, y, k, metric=metric, exclude_self=exclude_self, largest=largest,
                                      row_offset=row_offset, precision=precision)
    assert values.dtype == cpu_v.dtype and indices.dtype == torch.int64
    if metric == "cosine":
        assert_knn_equal_with_ties(values, indices, ref_v, ref_i, atol=1e-5, rtol=1e-5)
        assert_knn_equal_with_ties(values, indices, cpu_v, cpu_i, atol=1e-5, rtol=1e-5)
    else:
        assert_rankings_equal(indices, cpu_i, "indices vs CPU op")
        assert_rankings_equal(indices, ref_i, "indices vs reference")
        assert_values_equal(values, cpu_v, "values vs CPU op")


def test_knn_topk_triton_config_shapes():
    """A non-default tile shape (32-row blocks, 16-wide tiles, a merge every tile) gives the same ids: the tiling is
    not part of the result."""
    x = _int_features(70, 24, torch.float32, seed=1)
    y = _int_features(61, 24, torch.float32, seed=2)
    cfg = SelectConfig(block_m=32, block_n=16, block_k=16)
    v, i = tri.knn_topk_triton(x, y, 9, "l2", config=cfg, alloc=ops.alloc_output)
    rv, ri = ops.knn_topk(x, y, 9, "l2", False, False, 0, "fp32")
    assert_rankings_equal(i, ri, "indices")
    assert_values_equal(v, rv, "values")
