"""AdamW parameter groups (head lr, 0.1x backbone, weight decay on matrices only) and the warm-up + cosine schedule."""

import math

import pytest
import torch
from icfrr_fast.training.backbones import create_backbone
from icfrr_fast.training.config import OptimConfig
from icfrr_fast.training.model import RetrievalModel
from icfrr_fast.training.optim import build_optimizer, build_scheduler, lr_factor


def test_parameter_groups():
    model = RetrievalModel(create_backbone("icfrr_vit_tiny"), 5, semantic_dim=3)
    opt = build_optimizer(model, OptimConfig())
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"backbone/decay", "backbone/no_decay", "head/decay", "head/no_decay"}
    assert groups["head/decay"]["lr"] == 1e-4 and groups["backbone/decay"]["lr"] == pytest.approx(1e-5)
    assert groups["head/decay"]["weight_decay"] == 5e-4 and groups["backbone/no_decay"]["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in groups["backbone/no_decay"]["params"]}
    assert {"backbone.net.cls_token", "backbone.net.pos_embed", "backbone.net.norm.weight"} <= no_decay
    assert {names[id(p)] for p in groups["head/decay"]["params"]} == {"classifier.weight", "semantic_head.weight"}
    n_all = sum(len(g["params"]) for g in opt.param_groups)
    assert n_all == len(list(model.parameters()))


def test_schedule():
    assert lr_factor(0, 100, warmup_steps=10) == pytest.approx(0.1)
    assert lr_factor(9, 100, warmup_steps=10) == pytest.approx(1.0)
    assert lr_factor(10, 100, warmup_steps=10) == pytest.approx(1.0)
    assert lr_factor(55, 100, warmup_steps=10) == pytest.approx(0.5)
    assert lr_factor(100, 100, warmup_steps=10, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(30, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_scheduler(opt, 4)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([2.0 * lr_factor(s, 4) for s in range(4)])
    with pytest.raises(ValueError, match="total_steps"):
        build_scheduler(opt, 0)
