"""Protocol evaluators (metrics.evaluate_reid, metrics.evaluate_revisited): hand-computed cases, brute force per
query, scikit-learn's average precision, chunking, bad input."""

import pytest
import torch
from sklearn.metrics import average_precision_score

from icfrr_fast.metrics import evaluate_reid, evaluate_revisited


def _reid_data(Q=30, G=120, ids=12, cams=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    gid = torch.randint(-1, ids, (G,), generator=gen)
    gcam = torch.randint(0, cams, (G,), generator=gen)
    qid = torch.randint(0, ids + 1, (Q,), generator=gen)  # id `ids` has no gallery item
    qcam = torch.randint(0, cams, (Q,), generator=gen)
    ranking = torch.stack([torch.randperm(G, generator=gen) for _ in range(Q)])
    return ranking, qid, gid, qcam, gcam


def _brute_reid(ranking, qid, gid, qcam, gcam, cmc_at, use_sklearn):
    aps, inps, cmc, valid = [], [], {r: [] for r in cmc_at}, 0
    for q in range(ranking.shape[0]):
        n_pos = int(((gid == qid[q]) & (gcam != qcam[q])).sum())
        if n_pos == 0:
            continue
        valid += 1
        lst = [int(i) for i in ranking[q] if not ((gid[i] == qid[q] and gcam[i] == qcam[q]) or gid[i] == -1)]
        rel = [bool(gid[i] == qid[q]) for i in lst]
        if use_sklearn:
            aps.append(average_precision_score(rel, [-r for r in range(len(rel))]) * sum(rel) / n_pos if any(rel)
                       else 0.0)
        else:
            hits, ap = 0, 0.0
            for r, x in enumerate(rel):
                if x:
                    hits += 1
                    ap += hits / (r + 1)
            aps.append(ap / n_pos)
        pos_ranks = [r for r, x in enumerate(rel) if x]
        inps.append(n_pos / (pos_ranks[-1] + 1) if len(pos_ranks) == n_pos else 0.0)
        for c in cmc_at:
            cmc[c].append(float(bool(pos_ranks) and pos_ranks[0] < c))
    out = {f"Rank-{c}": sum(v) / valid for c, v in cmc.items()}
    out.update({"mAP": sum(aps) / valid, "mINP": sum(inps) / valid, "queries": valid})
    return out


def test_reid_hand_computed():
    # query 0 (id 7, cam 0): item 0 same id and camera -> ignored; then 1 (+), 2 (-), 3 (+): AP (1 + 2/3) / 2,
    # INP 2/3. Query 1 (id 5, cam 1): item 2 is id 5 but camera 1 -> ignored; no other id 5: no positive.
    m = evaluate_reid(torch.tensor([[0, 1, 2, 3], [2, 3, 0, 1]]), torch.tensor([7, 5]), torch.tensor([7, 7, 5, 7]),
                      torch.tensor([0, 1]), torch.tensor([0, 1, 1, 2]), cmc_at=(1, 2))
    assert m["queries"] == 1 and m["queries_without_positive"] == 1
    assert m["Rank-1"] == 1.0 and m["Rank-2"] == 1.0
    assert m["mAP"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["mINP"] == pytest.approx(2 / 3)
    # the first positive at rank 3 after removing an ignored item in front
    m = evaluate_reid(torch.tensor([[0, 2, 3, 1]]), torch.tensor([7]), torch.tensor([7, 7, 5, 5]), torch.tensor([0]),
                      torch.tensor([0, 1, 1, 2]), cmc_at=(1, 2, 3))
    assert (m["Rank-1"], m["Rank-2"], m["Rank-3"]) == (0.0, 0.0, 1.0)
    assert m["mAP"] == pytest.approx(1 / 3) and m["mINP"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reid_matches_sklearn_and_brute_force(seed):
    ranking, qid, gid, qcam, gcam = _reid_data(seed=seed)
    m = evaluate_reid(ranking, qid, gid, qcam, gcam, cmc_at=(1, 5, 10), chunk_size=7)
    want = _brute_reid(ranking, qid, gid, qcam, gcam, (1, 5, 10), use_sklearn=True)
    for name, v in want.items():
        assert m[name] == pytest.approx(v, abs=1e-12), name


def test_reid_truncated_lists_and_chunking():
    ranking, qid, gid, qcam, gcam = _reid_data(seed=5)
    top = ranking[:, :25]
    m1 = evaluate_reid(top, qid, gid, qcam, gcam, chunk_size=1)
    m2 = evaluate_reid(top, qid, gid, qcam, gcam, chunk_size=1000)
    assert m1 == pytest.approx(m2, abs=1e-12)
    want = _brute_reid(top, qid, gid, qcam, gcam, (1, 5, 10), use_sklearn=False)
    for name, v in want.items():
        assert m1[name] == pytest.approx(v, abs=1e-12), name


def _brute_revisited(ranking, gnd, setup, ap, ks):
    from icfrr_fast.metrics import REVISITED_SETUPS

    pos_names, junk_names = REVISITED_SETUPS[setup]
    aps, prec, valid = [], {k: [] for k in ks}, 0
    for q in range(ranking.shape[0]):
        pos = {i for n in pos_names for i in gnd[q].get(n, [])}
        junk = {i for n in junk_names for i in gnd[q].get(n, [])} - pos
        if not pos:
            continue
        valid += 1
        rel = [int(i) in pos for i in ranking[q] if int(i) not in junk]
        if ap == "non_interpolated":
            aps.append(average_precision_score(rel, [-r for r in range(len(rel))]) * sum(rel) / len(pos)
                       if any(rel) else 0.0)
        else:  # the protocol's: trapezoid between the precision before and at each positive
            total, j = 0.0, 0
            for r, x in enumerate(rel):
                if x:
                    p0 = j / r if r > 0 else 1.0
                    p1 = (j + 1) / (r + 1)
                    total += (p0 + p1) / 2 / len(pos)
                    j += 1
            aps.append(total)
        for k in ks:
            prec[k].append(sum(rel[:k]) / k)
    out = {f"{setup}/mAP": sum(aps) / valid, f"{setup}/queries": valid}
    out.update({f"{setup}/mP@{k}": sum(v) / valid for k, v in prec.items()})
    return out


def _gnd(Q=20, G=80, seed=0):
    gen = torch.Generator().manual_seed(seed)
    gnd = []
    for q in range(Q):
        p = torch.randperm(G, generator=gen).tolist()
        n_e, n_h, n_j = (int(v) for v in torch.randint(0, 6, (3,), generator=gen))
        gnd.append({"easy": p[:n_e], "hard": p[n_e:n_e + n_h], "junk": p[n_e + n_h:n_e + n_h + n_j]})
    ranking = torch.stack([torch.randperm(G, generator=gen) for _ in range(Q)])
    return ranking, gnd


@pytest.mark.parametrize("ap", ["trapezoid", "non_interpolated"])
@pytest.mark.parametrize("n", [80, 30])
def test_revisited_matches_brute_force(ap, n):
    ranking, gnd = _gnd()
    m = evaluate_revisited(ranking[:, :n], gnd, ap=ap, precision_at=(1, 5, 10), chunk_size=6)
    for setup in ("easy", "medium", "hard"):
        want = _brute_revisited(ranking[:, :n], gnd, setup, ap, (1, 5, 10))
        for name, v in want.items():
            assert m[name] == pytest.approx(v, abs=1e-12), name


def test_revisited_hand_computed():
    ranking = torch.tensor([[3, 0, 1, 2]])
    gnd = [{"easy": [0], "hard": [2], "junk": [3]}]
    m = evaluate_revisited(ranking, gnd, precision_at=(1, 2))
    # easy: positives {0}, ignored {3, 2}: list 0, 1 -> AP 1
    assert m["easy/mAP"] == 1.0 and m["easy/mP@1"] == 1.0
    # hard: positives {2}, ignored {3, 0}: list 1, 2 -> hit at rank 2: trapezoid (0 + 1/2) / 2
    assert m["hard/mAP"] == pytest.approx(0.25) and m["hard/mP@2"] == 0.5
    m = evaluate_revisited(ranking, [{"junk": [1]}], setups=("medium",))
    assert m["medium/queries"] == 0 and m["medium/queries_without_positive"] == 1


@pytest.mark.parametrize("call,exc,match", [
    (lambda: evaluate_reid(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long),
                           torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long)),
     TypeError, "indices must be an integer tensor"),
    (lambda: evaluate_reid(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, dtype=torch.long),
                           torch.zeros(3, dtype=torch.long), torch.zeros(2, dtype=torch.long),
                           torch.zeros(3, dtype=torch.long)), ValueError, "query_ids must have one entry per row"),
    (lambda: evaluate_reid(torch.full((2, 3), 5), torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long),
                           torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long)),
     ValueError, r"indices must be gallery ids in \[0, 2\]"),
    (lambda: evaluate_reid(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long),
                           torch.zeros(3, dtype=torch.long), torch.zeros(2, dtype=torch.long),
                           torch.zeros(4, dtype=torch.long)), ValueError, "gallery_cams must have one entry"),
    (lambda: evaluate_reid(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2), torch.zeros(3, dtype=torch.long),
                           torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long)),
     TypeError, r"query_ids must be an integer \(signed or uint8\) or bool tensor"),
    (lambda: evaluate_reid(torch.zeros(2, 3, dtype=torch.long), *(torch.zeros(n, dtype=torch.long)
                                                                  for n in (2, 3, 2, 3)), cmc_at=(0,)),
     ValueError, "cmc_at must hold positive ints"),
    (lambda: evaluate_revisited(torch.zeros(2, 3, dtype=torch.long), [{}]), ValueError, "gnd must be a sequence"),
    (lambda: evaluate_revisited(torch.zeros(1, 3, dtype=torch.long), [{}], setups=("extreme",)),
     ValueError, "setups must hold names"),
    (lambda: evaluate_revisited(torch.zeros(1, 3, dtype=torch.long), [{}], ap="voc"), ValueError, "ap must be one"),
    (lambda: evaluate_revisited(torch.zeros(1, 3, dtype=torch.long), [{}], chunk_size=0),
     ValueError, "chunk_size must be a positive int"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
