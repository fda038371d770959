"""The emoji data set, the pretrained backbone and ``icfrr-fast demo`` end to end on a small subset."""

import json
import re

import numpy as np
import pytest
import torch

from icfrr_fast import cli
from icfrr_fast.demo.emoji import data_dir, license_texts, load_emoji

# -- data set ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ds():
    return load_emoji()


def test_dataset_shapes_and_labels(ds):
    n, s = len(ds), ds.image_size
    assert n == ds.metadata["items"] and n > 1500 and s == 64
    assert ds.queries.shape == (n, s, s) and ds.queries.dtype == np.uint8
    assert ds.gallery.shape == (n, s, s, 3) and ds.gallery.dtype == np.uint8
    assert len(set(ds.codepoints.tolist())) == n  # one item per emoji, both domains paired by index
    assert len(ds.group_names) == 9 and "Animals & Nature" in ds.group_names
    assert ds.group.min() == 0 and ds.group.max() == len(ds.group_names) - 1
    assert ds.subgroup.max() == len(ds.subgroup_names) - 1 and len(ds.subgroup_names) >= 90
    # subgroups nest in groups; the class counts are the metadata's
    assert np.array_equal(ds.subgroup_group[ds.subgroup], ds.group)
    counts = dict(zip(ds.group_names, np.bincount(ds.group).tolist()))
    assert counts == ds.metadata["groups"]
    # seen/unseen split over subgroups: both non-empty, every group with >= 2 subgroups has an unseen one
    unseen = ds.unseen_mask()
    assert 0 < unseen.sum() < n and ds.subgroup_unseen.sum() == ds.metadata["split"]["unseen_subgroups"]
    for g in range(len(ds.group_names)):
        subs = np.flatnonzero(ds.subgroup_group == g)
        if len(subs) >= 2:
            assert ds.subgroup_unseen[subs].any() and not ds.subgroup_unseen[subs].all()
    # real pictures: line art is mostly white with black strokes; the colour set is not grey
    assert 0.05 < (ds.queries < 128).mean() < 0.6
    assert np.abs(ds.gallery.astype(int) - ds.gallery.mean(axis=3, keepdims=True)).mean() > 5


def test_dataset_provenance_and_licences(ds):
    meta = ds.metadata
    assert set(meta["packages"]) == {"@iconify-json/fluent-emoji-high-contrast", "@iconify-json/noto",
                                     "emojibase-data"}
    assert all(p["version"] and p["integrity"].startswith("sha512-") for p in meta["packages"].values())
    texts = license_texts()
    assert "MIT License" in texts["LICENSE-fluent-emoji.txt"] and "Microsoft" in texts["LICENSE-fluent-emoji.txt"]
    assert "Apache License" in texts["LICENSE-noto-emoji.txt"] and "Version 2.0" in texts["LICENSE-noto-emoji.txt"]
    assert "MIT License" in texts["LICENSE-emojibase-data.txt"]
    assert (data_dir() / meta["file"]).stat().st_size < 8 * 2**20  # "a few MB"


def test_dataset_checksum_is_verified(tmp_path):
    src = data_dir()
    meta = json.loads((src / "metadata.json").read_text())
    data = bytearray((src / meta["file"]).read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / meta["file"]).write_bytes(bytes(data))
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="sha256"):
        load_emoji(tmp_path)
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        load_emoji(tmp_path / "missing")


def test_dataset_bad_arguments(ds):
    with pytest.raises(ValueError, match="level"):
        ds.labels("species")
    with pytest.raises(TypeError, match="index"):
        ds.subset(np.array([0.5]))
    sub = ds.subset(np.array([3, 1]))
    assert sub.names.tolist() == [ds.names[3], ds.names[1]] and sub.gallery.shape[0] == 2


# -- backbone ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backbone():
    from icfrr_fast.demo.backbone import EfficientNetLite0

    return EfficientNetLite0(input_size=64)


def test_pretrained_weights_recognise_a_real_photo(backbone):
    """The shipped ImageNet weights are real: a cat photo is classified as a cat (ImageNet classes 281-285)."""
    from skimage import data as skimage_data  # ships a few real photos offline

    img = skimage_data.chelsea()[None]  # (1, H, W, 3) uint8
    with torch.inference_mode():
        x = backbone.preprocess(img)
        x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear")
        logits = backbone.model(x)
    assert 281 <= int(logits.argmax()) <= 285


def test_features_are_unit_norm_and_cached(backbone, ds, tmp_path):
    from icfrr_fast.demo.backbone import FeatureCache

    imgs = ds.gallery[:5]
    cache = FeatureCache(tmp_path)
    f1, hit1 = cache.embed(backbone, imgs)
    f2, hit2 = cache.embed(backbone, imgs)
    assert (hit1, hit2) == (False, True)
    assert f1.shape == (5, 1280) and f1.dtype == torch.float32
    torch.testing.assert_close(f1.norm(dim=1), torch.ones(5))
    assert torch.equal(f1, f2)
    # a different image array or input size is a different key
    assert backbone.cache_key(ds.gallery[:4]) != backbone.cache_key(imgs)
    grey, _ = cache.embed(backbone, ds.queries[:2])
    assert grey.shape == (2, 1280)
    # subsets: computed alone while the whole array is not cached, sliced from it once it is
    rows = np.array([4, 1])
    sub, hit = cache.embed_rows(backbone, imgs, rows)
    assert hit is True and torch.equal(sub, f1[rows])
    other = ds.gallery[10:16]
    sub2, hit2 = cache.embed_rows(backbone, other, rows)
    assert hit2 is False and sub2.shape == (2, 1280)
    torch.testing.assert_close(sub2, backbone.embed(other)[rows], atol=1e-5, rtol=0)


def test_backbone_bad_arguments(backbone):
    from icfrr_fast.demo.backbone import EfficientNetLite0

    with pytest.raises(ValueError, match="input_size"):
        EfficientNetLite0(input_size=8)
    with pytest.raises(TypeError, match="batch_size"):
        EfficientNetLite0(batch_size=2.0)
    with pytest.raises(FileNotFoundError, match="weights"):
        EfficientNetLite0(weights="/nonexistent/weights.pth")
    with pytest.raises(TypeError, match="images must be uint8"):
        backbone.embed(np.zeros((1, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="images must be"):
        backbone.embed(np.zeros((1, 8, 8, 4), dtype=np.uint8))


# -- the command end to end --------------------------------------------------------------------------------------------

_ROW = re.compile(r"^(no re-ranking|ICFRR \(reference\)|ICFRR \(paper\)|ClusterRetri)\s+(-|\d+)\s+"
                  r"([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$")


def _parse_table(text):
    rows = {}
    for line in text.splitlines():
        m = _ROW.match(line.strip())
        if m:
            rows.setdefault(m.group(1), []).append([float(v) for v in m.groups()[2:]])
    return rows


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    import contextlib
    import io

    out = tmp_path_factory.mktemp("report")
    cache = tmp_path_factory.mktemp("cache")
    argv = ["demo", "--out", str(out), "--queries", "12", "--gallery", "200", "--input-size", "64", "--iters", "3",
            "--repeats", "1", "--timing-queries", "4", "--report-queries", "3", "--cache-dir", str(cache),
            "--no-progress"]
    runs = []
    for _ in range(2):  # the second run must read the features from the cache
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = cli.main(argv)
        runs.append((rc, buf.getvalue()))
    return out, runs


def test_demo_writes_report_whose_numbers_match_the_table(demo_run):
    from PIL import Image

    out, runs = demo_run
    (rc, stdout), (rc2, stdout2) = runs
    assert rc == 0 and rc2 == 0, stdout
    for name in ("index.html", "metrics.png", "results.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 1000
    data = json.loads((out / "results.json").read_text())
    assert data["queries"] == 12 and data["gallery"] == 200

    # the table: 1 row per plain method, T + 1 rows per ICFRR semantics
    rows = _parse_table(stdout)
    labels = ("no re-ranking", "ICFRR (reference)", "ICFRR (paper)", "ClusterRetri")
    assert [len(rows[k]) for k in labels] == [1, 4, 4, 1]
    names = ("mAP@all", "mAP@200", "P@100", "P@200")
    for key, label in data["methods"].items():
        for t, printed in enumerate(rows[label]):
            assert printed == pytest.approx([data["metrics"][key][t][n] for n in names], abs=5e-5)
    # the plot shows exactly those numbers: y-values read back from the figure's lines
    series = data["plot"]["series"]
    assert set(series) == set(names)
    for j, n in enumerate(names):
        for label, printed in rows.items():
            ys = series[n][label]
            assert len(ys) == 4
            expected = [r[j] for r in printed] if len(printed) > 1 else [printed[0][j]] * 4
            assert ys == pytest.approx(expected, abs=5e-5)
    # per-class mAP@all: its query-weighted mean is the table's mAP@all
    per_class = data["per_class_map_all"]
    for key in data["methods"]:
        n = sum(v["queries"] for v in per_class.values())
        weighted = sum(v["queries"] * v[key] for v in per_class.values()) / n
        assert weighted == pytest.approx(data["metrics"][key][-1]["mAP@all"], abs=1e-9)
    # iteration 0 of ICFRR is the initial ranking
    assert rows["ICFRR (reference)"][0] == rows["no re-ranking"][0]

    # images open and have the sizes the report says
    with Image.open(out / "metrics.png") as im:
        im.verify()
    with Image.open(out / "metrics.png") as im:
        assert im.format == "PNG" and im.size[0] > 1000 and im.size[1] > 250
    assert len(data["figures"]) == 3
    for fig in data["figures"]:
        with Image.open(out / fig["file"]) as im:
            assert im.size == tuple(fig["size"]) and im.mode == "RGB"
            assert im.size[0] > 11 * 128  # query + 10 results at 128 px
        for key in ("none", "icfrr_reference"):
            assert len(fig["rows"][key]["gallery"]) == 10 and len(fig["rows"][key]["correct"]) == 10
            assert 0.0 <= fig["average_precision"][key] <= 1.0
    html = (out / "index.html").read_text()
    assert "metrics.png" in html and all(f["file"] in html for f in data["figures"])

    # clipping is announced; timings and agreement are reported; the second run hit the cache
    assert "k_g clipped from 256 to G - 1 = 199" in stdout
    assert data["config"]["k_g"] == 199
    assert "agree on 100.00 % of positions" in stdout
    assert data["timings"]["rerank_reference_s"] > 0 and data["timings"]["speedup_rerank"] > 0
    assert "computed in" in stdout and "read from the cache" in stdout2
    assert _parse_table(stdout2) == rows


@pytest.mark.parametrize("option, value, match", [
    ("--queries", "0", "queries must be >= 1"),
    ("--beta", "-1", "beta"),
    ("--fusion", "2", "fusion"),
    ("--input-size", "4", "input_size"),
], ids=lambda v: v if v.startswith("--") else None)
def test_demo_bad_options_name_the_option(option, value, match, tmp_path, capsys):
    rc = cli.main(["demo", "--out", str(tmp_path), option, value, "--no-cache"])
    assert rc == 2
    assert re.search(match, capsys.readouterr().err)


def test_demo_compares_the_rerankers(demo_run):
    # the paper's comparison: every re-ranker on the same features, printed, in results.json and in the report
    from icfrr_fast.demo.experiment import COMPARED

    out, runs = demo_run
    stdout = runs[1][1]  # the second run wrote results.json last
    data = json.loads((out / "results.json").read_text())
    comp = data["comparison"]
    assert list(comp) == list(COMPARED)
    names = ("mAP@all", "mAP@200", "P@100", "P@200")
    lines = stdout.splitlines()
    table = lines[next(i for i, ln in enumerate(lines) if ln.endswith("time (s)")):]
    for key, label in COMPARED.items():
        line = next(ln for ln in table if ln.startswith(label + "  "))
        printed = [float(v) for v in line[len(label):].split()]
        assert printed[:4] == pytest.approx([comp[key][n] for n in names], abs=5e-5)
        assert printed[4] == pytest.approx(comp[key]["seconds"], abs=5e-4) and comp[key]["seconds"] > 0
    # rows that other parts of the demo also compute agree with them
    for key, other in (("none", "none"), ("icfrr", "icfrr_reference"), ("cluster_retri", "cluster_retri")):
        for n in names:
            assert comp[key][n] == pytest.approx(data["metrics"][other][-1][n], abs=1e-12), (key, n)
    assert "Compared with other re-rankers" in (out / "index.html").read_text()
    assert data["comparison_text"].splitlines()[1].startswith("no re-ranking")
