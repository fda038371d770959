"""The loop: a tiny model overfits a tiny real-image set; exact resume; validation before/after ICFRR per iteration;
checkpoints; accumulation; the semantic / mixture / ViT-x paths end to end."""

import json
import math

import pytest
import torch
from icfrr_fast.training.checkpoint import load_checkpoint
from icfrr_fast.training.data import build_splits, eval_loader
from icfrr_fast.training.engine import evaluate
from icfrr_fast.training.run_log import RunLog
from icfrr_fast.training.train import build_model, fit, load_model
from icfrr_fast.training.validation import retrieval_metrics

import icfrr_fast
from icfrr_fast.metrics import evaluate_history
from icfrr_fast.testing import cross_domain_features

from ._runs import tiny_config


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return tmp_path_factory.mktemp("toy")


def _train_set_map(model, cfg) -> float:
    """mAP@all of training sketches against training photos (the set the model is fitted to)."""
    splits = build_splits(cfg.data)
    tr = splits.train
    sk = tr.subset([i for i, d in enumerate(tr.domains) if tr.domain_names[d] == "sketch"])
    ph = tr.subset([i for i, d in enumerate(tr.domains) if tr.domain_names[d] == "photo"])
    kw = dict(size=(32, 32), mean=model.backbone.mean, std=model.backbone.std, batch_size=64)
    m = evaluate(model, eval_loader(sk, **kw), eval_loader(ph, **kw), device=torch.device("cpu"), k_g=4, k_q=4,
                 iters=1, map_at=(10,), precision_at=(5,))
    return m["base/mAP@all"]


def test_tiny_model_overfits_tiny_real_image_set(tmp_path, toy_root):
    cfg = tiny_config(tmp_path / "run", tmp_path / "toy5", train__epochs=16, data__toy_classes=5,
                      data__num_unseen=1, data__toy_image_size=48, optim__lr=5e-3)
    torch.manual_seed(cfg.train.seed)
    splits = build_splits(cfg.data)
    before = _train_set_map(build_model(cfg, len(splits.train.classes)), cfg)  # fit() starts from this init
    result = fit(cfg)
    losses = [h["loss"] for h in result["history"]]
    assert len(losses) == 64
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.75 * first, losses
    model, _ = load_model(tmp_path / "run" / "last.pth")
    after = _train_set_map(model, cfg)
    assert after > before + 0.1 and after > 0.55, (before, after)


def test_resume_reproduces_the_uninterrupted_run(tmp_path, toy_root):
    emb = {c: torch.randn(6).tolist() for c in ("astronaut", "cat", "coffee", "rocket", "moon")}
    (tmp_path / "emb.json").write_text(json.dumps(emb))
    kw = dict(loss__semantic=0.5, loss__mixture=0.5, loss__class_embeddings=str(tmp_path / "emb.json"),
              loss__semantic_neighbours=2, model__vitx=True, loss__distill=0.5, loss__mixup_ramp=0.3,
              model__drop_path=0.1, optim__warmup_epochs=0.5)
    full = fit(tiny_config(tmp_path / "full", toy_root, train__max_steps=6, **kw))
    parts = full["history"][0].keys()
    assert {"ce", "triplet", "align", "semantic", "mixture", "cross_ce", "distill"} <= set(parts)
    # interrupted mid-epoch (4 batches per epoch) after step 3 ...
    fit(tiny_config(tmp_path / "split", toy_root, train__max_steps=3, **kw))
    ck = load_checkpoint(tmp_path / "split" / "last.pth")
    assert ck["position"] == {"epoch": 0, "batch": 3, "step": 3}
    # ... and resumed: the next steps' losses are those of the uninterrupted run, exactly
    resumed = fit(tiny_config(tmp_path / "split", toy_root, train__max_steps=6, train__resume="auto", **kw))
    assert [h["step"] for h in resumed["history"]] == [4, 5, 6]
    for a, b in zip(full["history"][3:], resumed["history"]):
        assert a == b, (a, b)
    # the CSV log holds the whole history across the interruption
    rows = [r for r in RunLog.read(tmp_path / "split" / "metrics.csv") if r["metric"] == "loss"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[3]["value"] == full["history"][3]["loss"]


def test_gradient_accumulation_counts_optimizer_steps(tmp_path, toy_root):
    r = fit(tiny_config(tmp_path / "acc", toy_root, train__accum_steps=3, train__epochs=1))
    # 4 micro-batches per epoch in groups of 3 -> 2 optimizer steps (the last group has one micro-batch)
    assert [h["step"] for h in r["history"]] == [1, 2]
    assert all(math.isfinite(h["loss"]) for h in r["history"])


def test_mixed_precision_choices(tmp_path, toy_root):
    r = fit(tiny_config(tmp_path / "bf16", toy_root, train__amp="bf16", train__max_steps=1, model__vitx=True))
    assert math.isfinite(r["history"][0]["loss"])
    with pytest.raises(ValueError, match="train.amp: fp16 needs a CUDA device"):
        fit(tiny_config(tmp_path / "fp16", toy_root, train__amp="fp16", train__max_steps=1))


def test_validation_reports_every_iteration_and_keeps_best(tmp_path, toy_root):
    cfg = tiny_config(tmp_path / "val", toy_root, eval__every=1, eval__at_start=True,
                      eval__best_metric="it2/mAP@all")
    r = fit(cfg)
    m = r["metrics"]
    for prefix in ("base", "it1", "it2", "icfrr"):
        for name in ("mAP@all", "mAP@10", "P@5"):
            assert 0.0 <= m[f"{prefix}/{name}"] <= 1.0
    assert m["icfrr/mAP@all"] == m["it2/mAP@all"] and m["queries"] > 0 and m["k_g"] == 4
    rows = RunLog.read(tmp_path / "val" / "metrics.csv")
    val_steps = sorted({r["step"] for r in rows if r["phase"] == "val"})
    assert val_steps == [0, 4, 8]  # at start and after each epoch
    best = load_checkpoint(tmp_path / "val" / "best.pth")
    vals = {r["step"]: r["value"] for r in rows if r["phase"] == "val" and r["metric"] == "it2/mAP@all"}
    assert best["best"]["value"] == max(vals.values()) and best["optimizer"] is None
    assert (tmp_path / "val" / "config.yaml").is_file()
    with pytest.raises(ValueError, match="eval.best_metric 'val/x' is not reported"):
        fit(tiny_config(tmp_path / "bad", toy_root, eval__best_metric="val/x", train__epochs=1))


def test_retrieval_metrics_match_direct_computation():
    data = cross_domain_features(12, 40, dim=16, num_classes=4, seed=3)
    m = retrieval_metrics(data.queries, data.query_labels, data.gallery, data.gallery_labels, k_g=6, k_q=5,
                          iters=3, map_at=(10,), precision_at=(5, 10), chunk_size=5)
    res = icfrr_fast.icfrr(torch.cdist(data.queries, data.gallery), torch.cdist(data.gallery, data.gallery),
                           k_g=6, k_q=5, iters=3, largest=False, return_history=True)
    direct = evaluate_history(res.history, data.query_labels, data.gallery_labels, map_at=(10,),
                              precision_at=(5, 10))
    for t, d in enumerate(direct):
        name = "base" if t == 0 else f"it{t}"
        for k in ("mAP@all", "mAP@10", "P@5", "P@10"):
            assert m[f"{name}/{k}"] == pytest.approx(d[k], abs=1e-12)
    m_big = retrieval_metrics(data.queries, data.query_labels, data.gallery, data.gallery_labels, k_g=6, k_q=5,
                              iters=3, map_at=(10,), precision_at=(5, 10), chunk_size=1000)
    assert m_big == pytest.approx(m)
    small = retrieval_metrics(data.queries[:2], data.query_labels[:2], data.gallery[:3], data.gallery_labels[:3],
                              k_g=256, k_q=250, iters=1)
    assert small["k_g"] == 2 and small["k_q"] == 3  # clipped to the gallery
    with pytest.raises(ValueError, match="same D"):
        retrieval_metrics(data.queries, data.query_labels, data.gallery[:, :3], data.gallery_labels)


def test_checkpoints_load_weights_only(tmp_path, toy_root):
    fit(tiny_config(tmp_path / "ck", toy_root, train__max_steps=1))
    ck = load_checkpoint(tmp_path / "ck" / "last.pth")
    assert set(ck) >= {"model", "optimizer", "scheduler", "rng", "position", "config"}
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "ck").iterdir())  # atomic writes leave no temp

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({**ck, "extra": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refused to load"):
        load_checkpoint(tmp_path / "evil.pth")
    torch.save({"model": {}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not an icfrr_fast training checkpoint"):
        load_checkpoint(tmp_path / "other.pth")
