"""benchmarks/gpu_bench.py without a GPU: its size/FLOP/byte arithmetic (--dry-run), hardware lookup, result naming,
quantiles, and its torch ICFRR baseline (exact: identical to the CPU op). The whole pipeline on CPU under the
Triton interpreter (--smoke) is the slow test."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from icfrr_fast import ops, reference

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_bench.py"
_spec = importlib.util.spec_from_file_location("gpu_bench", _PATH)
gpu_bench = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("gpu_bench", gpu_bench)  # dataclasses look their module up there
_spec.loader.exec_module(gpu_bench)


def test_issue_size_and_design_floors():
    full = gpu_bench.SIZES["full"]
    assert (full.G, full.D, full.Q, full.K_g, full.K_q, full.T) == (10**6, 768, 10**4, 256, 250, 5)
    w = gpu_bench.work(full, gpu_bench.SPECS["H100"])
    assert w["knn_graph"]["flop"] == pytest.approx(1.536e15)  # docs/design.md §6: 1.5e15 FLOP
    assert w["knn_graph"]["floor_s"] == pytest.approx(1.536e15 / 990e12)  # about 1.6 s in bf16
    assert w["icfrr_iterate"]["votes"] == pytest.approx(3.2e9)  # docs/design.md §6: 3.2e9 integer updates
    assert w["icfrr_op"]["floor_s"] == pytest.approx(w["icfrr_op"]["bytes"] / 3.35e12)
    h200 = gpu_bench.work(full, gpu_bench.SPECS["H200"])
    assert h200["icfrr_op"]["floor_s"] < w["icfrr_op"]["floor_s"]  # faster HBM, same matmul peak
    assert h200["knn_graph"]["floor_s"] == w["knn_graph"]["floor_s"]


def test_every_size_fits_an_h100():
    for size in gpu_bench.SIZES.values():
        plan = gpu_bench.memory_plan(size)
        assert max(plan.values()) < 0.8 * 80 * 2**30, (size.name, plan)


def test_dry_run_prints_every_step(capsys):
    assert gpu_bench.main(["--dry-run", "--sizes", "full,tiny"]) == 0
    out = capsys.readouterr().out
    for step in ("knn_graph", "knn_queries", "icfrr_iterate", "icfrr_op"):
        assert out.count(step) == 2
    with pytest.raises(SystemExit):
        gpu_bench.main(["--dry-run", "--sizes", "huge"])


def test_gpu_lookup_and_result_name(tmp_path):
    assert gpu_bench.spec_for("NVIDIA H200").hbm_tb_s == 4.8
    assert gpu_bench.spec_for("NVIDIA H100 80GB HBM3").hbm_tb_s == 3.35
    assert "assumed" in gpu_bench.spec_for("NVIDIA A100-SXM4-80GB").name
    env = {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.14.1+cu130", "triton": "3.8.0"}
    name = gpu_bench.result_path(tmp_path, env).name
    assert name == "gpu_bench-NVIDIA-H100-80GB-HBM3-torch2.14.1-cu130-triton3.8.0.json"


def test_timing_quantiles():
    t = gpu_bench.Timing.of([5.0, 1.0, 3.0, 2.0, 4.0], scale=2.0)
    assert (t.median_ms, t.p20_ms, t.p80_ms, t.reps) == (6.0, 3.6, 8.4, 5)
    assert gpu_bench.Timing.of([7.0]).p80_ms == 7.0


def test_torch_icfrr_baseline_is_exact():
    """The torch baseline computes the same algorithm: identical to the CPU op on candidates (chunked)."""
    gen = torch.Generator().manual_seed(0)
    Q, G, L = 5, 60, 30
    scores = torch.randn(Q, G, generator=gen)
    g = torch.randn(G, 3, generator=gen, dtype=torch.float64)
    nbr = reference.dense_topk(torch.cdist(g, g), 7, largest=False, exclude_self=True)[1].to(torch.int32)
    cv, ci = reference.dense_topk(scores.to(torch.float64), L)
    v, i = gpu_bench.torch_icfrr(cv, ci, nbr.long(), 6, 0.5, 4, 12, chunk=2)
    want = ops.icfrr_rerank(scores, nbr, 6, 0.5, 4, "reference", True, L, 12, False, False)
    assert torch.equal(i, want[1]) and torch.equal(v, want[0])


@pytest.mark.slow
def test_smoke_pipeline(tmp_path):
    """Every check, timing and output of the script at a tiny size, on CPU, in the Triton interpreter."""
    assert gpu_bench.main(["--smoke", "--out", str(tmp_path)]) == 0
    (out,) = tmp_path.glob("gpu_bench-*.json")
    assert "icfrr_iterate" in out.read_text()
