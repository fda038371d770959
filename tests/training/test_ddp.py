"""One DDP step with two gloo processes equals the single-process step on the whole batch."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from icfrr_fast.training.checkpoint import load_checkpoint
from icfrr_fast.training.train import build_model, fit

from ._runs import tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(out, root, **kw):
    # cross-entropy alone: a per-image mean, so two equal halves averaged by DDP give the full batch's gradient
    return tiny_config(out, root, loss__triplet=0.0, loss__align=0.0, train__max_steps=1, optim__lr=1e-2, **kw)


def _worker(rank: int, world: int, port: int, out: str, root: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    result = fit(_cfg(out, root))
    torch.save(result["history"], os.path.join(out, f"history{rank}.pt"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_one_ddp_step_two_gloo_processes(tmp_path):
    root = tmp_path / "toy"
    single = fit(_cfg(tmp_path / "single", root))  # also writes the toy set both ranks then read
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), str(root)), nprocs=2, join=True)
    ref = load_checkpoint(tmp_path / "single" / "last.pth")["model"]
    got = load_checkpoint(tmp_path / "ddp" / "last.pth")["model"]
    assert ref.keys() == got.keys()
    # AdamW's first update is lr * g / (|g| + eps) per element: without gradient averaging most elements would
    # differ by up to 2 lr = 2e-2; rounding differences (two half-batch means averaged vs one mean) move only a
    # few near-zero-gradient elements, by far less than lr / 100
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-4, msg=k)
    torch.manual_seed(0)  # fit() builds the model right after seeding: the same initial weights
    init = build_model(_cfg(tmp_path / "x", root), 4).state_dict()
    assert max(float((ref[k] - init[k]).abs().max()) for k in ref) > 5e-3  # the step did move the weights
    # each rank saw half of the classes: its loss is the mean over its half; their mean is the full batch's loss
    h0 = torch.load(tmp_path / "ddp" / "history0.pt", weights_only=True)
    h1 = torch.load(tmp_path / "ddp" / "history1.pt", weights_only=True)
    assert h0[0]["ce"] != h1[0]["ce"]
    assert (h0[0]["ce"] + h1[0]["ce"]) / 2 == pytest.approx(single["history"][0]["ce"], rel=1e-5)
