"""The Triton icfrr_candidates kernel under TRITON_INTERPRET=1 (conftest.py) on CPU tensors, against the CPU op (the
shared C++ core): identical orders, values and history, bit for bit.

Shapes are tiny (the interpreter runs every program in Python, about a second per 1024-element sort) but exercise
rows in any order (the kernel's initial sort) and already sorted (``rows_sorted``), padding, empty rows, -1 graph
entries, gallery_size > N, int32 and int64 ids, both semantics, early stop, distances, k < L, float64 and float16,
tied scores, more queries than programs (per-program scratch reused, the hash table emptied between queries).
"""

from __future__ import annotations

import pytest
import torch
import triton  # noqa: F401  -- no skip: without triton these tests must fail, not vanish

from icfrr_fast import ops, reference
from icfrr_fast.triton import icfrr_candidates as tric
from _assertions import assert_rankings_equal, assert_values_equal


def _graph(N: int, K: int, seed: int, holes: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(N, 3, generator=gen, dtype=torch.float64)
    nb = reference.dense_topk(torch.cdist(g, g), K, largest=False, exclude_self=True)[1].to(torch.int32)
    if holes:
        nb[torch.rand(nb.shape, generator=gen) < holes] = -1
    return nb


def _candidates(Q: int, L: int, N: int, seed: int, dtype=torch.float32, id_dtype=torch.int64, tied=False):
    """Random distinct ids in random order; rows of length L, L - 3, 0, ... (padding -1, scores NaN)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(N, generator=gen)[:L] for _ in range(Q)])
    scores = (torch.randint(0, 3, (Q, L), generator=gen).to(torch.float64) if tied
              else torch.randn(Q, L, generator=gen, dtype=torch.float64)).to(dtype)
    lengths = torch.tensor([L, max(0, L - 3), 0, L // 2, 1][:Q] + [L] * max(0, Q - 5))
    cut = torch.arange(L)[None, :] >= lengths[:, None]
    ids[cut] = -1
    scores[cut] = float("nan")
    return scores, ids.to(id_dtype)


CASES = [
    pytest.param(dict(Q=5, L=13, N=30, K=5, k_q=4, iters=3), id="any-order-padded"),
    pytest.param(dict(Q=4, L=10, N=25, K=6, k_q=3, iters=4, semantics="paper", largest=False, k=7,
                      id_dtype=torch.int32, holes=0.3, G=100), id="paper-distances-int32-holes-G>N"),
    pytest.param(dict(Q=3, L=9, N=20, K=8, k_q=9, iters=4, early_stop=True, dtype=torch.float64, tied=True),
                 id="early-stop-float64-tied"),
    pytest.param(dict(Q=3, L=8, N=16, K=4, k_q=2, iters=2, dtype=torch.float16), id="float16"),
]


@pytest.mark.parametrize("case", CASES)
def test_icfrr_candidates_triton_matches_cpu(case):
    c = dict(case)
    Q, L, N, K = c.pop("Q"), c.pop("L"), c.pop("N"), c.pop("K")
    G = c.pop("G", N)
    nb = _graph(N, K, seed=K, holes=c.pop("holes", 0.0))
    scores, ids = _candidates(Q, L, N, seed=N, dtype=c.pop("dtype", torch.float32),
                              id_dtype=c.pop("id_dtype", torch.int64), tied=c.pop("tied", False))
    args = (G, c["k_q"], 0.5, c["iters"], c.get("semantics", "reference"), c.get("largest", True), c.get("k", L),
            True, c.get("early_stop", False))
    want = ops.icfrr_candidates(scores, ids, nb, *args)  # CPU tensors: the C++ kernel
    got = ops._icfrr_candidates_cuda(scores, ids, nb, *args)  # the registered CUDA kernel: Triton (interpreted)
    assert got[0].dtype == scores.dtype
    assert_rankings_equal(got[1], want[1], "indices")
    assert_values_equal(got[0], want[0], "values")
    assert_rankings_equal(got[2], want[2], "history")


def test_sorted_rows_skip_the_initial_sort():
    """rows_sorted=True on rows that are best first (ties -> smaller id) gives the result of the sorting path."""
    scores, ids = _candidates(3, 12, 30, seed=4, tied=True)
    key = torch.where(ids >= 0, scores, float("-inf")).double()
    by_id = torch.sort(torch.where(ids >= 0, ids, 1 << 40), dim=1).indices  # ties -> smaller id; padding last
    s1, i1 = scores.gather(1, by_id), ids.gather(1, by_id)
    perm = torch.sort(key.gather(1, by_id), dim=1, descending=True, stable=True).indices
    s2, i2 = s1.gather(1, perm), i1.gather(1, perm)
    nb = _graph(30, 5, seed=1)
    args = (30, 4, 0.5, 3, "paper", True, 12, True, False)
    got = tric.icfrr_candidates_triton(s2, i2, nb, *args, rows_sorted=True, alloc=ops.alloc_output)
    want = ops.icfrr_candidates(scores, ids, nb, *args)
    assert_rankings_equal(got[1], want[1], "indices")
    assert_values_equal(got[0], want[0], "values")
    assert_rankings_equal(got[2], want[2], "history")


def test_cuda_kernel_falls_back_to_cpu_kernel(monkeypatch):
    monkeypatch.setattr(ops, "_warned", set())
    monkeypatch.setattr(ops, "TRITON_MAX_DEPTH", 4)
    scores, ids = _candidates(2, 6, 20, seed=2)
    nb = _graph(20, 4, seed=3)
    args = (20, 3, 0.5, 2, "reference", True, 6, False, False)
    with pytest.warns(RuntimeWarning, match=r"L = 6 > 4 candidates .* running the CPU kernel"):
        got = ops._icfrr_candidates_cuda(scores, ids, nb, *args)
    want = ops.icfrr_candidates(scores, ids, nb, *args)
    assert_rankings_equal(got[1], want[1])
    assert_values_equal(got[0], want[0])
