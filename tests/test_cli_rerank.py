"""``icfrr-fast rerank`` on the released code's cache format, .npy inputs, untrusted files, atomic output."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from icfrr_fast import icfrr, metrics
from icfrr_fast.cli import main
from icfrr_fast.testing import cross_domain_features


@pytest.fixture
def cache(tmp_path):
    d = cross_domain_features(30, 400, 16, 8, seed=2)
    qg, gg = torch.cdist(d.queries, d.gallery), torch.cdist(d.gallery, d.gallery)
    torch.save(qg, tmp_path / "qg_dists.pth")
    torch.save(gg, tmp_path / "gg_dists.pth")
    torch.save({"query": d.query_labels, "gallery": d.gallery_labels}, tmp_path / "labels.pth")
    return tmp_path, qg, gg, d


def test_rerank_cache_dir(cache, capsys):
    path, qg, gg, d = cache
    assert main(["rerank", str(path), "--k-g", "40", "--k-q", "30", "--iters", "3", "--chunk", "7",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip()[:1].isdigit()]
    assert len(lines) == 4  # iterations 0..3
    saved = torch.load(path / "icfrr_rankings.pth", weights_only=True)
    want = icfrr(qg, gg, k_g=40, k_q=30, iters=3, largest=False, return_history=True)
    assert torch.equal(saved["indices"], want.indices) and torch.equal(saved["values"], want.values)
    # the printed/saved metrics are those of each iteration's ranking over all queries (chunks combined)
    per_iter = metrics.evaluate_history(want.history, d.query_labels, d.gallery_labels)
    for t in range(4):
        assert saved["metrics"][t]["mAP@all"] == pytest.approx(per_iter[t]["mAP@all"], abs=1e-12)
        assert f"{per_iter[t]['mAP@all']:9.4f}" in lines[t]


def test_rerank_npy_inputs_and_k(tmp_path, cache):
    path, qg, gg, d = cache
    np.save(tmp_path / "qg.npy", qg.numpy())
    np.save(tmp_path / "gg.npy", gg.numpy())
    np.save(tmp_path / "ql.npy", d.query_labels.numpy())
    np.save(tmp_path / "gl.npy", d.gallery_labels.numpy())
    out = tmp_path / "res" / "out.pth"
    assert main(["rerank", "--qg", str(tmp_path / "qg.npy"), "--gg", str(tmp_path / "gg.npy"),
                 "--query-labels", str(tmp_path / "ql.npy"), "--gallery-labels", str(tmp_path / "gl.npy"),
                 "--k", "10", "--k-g", "20", "--k-q", "10", "--out", str(out), "--no-progress"]) == 0
    saved = torch.load(out, weights_only=True)
    assert saved["indices"].shape == (30, 10)
    assert not [f for f in os.listdir(out.parent) if f.endswith(".tmp")]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_rerank_refuses_code_in_files(tmp_path, cache, capsys):
    path, *_ = cache

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    with open(path / "gg_dists.pth", "wb") as f:
        pickle.dump(Evil(), f)
    assert main(["rerank", str(path), "--k-g", "10", "--no-progress"]) == 2
    assert "refused to load" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert main(["rerank", "--qg", str(tmp_path / "obj.npy"), "--gg", str(tmp_path / "obj.npy"),
                 "--no-progress"]) == 2


def test_rerank_bad_arguments(cache, capsys):
    path, *_ = cache
    assert main(["rerank", str(path), "--k-g", "400", "--no-progress"]) == 2
    assert "k_g must be in" in capsys.readouterr().err
    assert main(["rerank", "--no-progress"]) == 2
    assert main(["rerank", str(path / "missing"), "--no-progress"]) == 2
    torch.save({"query": torch.zeros(3, dtype=torch.long), "gallery": torch.zeros(400, dtype=torch.long)},
               path / "labels.pth")
    assert main(["rerank", str(path), "--k-g", "10", "--no-progress"]) == 2
    assert "labels must have 30 query" in capsys.readouterr().err


def test_console_script_runs(cache):
    path, *_ = cache
    r = subprocess.run([sys.executable, "-m", "icfrr_fast.cli", "rerank", str(path), "--k-g", "20", "--k-q", "10",
                        "--iters", "1", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "mAP@all" in r.stdout
