"""Assertions shared by the tests: exact ranking equality with a readable report, and tie-aware k-NN comparison."""

from __future__ import annotations

import torch
from torch import Tensor


def assert_rankings_equal(actual: Tensor, expected: Tensor, what: str = "ranking") -> None:
    """Identical indices; on failure report the mismatch count and the first differing (query, rank) pairs."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual != expected).nonzero()
    if len(diff):
        first = [tuple(int(v) for v in d) for d in diff[:5]]
        shown = ", ".join(f"{p}: {int(actual[p])} vs {int(expected[p])}" for p in first)
        raise AssertionError(f"{what}: {len(diff)} of {actual.numel()} positions differ; first {shown}")


def assert_values_equal(actual: Tensor, expected: Tensor, what: str = "values") -> None:
    """Bit-identical values (NaN never equal), with the same kind of report."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    bad = ~(actual == expected)
    if bool(bad.any()):
        idx = bad.nonzero()[:5]
        shown = ", ".join(f"{tuple(int(v) for v in d)}: {float(actual[tuple(d)])!r} vs {float(expected[tuple(d)])!r}"
                          for d in idx)
        raise AssertionError(f"{what}: {int(bad.sum())} of {actual.numel()} differ; first {shown}")


def assert_knn_equal_with_ties(values: Tensor, indices: Tensor, ref_values: Tensor, ref_indices: Tensor,
                               atol: float = 1e-5, rtol: float = 1e-5) -> None:
    """k-NN results agree up to ties: values within tolerance position by position, and within each group of
    reference values that are equal within tolerance, the same set of ids (the last group may be cut by k)."""
    torch.testing.assert_close(values.to(torch.float64), ref_values.to(torch.float64), atol=atol, rtol=rtol)
    for q in range(indices.shape[0]):
        rv = ref_values[q].to(torch.float64)
        k = rv.shape[0]
        start = 0
        while start < k:
            end = start + 1
            while end < k and abs(float(rv[end] - rv[start])) <= atol + rtol * abs(float(rv[start])):
                end += 1
            got, want = set(indices[q, start:end].tolist()), set(ref_indices[q, start:end].tolist())
            if end < k:  # a group cut by k may hold any of the tied ids; a complete group must match as a set
                assert got == want, f"query {q}, ranks {start}..{end - 1}: ids {sorted(got)} != {sorted(want)}"
            start = end
