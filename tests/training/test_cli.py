"""``icfrr-fast train`` on the shipped smoke config, end to end; ``icfrr-fast features`` and its cache."""

import pytest
import torch
from icfrr_fast.training.checkpoint import load_checkpoint
from icfrr_fast.training.config import CONFIGS_DIR
from icfrr_fast.training.extraction import load_feature_cache
from icfrr_fast.training.run_log import RunLog

from icfrr_fast.cli import main

SMOKE = CONFIGS_DIR / "smoke.yaml"


@pytest.fixture(autouse=True, scope="module")
def _native_loaded():
    # Load the compiled kernels before capsys swaps sys.stdout: an editable install's rebuild-on-import hook runs
    # cmake with sys.stdout as its output, which capsys's in-memory stream cannot provide (no fileno).
    from icfrr_fast import _native

    _native.load()


def test_smoke_config_end_to_end(tmp_path, capsys):
    out = tmp_path / "smoke"
    rc = main(["train", "--config", str(SMOKE), "--train.output_dir", str(out), "--data.root", str(tmp_path / "data"),
               "--train.tensorboard", "true", "--train.progress", "false"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "icfrr-fast train: done at step 40" in captured.out
    for name in ("config.yaml", "last.pth", "best.pth", "metrics.csv"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    rows = RunLog.read(out / "metrics.csv")
    losses = [r["value"] for r in rows if r["phase"] == "train" and r["metric"] == "loss"]
    assert losses[-1] < losses[0]
    val = {(r["step"], r["metric"]): r["value"] for r in rows if r["phase"] == "val"}
    assert {s for s, _ in val} == {0, 16, 32, 40}
    assert val[(40, "base/mAP@all")] > val[(0, "base/mAP@all")]  # training helps on held-out images
    for m in ("mAP@all", "mAP@200", "P@10", "P@100"):
        for it in ("base", "it1", "it2", "it3", "it4", "it5", "icfrr"):
            assert (40, f"{it}/{m}") in val
    ck = load_checkpoint(out / "last.pth")
    assert ck["position"]["step"] == 40 and ck["config"]["model"]["backbone"] == "icfrr_vit_small32"

    # features of the trained model, then the cache is reused
    feats = tmp_path / "feats.pth"
    args = ["features", "--checkpoint", str(out / "best.pth"), "--out", str(feats), "--train.progress", "false"]
    assert main(args) == 0
    c = load_feature_cache(feats)
    assert c["query"].shape == (96, 64) and c["gallery"].shape == (96, 64)
    assert torch.allclose(c["query"].norm(dim=1), torch.ones(96), atol=1e-5)
    assert len(c["query_paths"]) == 96 and c["classes"][0] == "astronaut"
    capsys.readouterr()
    assert main(args) == 0
    assert "is up to date" in capsys.readouterr().out


def test_features_of_an_untrained_backbone(tmp_path):
    feats = tmp_path / "f.pth"
    assert main(["features", "--config", str(SMOKE), "--data.root", str(tmp_path / "data"), "--data.toy_classes", "3",
                 "--model.backbone", "icfrr_vit_tiny", "--out", str(feats), "--train.progress", "false"]) == 0
    c = load_feature_cache(feats)
    assert c["query"].shape == (36, 32) and c["classes"] == ["astronaut", "cat", "coffee"]
    assert "checkpoint" not in c["source"] and c["source"]["model"]["backbone"] == "icfrr_vit_tiny"


def test_cli_errors_are_reported(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["train", "--config", str(SMOKE), "--optim.lr", "-1", "--print-config"]) == 2
    assert "optim.lr must be > 0" in capsys.readouterr().err
    assert main(["features", "--checkpoint", str(tmp_path / "x.pth"), "--out", str(tmp_path / "f.pth")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--no-such-flag", "1"])
