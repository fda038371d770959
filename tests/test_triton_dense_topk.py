"""Dense per-row top-k Triton kernel (the CUDA kernel of ``icfrr_fast::dense_topk`` and the first stage of the ICFRR
CUDA kernel), run eagerly under TRITON_INTERPRET=1 (conftest.py) against the CPU op and the reference.

Integer-valued data makes ties frequent, so the tie rule (smaller column first) is checked on every case; values
are copied, never recomputed, so they must be bit-identical. Cases reach both collector paths: whole-tile queueing
(k close to C) and candidate extraction (k small against many columns).
"""

from __future__ import annotations

import pytest
import torch
import triton  # noqa: F401  -- no skip: without triton these tests must fail, not vanish

from icfrr_fast import ops, reference
from icfrr_fast.triton import dense_topk as tri
from _assertions import assert_rankings_equal, assert_values_equal

CASES = [
    pytest.param(dict(R=5, C=37, k=5), id="C=37-k=5"),
    pytest.param(dict(R=9, C=50, k=12, largest=False, exclude_self=True, row_offset=3, dtype=torch.float64),
                 id="smallest-self-offset-fp64"),
    pytest.param(dict(R=3, C=17, k=16, exclude_self=True), id="k=C-1"),
    pytest.param(dict(R=7, C=40, k=3, dtype=torch.bfloat16), id="bf16"),
    pytest.param(dict(R=6, C=200, k=2, values=1000), id="extraction-path-C=200"),
    pytest.param(dict(R=2, C=33, k=33, values=3), id="k=C-heavy-ties"),
]


@pytest.mark.parametrize("case", CASES)
def test_dense_topk_triton_matches_cpu(case):
    case = dict(case)
    R, C, k = case.pop("R"), case.pop("C"), case.pop("k")
    gen = torch.Generator().manual_seed(R * C)
    x = torch.randint(-case.pop("values", 6), 6, (R, C), generator=gen).to(case.pop("dtype", torch.float32))
    args = (k, case.get("largest", True), case.get("exclude_self", False), case.get("row_offset", 0))
    v, i = tri.dense_topk_triton(x, *args, alloc=ops.alloc_output)
    cpu_v, cpu_i = ops.dense_topk(x, *args)
    ref_v, ref_i = reference.dense_topk(x, *args)
    assert_rankings_equal(i, cpu_i, "indices vs CPU op")
    assert_rankings_equal(i, ref_i, "indices vs reference")
    assert v.dtype == x.dtype
    assert_values_equal(v, ref_v, "values")


def test_dense_topk_triton_ranked_float64_values():
    """The form the ICFRR kernel consumes: float64 values as ranked (negated distances), exact."""
    x = torch.randn(4, 30, dtype=torch.float32)
    v, i = tri.dense_topk_triton(x, 10, False, signed_values=False, value_dtype=torch.float64, alloc=ops.alloc_output)
    ref_v, ref_i = reference.dense_topk(x, 10, largest=False)
    assert_rankings_equal(i, ref_i)
    assert_values_equal(v, -ref_v.to(torch.float64))


def test_dense_config_by_k():
    """The GPU tile shape the launcher picks: 16-row blocks for a 1,024-wide buffer (no spills on sm_90), else the
    default; the shape is not part of the result (the tests above run other shapes in the interpreter)."""
    from icfrr_fast.triton.dense_topk import DENSE_CONFIG, dense_config

    assert dense_config(256) is DENSE_CONFIG and dense_config(512) is DENSE_CONFIG
    assert dense_config(4096) is DENSE_CONFIG
    for k in (513, 1000, 1024):
        assert dense_config(k).block_m == 16 and dense_config(k).block_n == DENSE_CONFIG.block_n
