"""dense_topk (partial selection per row) and the GalleryGraph built from dense matrices, against the reference."""

from __future__ import annotations

import pytest
import torch

import icfrr_fast
from icfrr_fast import GalleryGraph, _native, ops, reference
from _assertions import assert_rankings_equal, assert_values_equal

SIMD = [True, False]


@pytest.fixture(params=SIMD, ids=["simd=on", "simd=off"])
def simd(request):
    _native.set_simd_enabled(request.param)
    yield request.param
    _native.set_simd_enabled(True)


def _check(x, k, largest, exclude_self=False, row_offset=0):
    v, i = ops.dense_topk(x, k, largest, exclude_self, row_offset)
    rv, ri = reference.dense_topk(x, k, largest=largest, exclude_self=exclude_self, row_offset=row_offset)
    assert_rankings_equal(i, ri, "indices")
    assert_values_equal(v, rv, "values")
    assert v.dtype == x.dtype and i.dtype == torch.int64


@pytest.mark.parametrize("largest", [True, False], ids=["largest", "smallest"])
@pytest.mark.parametrize("R,C,k", [(7, 10, 1), (5, 33, 8), (9, 1000, 37), (4, 5000, 256), (3, 2, 2), (6, 777, 776)],
                         ids=lambda v: str(v))
def test_matches_reference(simd, largest, R, C, k):
    x = torch.randn(R, C)
    _check(x, k, largest)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("largest", [True, False], ids=["largest", "smallest"])
def test_threshold_and_sort_paths(simd, largest, dtype):
    """Rows long enough for the sampled threshold: its small-r (kept list) and large-r (nth_element) selections,
    sorted rows (the sample sees one end only), and outliers that crowd the coarse sort keys into one run."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 5000, generator=gen, dtype=dtype)
    for k in (1, 256, 1000):  # r = 4, 45, 136 sampled ranks
        _check(x, k, largest)
        _check(x.sort(dim=1).values, k, largest)
        _check(x.sort(dim=1, descending=True).values, k, largest, exclude_self=True)
    crowded = x * 1e-20
    crowded[:, 100] = 1e30
    crowded[:, 200] = -1e30
    _check(crowded, 300, largest)
    tiny = torch.full((3, 2000), 1.0, dtype=dtype)
    tiny[:, ::7] = torch.nextafter(torch.tensor(1.0, dtype=dtype), torch.tensor(2.0, dtype=dtype))
    _check(tiny, 400, largest)  # two adjacent values: ties decided by the column
    _check(torch.full((2, 3000), 2.5, dtype=dtype), 5, largest)  # a sample of equal values
    if dtype == torch.float64:  # a sample whose range overflows
        huge = x.clone()
        huge[:, ::50] = 1.5e308
        huge[:, 1::50] = -1.5e308
        _check(huge, 300, largest)


@pytest.mark.parametrize("largest", [True, False], ids=["largest", "smallest"])
def test_ties_go_to_the_smaller_index(simd, largest):
    x = torch.randint(0, 3, (8, 3000)).float()  # massive ties, values on the threshold
    for k in (1, 17, 300, 2999):
        _check(x, k, largest)
    _check(torch.zeros(4, 500), 100, largest)  # all equal: ids 0..99
    v, i = ops.dense_topk(torch.zeros(2, 500), 5, largest, False, 0)
    assert i.tolist() == [[0, 1, 2, 3, 4]] * 2


@pytest.mark.parametrize("largest", [True, False], ids=["largest", "smallest"])
def test_exclude_self_by_index(simd, largest):
    g = torch.randn(300, 4)
    gg = torch.cdist(g, g)
    _check(gg if not largest else -gg, 299, largest, exclude_self=True)
    _check(gg, 20, largest, exclude_self=True)
    # duplicate items: the twin stays a neighbour, the item itself never does
    g[7] = g[3]
    gg = torch.cdist(g, g)
    v, i = ops.dense_topk(gg, 5, False, True, 0)
    assert int(i[3, 0]) == 7 and int(i[7, 0]) == 3
    assert not bool((i == torch.arange(300)[:, None]).any())


def test_row_offset_blocks_equal_the_whole(simd):
    g = torch.randn(200, 5)
    gg = torch.cdist(g, g)
    whole = ops.dense_topk(gg, 10, False, True, 0)
    parts = [ops.dense_topk(gg[r:r + 64], 10, False, True, r) for r in range(0, 200, 64)]
    assert torch.equal(torch.cat([p[1] for p in parts]), whole[1])
    _check(gg[64:128], 10, False, exclude_self=True, row_offset=64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64],
                         ids=lambda d: f"dtype={str(d).split('.')[-1]}")
def test_dtypes(simd, dtype):
    x = torch.randn(6, 900).to(dtype)
    _check(x, 50, True)
    _check(x, 50, False, exclude_self=True)


def test_non_contiguous(simd):
    x = torch.randn(20, 1200)
    _check(x[::3, ::2], 40, True)
    _check(x.T[:100, :20].T, 7, False)  # column stride 20 x unit-less rows


def test_simd_and_scalar_identical_and_thread_invariant():
    x = torch.randn(64, 4099)
    outs = []
    for simd_on in (True, False):
        _native.set_simd_enabled(simd_on)
        for n in (1, 2):
            icfrr_fast.set_num_threads(n)
            outs.append(ops.dense_topk(x, 128, False, False, 0))
    _native.set_simd_enabled(True)
    for v, i in outs[1:]:
        assert torch.equal(i, outs[0][1]) and torch.equal(v, outs[0][0])


def test_opcheck_and_compile():
    x = torch.randn(10, 300)
    torch.library.opcheck(torch.ops.icfrr_fast.dense_topk.default, (x, 12, True, False, 0))
    torch.library.opcheck(torch.ops.icfrr_fast.dense_topk.default, (x[:, :200].contiguous(), 12, False, True, 3))

    def f(m):
        return torch.ops.icfrr_fast.dense_topk(m - 1.0, 5, False, True, 0)

    v, i = torch.compile(f, fullgraph=True, backend="aot_eager")(x[:, :10].contiguous())
    v0, i0 = f(x[:, :10].contiguous())
    assert torch.equal(i, i0) and torch.equal(v, v0)


BAD = [
    (dict(x=torch.randn(5)), ValueError, "x must be 2-D"),
    (dict(x=torch.randint(0, 3, (4, 4))), TypeError, "x must be a floating tensor"),
    (dict(k=0), ValueError, "k must be in"),
    (dict(k=11), ValueError, "k must be in"),
    (dict(k=10, exclude_self=True), ValueError, r"k must be in \[1, 9\]"),
    (dict(row_offset=-1), ValueError, "row_offset must be in"),
    (dict(row_offset=1, exclude_self=True), ValueError, "exclude_self needs every row's own column"),
    (dict(x=torch.full((10, 10), float("nan"))), ValueError, "x must be finite"),
]


@pytest.mark.parametrize("kw,exc,match", BAD, ids=[m for _, _, m in BAD])
def test_bad_input(kw, exc, match):
    args = dict(x=torch.randn(10, 10), k=3, largest=True, exclude_self=False, row_offset=0)
    args.update(kw)
    with pytest.raises(exc, match=match):
        ops.dense_topk(args["x"], args["k"], args["largest"], args["exclude_self"], args["row_offset"])


# ------------------------------------------------------------------------------------------------------------------
# GalleryGraph from dense matrices and from lists
# ------------------------------------------------------------------------------------------------------------------
def test_graph_from_distances_and_similarities():
    g = torch.randn(120, 6)
    gg = torch.cdist(g, g)
    graph = GalleryGraph.from_distances(gg, 15)
    ref = reference.dense_topk(gg, 15, largest=False, exclude_self=True)[1]
    assert graph.neighbors.dtype == torch.int32 and torch.equal(graph.neighbors.long(), ref)
    assert graph.num_items == 120 and graph.k == 15 and len(graph) == 120
    sim = GalleryGraph.from_distances(-gg, 15, largest=True)
    assert torch.equal(sim.neighbors, graph.neighbors)
    assert torch.equal(graph.neighbors_for(4), graph.neighbors[:, :4])


def test_graph_save_load_round_trip(tmp_path):
    gg = torch.cdist(torch.randn(50, 3), torch.randn(50, 3))
    graph = GalleryGraph.from_distances(gg, 7)
    graph.save(tmp_path / "g.pth")
    back = GalleryGraph.load(tmp_path / "g.pth")
    assert torch.equal(back.neighbors, graph.neighbors) and torch.equal(back.values, graph.values)
    assert back.largest == graph.largest
    torch.save({"format": "something else"}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a GalleryGraph file"):
        GalleryGraph.load(tmp_path / "bad.pth")


GRAPH_BAD = [
    (torch.tensor([[1], [0]], dtype=torch.float32), TypeError, "integer tensor"),
    (torch.tensor([1, 0]), ValueError, "2-D"),
    (torch.tensor([[0]]), ValueError, "at least 2 items"),
    (torch.tensor([[1, 2], [0, 2], [0, 1]])[:, :0], ValueError, "neighbors per item"),
    (torch.tensor([[1, 3], [0, 2], [0, 1]]), ValueError, r"ids must be in \[0, G - 1\]"),
    (torch.tensor([[0, 1], [0, 2], [0, 1]]), ValueError, "its own neighbour"),
]


@pytest.mark.parametrize("nb,exc,match", GRAPH_BAD, ids=[m for _, _, m in GRAPH_BAD])
def test_graph_constructor_rejects_bad_lists(nb, exc, match):
    with pytest.raises(exc, match=match):
        GalleryGraph(nb)


def test_graph_from_distances_rejects_bad_matrices():
    with pytest.raises(ValueError, match="square"):
        GalleryGraph.from_distances(torch.randn(5, 6), 2)
    with pytest.raises(ValueError, match="at least 2 items"):
        GalleryGraph.from_distances(torch.randn(1, 1), 1)
    with pytest.raises(ValueError, match=r"k must be in \[1, G - 1\] = \[1, 4\]"):
        GalleryGraph.from_distances(torch.randn(5, 5), 5)
