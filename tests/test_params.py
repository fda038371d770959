"""ICFRRParams: defaults, immutability, the one set of checks, and the ops' keyword arguments."""

import dataclasses

import pytest
import torch

import icfrr_fast
from icfrr_fast import ICFRRParams, ops, reference


def test_defaults_and_frozen():
    p = ICFRRParams()
    assert (p.k_g, p.k_q, p.beta, p.iters, p.semantics, p.depth, p.early_stop) == (None, 250, 0.5, 5, "reference",
                                                                                   None, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.k_q = 3
    assert ICFRRParams(beta=2).beta == 2.0 and isinstance(ICFRRParams(beta=2).beta, float)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(k_q=0), ValueError, "k_q must be in"),
    (dict(k_q=2.0), TypeError, "k_q must be an int"),
    (dict(beta=-1.0), ValueError, "beta must be finite and >= 0"),
    (dict(beta=float("nan")), ValueError, "beta must be finite"),
    (dict(beta=True), TypeError, "beta must be a float"),
    (dict(iters=-1), ValueError, "iters must be in"),
    (dict(semantics="fast"), ValueError, "semantics must be one of"),
    (dict(semantics=1), TypeError, "semantics must be a str"),
    (dict(early_stop=1), TypeError, "early_stop must be a bool"),
    (dict(k_g=3.0), TypeError, "k_g must be an int or None"),
    (dict(depth=True), TypeError, "depth must be an int or None"),
])
def test_bad_values(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ICFRRParams(**kwargs)


def test_same_rules_as_the_op_and_the_public_function():
    # one rule, one message: ICFRRParams, ops.validate_icfrr_rerank and icfrr() reject alike
    s, g = torch.randn(2, 12), torch.randn(12, 12)
    nb = icfrr_fast.GalleryGraph.from_distances(g, 3).neighbors
    for bad in (dict(k_q=0), dict(iters=-2), dict(semantics="x"), dict(beta=-0.5)):
        msgs = []
        for call in (lambda: ICFRRParams(**bad),
                     lambda: ops.validate_icfrr_rerank(s, nb, **dict(ICFRRParams().op_kwargs(), **bad), largest=True,
                                                       depth=12, k=12, return_history=False),
                     lambda: icfrr_fast.icfrr(s, g, k_g=3, **bad)):
            with pytest.raises(ValueError) as e:
                call()
            msgs.append(str(e.value))
        assert msgs[0] == msgs[1] == msgs[2]


def test_op_kwargs_drive_the_op_and_the_reference():
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(3, 20, generator=gen, dtype=torch.float64)
    nb = icfrr_fast.GalleryGraph.from_distances(torch.randn(20, 20, generator=gen), 4).neighbors
    p = ICFRRParams(k_q=5, beta=0.7, iters=3, semantics="paper")
    args = dict(p.op_kwargs(), largest=True, depth=20, k=10, return_history=True)
    got = ops.icfrr_rerank(s, nb, **args)
    want = reference.icfrr_rerank(s, nb, **args)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
