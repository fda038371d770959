"""The emoji fine-tuning configuration (icfrr_fast/training/configs/emoji.yaml) in a cut-down form, end to end: the emoji
benchmark, EfficientNet-Lite0 in the backbone registry (the demo's network and weights), parameter freezing, the
validation plot, ``icfrr-fast features`` and ``icfrr-fast demo --checkpoint`` on the fine-tuned weights."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from icfrr_fast.cli import main
from icfrr_fast.demo.emoji import load_emoji
from icfrr_fast.training import Config, create_backbone, load_config
from icfrr_fast.training.checkpoint import load_checkpoint
from icfrr_fast.training.config import CONFIGS_DIR
from icfrr_fast.training.data import build_splits
from icfrr_fast.training.extraction import load_feature_cache
from icfrr_fast.training.plots import plot_validation, validation_series
from icfrr_fast.training.run_log import RunLog

EMOJI = CONFIGS_DIR / "emoji.yaml"


@pytest.fixture(autouse=True, scope="module")
def _native_loaded():
    from icfrr_fast import _native  # see test_cli.py: load the kernels before capsys swaps sys.stdout

    _native.load()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("emoji_data")


def _cfg(data_root, **over) -> Config:
    cfg = Config.from_dict(load_config(EMOJI))
    cfg.data.root = str(data_root)
    for k, v in over.items():
        cfg.set(k, v)
    cfg.validate()
    return cfg


def test_emoji_splits_train_on_seen_and_validate_on_unseen(data_root):
    ds = load_emoji()
    cfg = _cfg(data_root)
    s = build_splits(cfg.data)
    unseen = ds.unseen_mask()
    n_seen, n_unseen = int((~unseen).sum()), int(unseen.sum())
    assert len(s.train) == 2 * n_seen and len(s.query) == len(s.gallery) == n_unseen
    assert s.train.domain_names == ["lineart", "colour"] and s.query_domain == 0
    item = lambda p: int(Path(p).stem)  # noqa: E731
    train_items = {item(p) for p in s.train.paths}
    eval_items = {item(p) for p in s.query.paths}
    assert not train_items & eval_items and eval_items == set(np.flatnonzero(unseen).tolist())
    # training labels: seen subgroups; validation labels: the Unicode groups of the unseen emoji
    assert len(s.train.classes) == int((~ds.subgroup_unseen).sum())
    assert set(s.train.classes) <= set(ds.subgroup_names)
    assert set(s.query.classes) <= set(ds.group_names) and len(s.query.classes) == 8
    for recs, dom in ((s.query, "lineart"), (s.gallery, "colour")):
        assert all(Path(p).parent.name == dom for p in recs.paths)
        for p, y in zip(recs.paths[:50], recs.labels[:50]):
            assert recs.classes[y] == ds.group_names[ds.group[item(p)]]
    # images on disk are the shipped pixels
    from PIL import Image

    k = item(s.gallery.paths[3])
    assert np.array_equal(np.asarray(Image.open(s.gallery.paths[3])), ds.gallery[k])
    sub = build_splits(_cfg(data_root, **{"data.emoji_eval_level": "subgroup"}).data)
    assert len(sub.query.classes) == int(ds.subgroup_unseen.sum())
    with pytest.raises(ValueError, match="data.emoji_eval_level"):
        _cfg(data_root, **{"data.emoji_eval_level": "emoji"})


def test_efficientnet_lite0_backbone_is_the_demos_network():
    from icfrr_fast.demo.backbone import EfficientNetLite0

    ds = load_emoji()
    bb = create_backbone("efficientnet_lite0", img_size=64).eval()
    demo = EfficientNetLite0(input_size=64)
    x = demo.preprocess(ds.gallery[:4])
    with torch.no_grad():
        torch.testing.assert_close(bb(x), demo.embed(ds.gallery[:4]), atol=1e-5, rtol=1e-4)
    assert bb.embed_dim == 1280 and bb.input_size == (3, 64, 64) and bb.mean == (0.485, 0.456, 0.406)
    rand = create_backbone("efficientnet_lite0", pretrained=False)
    assert not torch.equal(rand.net._conv_stem.weight, bb.net._conv_stem.weight)
    with pytest.raises(ValueError, match="img_size and drop_path_rate"):
        create_backbone("efficientnet_lite0", num_classes=3)


def test_freeze_patterns():
    bb = create_backbone("icfrr_vit_tiny")
    frozen = bb.freeze(["patch_embed.*", "blocks.0.*"])
    assert frozen and all(n.startswith(("patch_embed.", "blocks.0.")) for n in frozen)
    assert all(p.requires_grad != (n in frozen) for n, p in bb.net.named_parameters())
    with pytest.raises(ValueError, match="matches no parameter"):
        bb.freeze(["nonexistent.*"])
    lite = create_backbone("efficientnet_lite0", img_size=32)
    lite.freeze(["_conv_stem.*", "_bn0.*"])
    lite.train()
    assert not lite.net._bn0.training and lite.net._bn1.training  # frozen norm keeps its statistics
    before = lite.net._bn0.running_mean.clone()
    lite(torch.randn(2, 3, 32, 32))
    assert torch.equal(lite.net._bn0.running_mean, before)


def test_emoji_config_cut_down_end_to_end(tmp_path, data_root, capsys):
    """The shipped configuration with a few steps on a subset: metrics written and finite, checkpoint, CSV and
    plot exist; then the fine-tuned features through ``icfrr-fast features`` and ``icfrr-fast demo --checkpoint``."""
    out = tmp_path / "run"
    rc = main(["train", "--config", str(EMOJI), "--train.output_dir", str(out), "--data.root", str(data_root),
               "--model.img_size", "32", "--data.classes_per_batch", "4", "--data.batches_per_epoch", "2",
               "--train.epochs", "2", "--data.query_stride", "4",
               "--data.gallery_stride", "4", "--train.threads", "2", "--train.progress", "false",
               "--eval.iters", "2"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    for name in ("config.yaml", "last.pth", "best.pth", "metrics.csv", "metrics.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = RunLog.read(out / "metrics.csv")
    val = {(r["epoch"], r["metric"]): r["value"] for r in rows if r["phase"] == "val"}
    assert {e for e, _ in val} == {0, 1, 2}  # frozen start, then after each epoch
    for e in (0, 1, 2):
        for m in ("mAP@all", "mAP@200", "P@100"):
            for it in ("base", "it1", "it2", "icfrr"):
                v = val[(e, f"{it}/{m}")]
                assert math.isfinite(v) and 0.0 <= v <= 1.0, (e, it, m, v)
    losses = [r["value"] for r in rows if r["phase"] == "train" and r["metric"] in ("ce", "triplet", "loss")]
    assert losses and all(math.isfinite(v) for v in losses)
    series = validation_series(out / "metrics.csv")
    assert [e for e, _ in series["base/mAP@all"]] == [0, 1, 2]
    ck = load_checkpoint(out / "last.pth")
    assert ck["position"]["step"] == 4 and ck["config"]["model"]["backbone"] == "efficientnet_lite0"
    # frozen early layers did not move; a trained layer did
    from icfrr_fast.demo.backbone import load_efficientnet_lite0

    ref, _ = load_efficientnet_lite0()
    st = ck["model"]
    assert torch.equal(st["backbone.net._blocks.0._depthwise_conv.weight"], ref._blocks[0]._depthwise_conv.weight)
    assert not torch.equal(st["backbone.net._conv_head.weight"], ref._conv_head.weight)

    feats = tmp_path / "feats.pth"
    assert main(["features", "--checkpoint", str(out / "last.pth"), "--out", str(feats), "--data.root",
                 str(data_root), "--train.progress", "false"]) == 0
    c = load_feature_cache(feats)
    assert c["query"].shape == (len(c["query_paths"]), 1280) and c["gallery"].shape[1] == 1280
    torch.testing.assert_close(c["query"].norm(dim=1), torch.ones(len(c["query"])))

    report = tmp_path / "report"
    capsys.readouterr()
    rc = main(["demo", "--checkpoint", str(out / "last.pth"), "--out", str(report), "--queries", "24",
               "--gallery", "60", "--iters", "2", "--repeats", "1", "--timing-queries", "2", "--report-queries", "1",
               "--no-cache", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "before / after fine-tuning" in captured.out
    res = json.loads((report / "results.json").read_text())
    assert res["config"]["split"] == "unseen" and res["config"]["input_size"] == 32
    comp = res["finetune_comparison"]
    assert [(r["features"], r["iter"]) for r in comp] == [("ImageNet (frozen)", None), ("ImageNet (frozen)", 2),
                                                          ("fine-tuned", None), ("fine-tuned", 2)]
    assert comp[2]["mAP@all"] == res["metrics"]["none"][0]["mAP@all"]
    assert comp[0]["mAP@all"] != comp[2]["mAP@all"]  # different features
    assert "Before / after fine-tuning" in (report / "index.html").read_text()


def test_demo_checkpoint_errors(tmp_path, capsys):
    assert main(["demo", "--checkpoint", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "r")]) == 2
    assert "--checkpoint: no such file" in capsys.readouterr().err
    assert main(["demo", "--input-size", "0", "--out", str(tmp_path / "r")]) == 2
    assert "input_size must be >= 32" in capsys.readouterr().err


def test_plot_needs_validation_rows(tmp_path):
    log = RunLog(tmp_path, tensorboard=False)
    log.log("train", {"loss": 1.0}, step=1, epoch=0)
    with pytest.raises(ValueError, match="no validation rows"):
        plot_validation(tmp_path / "metrics.csv", tmp_path / "m.png")
