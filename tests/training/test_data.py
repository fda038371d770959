"""Data: file lists, folder datasets, every benchmark layout on tiny synthetic trees, the pair sampler, transforms,
the toy set; clear errors for missing files and wrong layouts."""

from pathlib import Path

import pytest
import torch
from icfrr_fast.training.config import DataConfig
from icfrr_fast.training.data import (
    CrossDomainPairSampler,
    ImageList,
    build_splits,
    build_transform,
    make_toyset,
    read_class_ids,
    read_file_list,
    scan_domain,
)
from icfrr_fast.training.data.benchmarks import SKETCHY_21_UNSEEN

from ._trees import folder_tree, sake_split, write_image


def cfg(**kw) -> DataConfig:
    return DataConfig(**kw)


# -- file lists --------------------------------------------------------------------------------------------------
def test_file_list_parsing(tmp_path):
    (tmp_path / "l.txt").write_text("a/b c.png 3\n\nx/y.jpg 0\n")
    paths, ids = read_file_list(tmp_path / "l.txt", tmp_path)
    assert paths == [str(tmp_path / "a/b c.png"), str(tmp_path / "x/y.jpg")] and ids == [3, 0]
    (tmp_path / "bad.txt").write_text("a.png 1\nno_label_here\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected '<relative/image/path> <class id>'"):
        read_file_list(tmp_path / "bad.txt", tmp_path)
    with pytest.raises(FileNotFoundError, match="image list not found"):
        read_file_list(tmp_path / "none.txt", tmp_path)
    (tmp_path / "c.txt").write_text("teddy bear 0\nairplane 1\n")
    assert read_class_ids(tmp_path / "c.txt") == {0: "teddy bear", 1: "airplane"}
    (tmp_path / "c2.txt").write_text("a 0\nb 0\n")
    with pytest.raises(ValueError, match="appears twice"):
        read_class_ids(tmp_path / "c2.txt")


@pytest.mark.parametrize("bench,split,sk,ph", [
    ("sketchy_25", "zeroshot1", "sketch_tx_000000000000_ready_filelist_{}.txt", "all_photo_filelist_{}.txt"),
    ("sketchy_21", "zeroshot0", "sketch_tx_000000000000_ready_filelist_{}.txt", "all_photo_filelist_{}.txt"),
    ("tuberlin_30", "zeroshot", "png_ready_filelist_{}.txt", "ImageResized_ready_filelist_{}.txt"),
    ("quickdraw", "zeroshot", "sketch_{}.txt", "all_photo_{}.txt"),
])
def test_filelist_benchmarks(tmp_path, bench, split, sk, ph):
    sake_split(tmp_path, split, sk, ph, seen=["airplane", "teddy bear", "cat"], unseen=["bat", "cow"])
    s = build_splits(cfg(benchmark=bench, root=str(tmp_path)))
    assert s.train.classes == ["airplane", "teddy bear", "cat"] and s.query.classes == ["bat", "cow"]
    assert len(s.train) == 12 and s.train.domain_names == ["sketch", "photo"] and s.query_domain == 0
    assert len(s.query) == 4 and len(s.gallery) == 4
    assert all("/sketch/" in p for p in s.query.paths) and all("/photo/" in p for p in s.gallery.paths)
    assert s.query.labels == [0, 0, 1, 1] and set(s.gallery.domains) == {1}
    # the stride keeps every n-th evaluation image
    s2 = build_splits(cfg(benchmark=bench, root=str(tmp_path), query_stride=2))
    assert len(s2.query) == 2


def test_filelist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root not found"):
        build_splits(cfg(benchmark="sketchy_25", root=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match=r"split folder not found: .*zeroshot1 \(expected the file lists "
                                                r"cname_cid.txt, cname_cid_zero.txt"):
        build_splits(cfg(benchmark="sketchy_25", root=str(tmp_path)))
    sake_split(tmp_path, "zeroshot", "png_ready_filelist_{}.txt", "ImageResized_ready_filelist_{}.txt",
               seen=["a", "b"], unseen=["c"])
    (tmp_path / "photo/a/0.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 8 listed images do not exist, e.g. .*photo/a/0.png"):
        build_splits(cfg(benchmark="tuberlin_30", root=str(tmp_path)))
    (tmp_path / "zeroshot/png_ready_filelist_train.txt").write_text("sketch/a/0.png 7\n")
    with pytest.raises(ValueError, match=r"class ids \[7\] are not in .*cname_cid.txt"):
        build_splits(cfg(benchmark="tuberlin_30", root=str(tmp_path)))
    with pytest.raises(ValueError, match="data.benchmark must be one of"):
        build_splits(cfg(benchmark="imagenet", root=str(tmp_path)))


# -- folders -----------------------------------------------------------------------------------------------------
def test_scan_domain(tmp_path):
    folder_tree(tmp_path, {"photo": ["b", "a"]})
    (tmp_path / "photo" / "a" / "notes.txt").write_text("ignored")
    (tmp_path / "photo" / ".hidden").mkdir()
    out = scan_domain(tmp_path / "photo")
    assert list(out) == ["a", "b"] and all(len(v) == 2 for v in out.values())
    (tmp_path / "photo" / "empty").mkdir()
    with pytest.raises(ValueError, match="1 class folders hold no images: empty"):
        scan_domain(tmp_path / "photo")
    with pytest.raises(FileNotFoundError, match=r"domain folder not found: .*sketch \(expected .*<class>/<image>\)"):
        scan_domain(tmp_path / "sketch")


def test_sketchy_21_folders_uses_builtin_unseen(tmp_path):
    classes = list(SKETCHY_21_UNSEEN) + ["airplane", "apple"]
    folder_tree(tmp_path, {"sketch": classes, "photo": classes}, per_class=1)
    s = build_splits(cfg(benchmark="sketchy_21", root=str(tmp_path), layout="folders"))
    assert s.train.classes == ["airplane", "apple"] and s.query.classes == sorted(SKETCHY_21_UNSEEN)
    assert len(s.query) == 21 and len(s.gallery) == 21
    with pytest.raises(ValueError, match="needs data.unseen_classes"):
        build_splits(cfg(benchmark="sketchy_25", root=str(tmp_path), layout="folders"))


def test_unseen_classes_from_file_names_and_random(tmp_path):
    folder_tree(tmp_path, {"sketch": ["Teddy_Bear", "cat", "dog", "cow"], "photo": ["Teddy_Bear", "cat", "dog", "cow"]})
    (tmp_path / "unseen.txt").write_text("teddy-bear 0\ncow 1\n")  # cname_cid style works too
    s = build_splits(cfg(benchmark="tuberlin_30", root=str(tmp_path), layout="folders",
                         unseen_classes=[str(tmp_path / "unseen.txt")]))
    assert s.query.classes == ["Teddy_Bear", "cow"] and s.train.classes == ["cat", "dog"]
    s = build_splits(cfg(benchmark="quickdraw", root=str(tmp_path), layout="folders", unseen_classes=["dog"]))
    assert s.query.classes == ["dog"]
    a = build_splits(cfg(benchmark="quickdraw", root=str(tmp_path), layout="folders", num_unseen=2, split_seed=1))
    b = build_splits(cfg(benchmark="quickdraw", root=str(tmp_path), layout="folders", num_unseen=2, split_seed=1))
    assert a.query.classes == b.query.classes and len(a.query.classes) == 2
    with pytest.raises(ValueError, match="names match no class folder: zebra"):
        build_splits(cfg(benchmark="quickdraw", root=str(tmp_path), layout="folders", unseen_classes=["zebra"]))
    with pytest.raises(FileNotFoundError, match="data.unseen_classes file not found"):
        build_splits(cfg(benchmark="quickdraw", root=str(tmp_path), layout="folders",
                         unseen_classes=["lists/none.txt"]))


def test_office_home(tmp_path):
    classes = ["Alarm_Clock", "Bike", "Chair", "Desk"]
    folder_tree(tmp_path, {d: classes for d in ("Art", "Clipart", "Product", "Real World")})
    s = build_splits(cfg(benchmark="office_home", root=str(tmp_path), unseen_classes=["Chair", "Desk"]))
    assert s.train.domain_names == ["Clipart", "Real World"] and s.train.classes == ["Alarm_Clock", "Bike"]
    assert all("/Clipart/" in p for p in s.query.paths) and all("/Real World/" in p for p in s.gallery.paths)
    s = build_splits(cfg(benchmark="office_home", root=str(tmp_path), query_domain="Art", gallery_domain="Product",
                         num_unseen=1))
    assert s.train.domain_names == ["Art", "Product"] and len(s.query.classes) == 1
    with pytest.raises(FileNotFoundError, match=r"data.query_domain: no folder .*Sketch \(domains found in"):
        build_splits(cfg(benchmark="office_home", root=str(tmp_path), query_domain="Sketch", num_unseen=1))


def test_domainnet_universal_protocol(tmp_path):
    classes = ["apple", "bus", "cat", "dog"]
    doms = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
    folder_tree(tmp_path, {d: classes for d in doms})
    s = build_splits(cfg(benchmark="domainnet", root=str(tmp_path), query_domain="sketch",
                         unseen_classes=["cat", "dog"]))
    assert "sketch" not in s.train.domain_names and len(s.train.domain_names) == 5 and s.query_domain is None
    assert s.train.classes == ["apple", "bus"] and s.query.classes == ["cat", "dog"]
    assert all("/sketch/" in p for p in s.query.paths) and all("/real/" in p for p in s.gallery.paths)
    both = build_splits(cfg(benchmark="domainnet", root=str(tmp_path), query_domain="sketch",
                            unseen_classes=["cat", "dog"], gallery="seen+unseen"))
    assert both.gallery.classes == classes and len(both.gallery) == 8 and len(both.query) == 4
    with pytest.raises(ValueError, match="must be held out"):
        build_splits(cfg(benchmark="domainnet", root=str(tmp_path), query_domain="sketch",
                         train_domains=["sketch", "real"], unseen_classes=["cat"]))
    with pytest.raises(ValueError, match="domainnet needs data.unseen_classes"):
        build_splits(cfg(benchmark="domainnet", root=str(tmp_path)))


def test_domainnet_official_lists(tmp_path):
    classes = ["apple", "bus", "cat"]
    doms = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
    n = 0
    for d in doms:
        for part in ("train", "test"):
            lines = []
            for i, c in enumerate(classes):
                rel = f"{d}/{c}/{d}_{part}_{i}.jpg"
                write_image(tmp_path / rel, n)
                n += 1
                lines.append(f"{rel} {i}\n")
            (tmp_path / f"{d}_{part}.txt").write_text("".join(lines))
    s = build_splits(cfg(benchmark="domainnet", layout="filelist", root=str(tmp_path), query_domain="quickdraw",
                         unseen_classes=["cat"], gallery="seen+unseen"))
    assert len(s.train) == 5 * 2 and s.train.classes == ["apple", "bus"]
    assert len(s.query) == 2  # the held-out domain's train + test images of the unseen class
    # gallery: real test images of every class + real train images of the unseen class
    assert sorted(Path(p).name for p in s.gallery.paths) == sorted(
        ["real_test_0.jpg", "real_test_1.jpg", "real_test_2.jpg", "real_train_2.jpg"])


def test_holdout_split_when_no_unseen_classes(tmp_path):
    folder_tree(tmp_path, {"sketch": ["a", "b"], "photo": ["a", "b"]}, per_class=4)
    s = build_splits(cfg(benchmark="folders", root=str(tmp_path), query_domain="sketch", gallery_domain="photo",
                         holdout_fraction=0.25))
    assert len(s.train) == 12 and len(s.query) == 2 and len(s.gallery) == 2
    assert not set(s.train.paths) & set(s.query.paths + s.gallery.paths)
    with pytest.raises(ValueError, match="needs data.query_domain and data.gallery_domain"):
        build_splits(cfg(benchmark="folders", root=str(tmp_path)))


# -- sampler -----------------------------------------------------------------------------------------------------
LABELS = [c for c in range(6) for _ in range(5)] * 2
DOMAINS = [0] * 30 + [1] * 30


def test_pair_sampler_balance_and_cross_domain():
    s = CrossDomainPairSampler(LABELS, DOMAINS, classes_per_batch=3, pairs_per_class=2, batches_per_epoch=4,
                               query_domain=0, seed=1)
    batches = list(s)
    assert len(batches) == 4 == len(s)
    counts = torch.zeros(6, dtype=torch.int64)
    for b in batches:
        assert len(b) == 6
        classes = [LABELS[i] for i, _, _ in b]
        assert len(set(classes)) == 3 and all(classes.count(c) == 2 for c in set(classes))
        for i, j, seed in b:
            assert LABELS[i] == LABELS[j] and DOMAINS[i] == 0 and DOMAINS[j] == 1 and seed >= 0
            counts[LABELS[i]] += 1
    assert counts.max() - counts.min() <= 2  # class-balanced
    s.set_epoch(0)
    assert list(s) == batches  # a function of (seed, epoch)
    s.set_epoch(1)
    assert list(s) != batches
    s.set_epoch(0, start_batch=2)
    assert list(s) == batches[2:] and len(s) == 2


def test_pair_sampler_ddp_shards_make_the_batch():
    full = list(CrossDomainPairSampler(LABELS, DOMAINS, classes_per_batch=4, pairs_per_class=2,
                                       batches_per_epoch=3, seed=5))
    shards = [list(CrossDomainPairSampler(LABELS, DOMAINS, classes_per_batch=4, pairs_per_class=2,
                                          batches_per_epoch=3, seed=5, rank=r, world_size=2)) for r in range(2)]
    for b in range(3):
        assert sorted(shards[0][b] + shards[1][b]) == sorted(full[b])
        assert not {LABELS[i] for i, _, _ in shards[0][b]} & {LABELS[i] for i, _, _ in shards[1][b]}
    # no query domain: any domain first, the second always another one
    for batch in full:
        assert all(DOMAINS[i] != DOMAINS[j] for i, j, _ in batch)


def test_pair_sampler_checks():
    with pytest.raises(ValueError, match="classes_per_batch = 7 but only 6 classes"):
        CrossDomainPairSampler(LABELS, DOMAINS, classes_per_batch=7, pairs_per_class=1)
    with pytest.raises(ValueError, match="multiple of world_size"):
        CrossDomainPairSampler(LABELS, DOMAINS, classes_per_batch=3, pairs_per_class=1, world_size=2)
    with pytest.raises(ValueError, match="pairs_per_class"):
        CrossDomainPairSampler(LABELS, DOMAINS, classes_per_batch=3, pairs_per_class=0)
    with pytest.raises(ValueError, match="labels and domains"):
        CrossDomainPairSampler(LABELS, DOMAINS[:3], classes_per_batch=3, pairs_per_class=1)


# -- transforms and datasets -------------------------------------------------------------------------------------
def test_seeded_augmentation_is_reproducible(tmp_path):
    folder_tree(tmp_path, {"sketch": ["a"], "photo": ["a"]}, per_class=2)
    s = build_splits(cfg(benchmark="folders", root=str(tmp_path), query_domain="sketch", gallery_domain="photo",
                         holdout_fraction=0.5))
    tfs = [build_transform(k, (16, 16), (0.5,) * 3, (0.5,) * 3) for k in ("sketch", "photo")]
    ds = ImageList(s.train, tfs)
    x1, _, _ = ds[(0, 42)]
    torch.manual_seed(999)  # the global RNG does not matter
    x2, _, _ = ds[(0, 42)]
    x3, _, _ = ds[(0, 43)]
    assert x1.shape == (3, 16, 16) and torch.equal(x1, x2) and not torch.equal(x1, x3)
    ev = ImageList(s.query, build_transform("eval", (16, 16), (0.5,) * 3, (0.5,) * 3))
    assert torch.equal(ev[0][0], ev[0][0])
    with pytest.raises(ValueError, match="kind must be one of"):
        build_transform("video", (16, 16), (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="one per domain"):
        ImageList(s.train, tfs[:1] * 3)


def test_toyset_is_real_photos_and_edge_maps(tmp_path):
    from PIL import Image

    root = make_toyset(tmp_path / "toy", num_classes=3, per_class=2, image_size=24)
    assert sorted(p.name for p in (root / "photo").iterdir()) == ["astronaut", "cat", "coffee"]
    photo = Image.open(root / "photo" / "cat" / "000.png")
    sketch = Image.open(root / "sketch" / "cat" / "000.png")
    assert photo.size == (24, 24) and photo.mode == "RGB" and sketch.mode == "L"
    import numpy as np

    assert set(np.unique(np.asarray(sketch)).tolist()) <= {0, 255}
    mtime = (root / "photo" / "cat" / "000.png").stat().st_mtime_ns
    make_toyset(tmp_path / "toy", num_classes=3, per_class=2, image_size=24)  # unchanged parameters: kept
    assert (root / "photo" / "cat" / "000.png").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="num_classes"):
        make_toyset(tmp_path / "t2", num_classes=1)
