"""``icfrr-fast tune``: the sweep on a tiny labelled set, its outputs, the split, bad input."""

import json

import pytest
import torch

from icfrr_fast import cli
from icfrr_fast.commands import tune as tune_cmd
from icfrr_fast.testing import cross_domain_features


@pytest.fixture
def cache(tmp_path):
    d = cross_domain_features(24, 150, dim=16, num_classes=6, seed=0)
    path = tmp_path / "features.pth"
    torch.save({"query": d.queries, "query_labels": d.query_labels, "gallery": d.gallery,
                "gallery_labels": d.gallery_labels}, path)
    return path


def test_tune_writes_table_json_and_plot(cache, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["tune", str(cache), "--out", str(out), "--methods", "none", "icfrr", "aqe", "ecn", "superglobal",
                   "--k", "20", "--metrics", "mAP@all", "P@20", "--no-progress"])
    assert rc == 0
    result = json.loads((out / "tune.json").read_text())
    assert (out / "tune.png").stat().st_size > 0
    assert "held out" in (out / "tune.md").read_text()
    assert result["split"] == {"tune": 12, "held_out": 12, "seed": 0}
    best = {(b["method"], b["metric"]): b for b in result["best"]}
    assert len(best) == 10
    for (method, metric), b in best.items():
        runs = [r for r in result["runs"] if r["method"] == method]
        assert b["tune"] == max(r["tune"][metric] for r in runs)  # chosen on the tuning queries only
        assert 0.0 <= b["held_out"] <= 1.0
    assert len([r for r in result["runs"] if r["method"] == "icfrr"]) == len(tune_cmd.settings("icfrr", 150, 20))
    assert "superglobal" in capsys.readouterr().out


def test_settings_are_clipped_and_deduplicated():
    s = tune_cmd.settings("icfrr", 30, 10)
    assert all(x["k_g"] <= 29 and x["k_q"] <= 30 for x in s)
    assert len(s) == len({tuple(sorted(x.items())) for x in s})
    assert all(x["M"] >= 50 for x in tune_cmd.settings("superglobal", 200, 50))


def test_tune_bad_input(cache, tmp_path, capsys):
    assert cli.main(["tune", str(cache), "--out", str(tmp_path / "o"), "--tune-fraction", "1.5",
                     "--methods", "none", "--no-progress"]) == 2
    assert "--tune-fraction must be in (0, 1)" in capsys.readouterr().err
    assert cli.main(["tune", str(cache), "--out", str(tmp_path / "o"), "--metrics", "nDCG", "--methods", "none",
                     "--no-progress"]) == 2
    assert "--metrics ['nDCG'] are not computed" in capsys.readouterr().err
    assert cli.main(["tune", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
