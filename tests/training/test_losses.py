"""Each loss against values computed by hand on small tensors; argument checks."""

import math

import pytest
import torch
from icfrr_fast.training.losses import (
    ClassificationLoss,
    CrossDomainTripletLoss,
    MixturePredictionLoss,
    SemanticNeighbourhoodLoss,
    StreamDistillationLoss,
    classification_loss,
    cross_domain_triplet_loss,
    distribution_alignment_loss,
    mixture_prediction_loss,
    neighbourhood_targets,
    semantic_neighbourhood_loss,
    stream_distillation_loss,
)
from icfrr_fast.training.mixup import cross_domain_probability, mix_images


# -- classification ----------------------------------------------------------------------------------------------
def test_classification_hand_value():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([2, 0])
    z = math.exp(1) + math.exp(2) + math.exp(3)
    expected = (-(3 - math.log(z)) + math.log(3)) / 2
    assert classification_loss(logits, labels).item() == pytest.approx(expected, abs=1e-6)
    # label smoothing eps: target (1 - eps + eps/C) on y, eps/C elsewhere
    eps = 0.3
    logp = [1 - math.log(z), 2 - math.log(z), 3 - math.log(z)]
    t = [eps / 3, eps / 3, 1 - eps + eps / 3]
    row0 = -sum(ti * li for ti, li in zip(t, logp))
    expected = (row0 + math.log(3)) / 2
    assert ClassificationLoss(eps)(logits, labels).item() == pytest.approx(expected, abs=1e-6)


def test_classification_checks():
    with pytest.raises(ValueError, match="logits"):
        classification_loss(torch.zeros(3), torch.tensor([0]))
    with pytest.raises(ValueError, match="labels"):
        classification_loss(torch.zeros(2, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match="label_smoothing"):
        classification_loss(torch.zeros(1, 3), torch.tensor([0]), 1.0)


# -- triplet -----------------------------------------------------------------------------------------------------
F4 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.5], [2.0, 0.0]])
Y4 = torch.tensor([0, 0, 1, 1])
D4 = torch.tensor([0, 1, 0, 1])


def test_triplet_single_candidates_hand_value():
    # every anchor has exactly one cross-domain positive and one cross-domain negative
    r125, r425 = math.sqrt(1.25), math.sqrt(4.25)
    per_anchor = [max(0, 1 - 2 + 0.2), 1 - r125 + 0.2, r425 - r125 + 0.2, r425 - 2 + 0.2]
    expected = sum(per_anchor) / 4
    for mining in ("batch_hard", "random"):
        got = cross_domain_triplet_loss(F4, Y4, D4, margin=0.2, mining=mining)
        assert got.item() == pytest.approx(expected, abs=1e-6)
    # anchors of domain 0 only: anchors 0 and 2
    got = cross_domain_triplet_loss(F4, Y4, D4, margin=0.2, anchor_domain=0)
    assert got.item() == pytest.approx((per_anchor[0] + per_anchor[2]) / 2, abs=1e-6)


def test_triplet_batch_hard_picks_hardest_cross_domain():
    # anchor 0 (class 0, domain 0); same-domain items must be ignored even when closer/farther
    f = torch.tensor([[0.0, 0.0],   # 0: anchor, c0 d0
                      [0.0, 3.0],   # 1: c0 d1  positive, D = 3 (hardest positive)
                      [0.0, 1.0],   # 2: c0 d1  positive, D = 1
                      [0.5, 0.0],   # 3: c1 d1  negative, D = 0.5 (hardest negative)
                      [2.0, 0.0],   # 4: c1 d1  negative, D = 2
                      [0.1, 0.0],   # 5: c1 d0  same domain: never a negative of anchor 0
                      [9.0, 9.0]])  # 6: c0 d0  same domain: never a positive of anchor 0
    y = torch.tensor([0, 0, 0, 1, 1, 1, 0])
    d = torch.tensor([0, 1, 1, 1, 1, 0, 0])
    got = cross_domain_triplet_loss(f, y, d, margin=0.2, anchor_domain=0)
    # anchor 0: 3 - 0.5 + 0.2 = 2.7
    # anchor 5 (c1 d0): pos {3,4}: max(0.4, 1.9) = 1.9; neg {1,2}: min(sqrt(9.01), sqrt(1.01))
    a5 = 1.9 - math.sqrt(1.01) + 0.2
    # anchor 6 (c0 d0) at (9,9): pos {1,2}: max(sqrt(81+36), sqrt(81+64)); neg {3,4}: min(sqrt(8.5^2+81), sqrt(49+81))
    a6 = max(0.0, math.sqrt(145) - math.sqrt(130) + 0.2)
    assert got.item() == pytest.approx((2.7 + a5 + a6) / 3, abs=1e-5)


def test_triplet_random_mining_draws_valid_pairs():
    f = torch.randn(12, 4)
    y = torch.tensor([0, 0, 0, 1, 1, 1] * 2)
    d = torch.tensor([0] * 6 + [1] * 6)
    hard = cross_domain_triplet_loss(f, y, d, margin=0.5)
    g = torch.Generator().manual_seed(0)
    vals = [cross_domain_triplet_loss(f, y, d, margin=0.5, mining="random", generator=g).item() for _ in range(20)]
    assert max(vals) <= hard.item() + 1e-6  # batch-hard bounds every random draw from above
    assert len({round(v, 6) for v in vals}) > 1
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert cross_domain_triplet_loss(f, y, d, mining="random", generator=g1).item() == \
        cross_domain_triplet_loss(f, y, d, mining="random", generator=g2).item()


def test_triplet_no_valid_anchor_is_zero_with_grad():
    f = torch.randn(3, 2, requires_grad=True)
    loss = cross_domain_triplet_loss(f, torch.tensor([0, 0, 0]), torch.tensor([0, 1, 0]))
    assert loss.item() == 0.0
    loss.backward()
    assert f.grad is not None


def test_triplet_checks():
    with pytest.raises(ValueError, match="mining"):
        cross_domain_triplet_loss(F4, Y4, D4, mining="semi")
    with pytest.raises(ValueError, match="margin"):
        cross_domain_triplet_loss(F4, Y4, D4, margin=-1)
    with pytest.raises(ValueError, match="domains"):
        cross_domain_triplet_loss(F4, Y4, D4[:3])
    with pytest.raises(ValueError, match="embeddings"):
        cross_domain_triplet_loss(F4[0], Y4, D4)
    with pytest.raises(ValueError, match="mining"):
        CrossDomainTripletLoss(mining="x")


# -- distribution alignment --------------------------------------------------------------------------------------
def test_alignment_hand_value():
    f = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    z = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])
    # row 0: KL([.75,.25] || [.5,.5]); row 1: identical distributions -> 0
    kl0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    got = distribution_alignment_loss(f, noise=z)
    assert got.item() == pytest.approx(kl0 / 2, abs=1e-6)


def test_alignment_draws_fresh_noise():
    f = torch.randn(4, 16)
    a, b = distribution_alignment_loss(f), distribution_alignment_loss(f)
    assert a.item() != b.item()  # fresh z each call
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert distribution_alignment_loss(f, generator=g1).item() == distribution_alignment_loss(f, generator=g2).item()
    with pytest.raises(ValueError, match="noise"):
        distribution_alignment_loss(f, noise=torch.zeros(4, 15))
    with pytest.raises(ValueError, match="features"):
        distribution_alignment_loss(torch.zeros(3))


# -- semantic losses ---------------------------------------------------------------------------------------------
E3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # cos(e0, e2) = cos(e1, e2) = 1/sqrt2, cos(e0, e1) = 0
S = 1 / math.sqrt(2)


def _log_softmax(xs):
    m = math.log(sum(math.exp(x) for x in xs))
    return [x - m for x in xs]


def test_semantic_neighbourhood_k1_is_cosine_cross_entropy():
    h = torch.tensor([[2.0, 0.0]])  # cos with E: [1, 0, S]
    tau = 0.5
    expected = -_log_softmax([1 / tau, 0.0, S / tau])[0]
    got = semantic_neighbourhood_loss(h, torch.tensor([0]), E3, neighbours=1, temperature=tau)
    assert got.item() == pytest.approx(expected, abs=1e-5)


def test_semantic_neighbourhood_k2_hand_value():
    h = torch.tensor([[0.0, 1.0]])  # cos with E: [0, 1, S]
    tau, tau_s = 1.0, 0.5
    # class 0's neighbourhood: itself (cos 1) and class 2 (cos S); weights softmax([1, S] / tau_s)
    w = [math.exp(1 / tau_s), math.exp(S / tau_s)]
    w = [x / sum(w) for x in w]
    lp = _log_softmax([0.0, 1.0, S])
    expected = -(w[0] * lp[0] + w[1] * lp[2])
    got = semantic_neighbourhood_loss(h, torch.tensor([0]), E3, neighbours=2, temperature=tau,
                                      semantic_temperature=tau_s)
    assert got.item() == pytest.approx(expected, abs=1e-5)
    T = neighbourhood_targets(E3, 2, tau_s)
    assert torch.allclose(T[0], torch.tensor([w[0], 0.0, w[1]]), atol=1e-6)
    assert torch.allclose(T.sum(1), torch.ones(3))
    mod = SemanticNeighbourhoodLoss(E3, neighbours=2, temperature=tau, semantic_temperature=tau_s)
    assert mod(h, torch.tensor([0])).item() == pytest.approx(expected, abs=1e-5)


def test_mixture_prediction_hand_value():
    h = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    lam = torch.tensor([0.25, 1.0])
    lp0 = _log_softmax([S, S, 1.0])  # cos of (1,1) with E
    lp1 = _log_softmax([1.0, 0.0, S])
    expected = (-(0.25 * lp0[0] + 0.75 * lp0[1]) - lp1[2]) / 2
    got = mixture_prediction_loss(h, torch.tensor([0, 2]), torch.tensor([1, 0]), lam, E3, temperature=1.0)
    assert got.item() == pytest.approx(expected, abs=1e-5)
    assert MixturePredictionLoss(E3, 1.0)(h, torch.tensor([0, 2]), torch.tensor([1, 0]), lam).item() == \
        pytest.approx(expected, abs=1e-5)


def test_semantic_checks():
    with pytest.raises(ValueError, match="neighbours"):
        neighbourhood_targets(E3, 4)
    with pytest.raises(ValueError, match="S ="):
        semantic_neighbourhood_loss(torch.zeros(1, 3), torch.tensor([0]), E3)
    with pytest.raises(ValueError, match="temperature"):
        semantic_neighbourhood_loss(torch.zeros(1, 2), torch.tensor([0]), E3, temperature=0)
    with pytest.raises(ValueError, match="lam"):
        mixture_prediction_loss(torch.zeros(2, 2), torch.tensor([0, 1]), torch.tensor([0, 1]), torch.ones(3), E3)


# -- distillation ------------------------------------------------------------------------------------------------
def test_distillation_hand_values_and_stop_gradient():
    s = torch.tensor([[1.0, 2.0], [1.0, 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, 0.0], [0.0, 1.0]], requires_grad=True)
    assert stream_distillation_loss(s, t, "mse").item() == pytest.approx((5 + 2) / 2)
    # cos((1,2),(0,0)) = 0 (torch defines it with an eps), cos((1,0),(0,1)) = 0
    assert stream_distillation_loss(s, t, "cosine").item() == pytest.approx(1.0)
    T = 2.0
    pt = [math.exp(x / T) for x in (0.0, 1.0)]
    pt = [x / sum(pt) for x in pt]
    ls = _log_softmax([0.5, 0.0])
    kl1 = sum(p * (math.log(p) - q) for p, q in zip(pt, ls))
    kl0 = sum(0.5 * (math.log(0.5) - q) for q in _log_softmax([0.5, 1.0]))
    got = stream_distillation_loss(s, t, "kl", T)
    assert got.item() == pytest.approx(T * T * (kl0 + kl1) / 2, abs=1e-6)
    StreamDistillationLoss("mse")(s, t).backward()
    assert s.grad is not None and t.grad is None
    with pytest.raises(ValueError, match="form"):
        stream_distillation_loss(s, t, "l1")
    with pytest.raises(ValueError, match="same shape"):
        stream_distillation_loss(s, t[:1])


# -- mixup curriculum --------------------------------------------------------------------------------------------
def test_cross_domain_curriculum():
    assert cross_domain_probability(0.0, 0.5, 0.5) == 0.0
    assert cross_domain_probability(0.25, 0.5, 0.5) == pytest.approx(0.25)
    assert cross_domain_probability(0.9, 0.5, 0.5) == 0.5
    assert cross_domain_probability(0.0, 0.8, 0.0) == 0.8
    with pytest.raises(ValueError, match="p_max"):
        cross_domain_probability(0.5, 1.5)


def test_mix_images_within_and_cross_domain():
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 2, 2).contiguous()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    d = torch.tensor([0, 0, 0, 1, 1, 1])
    for p, cross in ((0.0, False), (1.0, True)):
        m = mix_images(x, y, d, p_cross=p, alpha=0.4)
        assert bool((d[m.partner] != d).all()) == cross and bool((d[m.partner] == d).all()) != cross
        assert bool((m.partner != torch.arange(6)).all())
        expect = m.lam.view(6, 1, 1, 1) * x + (1 - m.lam.view(6, 1, 1, 1)) * x[m.partner]
        assert torch.allclose(m.images, expect)
        assert torch.equal(m.labels_b, y[m.partner]) and bool(((m.lam >= 0) & (m.lam <= 1)).all())
    # a domain with a single item has no same-domain partner: it falls back to cross-domain
    m = mix_images(x[:4], y[:4], torch.tensor([0, 0, 0, 1]), p_cross=0.0)
    assert int(m.partner[3]) in (0, 1, 2) and bool(m.cross[3])
    with pytest.raises(ValueError, match="p_cross"):
        mix_images(x, y, d, p_cross=2.0)
    with pytest.raises(ValueError, match="at least 2"):
        mix_images(x[:1], y[:1], d[:1], 0.5)
