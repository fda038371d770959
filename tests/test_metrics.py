"""Metrics against scikit-learn and hand-computed cases (docs/design.md §5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from icfrr_fast.metrics import IterationMetrics, average_precision, evaluate, evaluate_history


def _random_case(Q=30, G=80, classes=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ql = torch.randint(0, classes, (Q,), generator=gen)
    gl = torch.randint(0, classes, (G,), generator=gen)
    scores = torch.randn(Q, G, generator=gen, dtype=torch.float64)
    ranking = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return ql, gl, scores, ranking


@pytest.mark.parametrize("seed", range(4))
def test_map_all_equals_sklearn(seed):
    ql, gl, scores, ranking = _random_case(seed=seed)
    m = evaluate(ranking, ql, gl)
    aps = []
    for q in range(len(ql)):
        y = (gl == ql[q]).numpy()
        if y.any():
            aps.append(average_precision_score(y, scores[q].numpy()))
    assert m["mAP@all"] == pytest.approx(float(np.mean(aps)), abs=1e-12)
    assert m["queries"] == len(aps) and m["queries_without_positive"] == len(ql) - len(aps)


def test_scores_below_zero_give_the_same_metrics():
    """Metrics depend on the ranking only: shifting all scores below zero (distances negated) changes nothing,
    unlike torchmetrics >= 1.9, which treats scores <= 0 as irrelevant."""
    ql, gl, scores, _ = _random_case(seed=3)
    shifted = scores - scores.max() - 10.0
    a = evaluate(torch.sort(scores, dim=1, descending=True, stable=True).indices, ql, gl)
    b = evaluate(torch.sort(shifted, dim=1, descending=True, stable=True).indices, ql, gl)
    assert a == b


def test_hand_computed():
    # ranking: rel = [1, 0, 1, 0, 1], 3 positives in a gallery of 6 (one never retrieved in a cut list)
    gl = torch.tensor([1, 0, 1, 0, 1, 1])
    q = torch.tensor([1])
    full = torch.tensor([[0, 1, 2, 3, 4, 5]])  # rel = 1 0 1 0 1 1
    m = evaluate(full, q, gl, map_at=(3,), precision_at=(2, 4))
    ap = (1 / 1 + 2 / 3 + 3 / 5 + 4 / 6) / 4
    assert m["mAP@all"] == pytest.approx(ap)
    assert m["mAP@3"] == pytest.approx((1 + 2 / 3) / 2)  # normalised by positives retrieved in the top 3
    assert m["P@2"] == pytest.approx(0.5) and m["P@4"] == pytest.approx(0.5)
    m2 = evaluate(full, q, gl, map_at=(3,), at_k="min_k_pos")
    assert m2["mAP@3"] == pytest.approx((1 + 2 / 3) / 3)  # min(3, 4 positives)
    cut = torch.tensor([[0, 1, 2]])  # truncated list: missing positives count as not retrieved
    assert evaluate(cut, q, gl)["mAP@all"] == pytest.approx((1 + 2 / 3) / 4)


def test_voc_interpolated_ap():
    rel = torch.tensor([[True, False, True, False, True]])
    # precisions at hits 1, 2/3, 3/5; monotone envelope: 1, 2/3, 3/5 -> (1 + 2/3 + 3/5) / 3
    assert float(average_precision(rel, torch.tensor([3]), "voc")) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    rel = torch.tensor([[False, True, True]])
    # precisions 1/2, 2/3; envelope 2/3, 2/3
    assert float(average_precision(rel, torch.tensor([2]), "voc")) == pytest.approx(2 / 3)
    assert float(average_precision(rel, torch.tensor([2]))) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_no_positive_queries_are_excluded_and_counted():
    gl = torch.tensor([0, 0, 1])
    ranking = torch.tensor([[0, 1, 2], [2, 1, 0]])
    m = evaluate(ranking, torch.tensor([0, 5]), gl)
    assert m["queries"] == 1 and m["queries_without_positive"] == 1 and m["mAP@all"] == 1.0
    m = evaluate(ranking, torch.tensor([7, 5]), gl)
    assert m["queries"] == 0 and np.isnan(m["mAP@all"])


def test_chunking_does_not_change_results():
    ql, gl, _, ranking = _random_case(Q=50, seed=1)
    a, b = evaluate(ranking, ql, gl, chunk_size=7), evaluate(ranking, ql, gl, chunk_size=1000)
    assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], abs=1e-12) for k in a)  # summation order


def test_history():
    ql, gl, _, ranking = _random_case(Q=5)
    h = torch.stack([ranking, ranking.flip(1)], dim=1)
    out = evaluate_history(h, ql, gl)
    assert out[0] == evaluate(ranking, ql, gl) and out[1] == evaluate(ranking.flip(1), ql, gl)


def test_iteration_metrics_over_chunks_equal_the_whole_history():
    ql, gl, _, ranking = _random_case(Q=23, seed=3)
    ql[4:9] = int(gl.max()) + 1  # queries without a positive; the chunk [4, 8) has none counted
    h = torch.stack([ranking, ranking.flip(1), ranking.roll(1, dims=1)], dim=1)
    kw = dict(map_at=(3,), precision_at=(2, 5))
    whole = evaluate_history(h, ql, gl, **kw)
    acc = IterationMetrics(gl, **kw)
    assert acc.compute() == []
    for lo, hi in ((0, 4), (4, 8), (8, 9), (9, 23)):
        acc.update(h[lo:hi], ql[lo:hi])
    got = acc.compute()
    assert (acc.queries, acc.queries_without_positive) == (whole[0]["queries"], whole[0]["queries_without_positive"])
    assert acc.queries_without_positive == 5
    assert len(got) == 3
    for g, w in zip(got, whole):
        assert g.keys() == {"mAP@all", "mAP@3", "P@2", "P@5"}
        assert all(g[k] == pytest.approx(w[k], abs=1e-12) for k in g)
    assert got[0] != got[1]
    with pytest.raises(ValueError, match="earlier chunks had 3"):
        acc.update(h[:2, :2], ql[:2])


def test_iteration_metrics_without_counted_queries_are_nan():
    ql, gl, _, ranking = _random_case(Q=3, seed=4)
    acc = IterationMetrics(gl)
    acc.update(ranking[:, None], torch.full_like(ql, int(gl.max()) + 1))
    (m,) = acc.compute()
    assert acc.queries == 0 and acc.queries_without_positive == 3 and all(math.isnan(v) for v in m.values())


BAD = [
    (dict(indices=torch.zeros(3, dtype=torch.long)), ValueError, "indices must be 2-D"),
    (dict(indices=torch.zeros(2, 3)), TypeError, "indices must be an integer tensor"),
    (dict(indices=torch.tensor([[0, 9, 1], [0, 1, 2]])), ValueError, "indices must be gallery ids"),
    (dict(query_labels=torch.tensor([1])), ValueError, "one label per row"),
    (dict(query_labels=torch.tensor([1.0, 2.0])), TypeError, "query_labels must be an integer"),
    (dict(gallery_labels=torch.zeros(3, 1, dtype=torch.long)), ValueError, "gallery_labels must be 1-D"),
    (dict(map_at=(0,)), ValueError, "map_at must hold positive ints"),
    (dict(precision_at=(2.5,)), ValueError, "precision_at must hold positive ints"),
    (dict(ap="11point"), ValueError, "ap must be one of"),
    (dict(at_k="all"), ValueError, "at_k must be one of"),
]


@pytest.mark.parametrize("kw,exc,match", BAD, ids=[m for _, _, m in BAD])
def test_bad_input(kw, exc, match):
    args = dict(indices=torch.tensor([[0, 1, 2], [2, 1, 0]]), query_labels=torch.tensor([0, 1]),
                gallery_labels=torch.tensor([0, 1, 1]))
    extra = {k: v for k, v in kw.items() if k not in args}
    args.update({k: v for k, v in kw.items() if k in args})
    with pytest.raises(exc, match=match):
        evaluate(args["indices"], args["query_labels"], args["gallery_labels"], **extra)
