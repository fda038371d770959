"""knn_topk / knn_scores: the fused similarity + top-k op against the float64 oracle (reference.knn_topk), across
metrics, shapes off the block multiples, dtypes, strides, SIMD paths and thread counts; opcheck, torch.compile, and
one pytest.raises per validation rule."""

import pytest
import torch

import icfrr_fast
from icfrr_fast import _native, ops, reference

from _assertions import assert_knn_equal_with_ties, assert_rankings_equal, assert_values_equal

METRICS = ["ip", "cosine", "l2", "l2sq"]
LARGEST = {"ip": True, "cosine": True, "l2": False, "l2sq": False}
# every SIMD level this CPU supports (scalar, avx2, avx512, avx512_bf16: each forced in turn)
LEVELS = list(_native.SIMD_LEVELS[: _native.SIMD_LEVELS.index(icfrr_fast.cpu_info()["best_level"]) + 1])

# (Q, G, D, k): tiny, sizes off every block multiple (MR 4/6/12, NR 16/32, tile 256/512), k = G, G = 2, D = 1
SHAPES = [
    pytest.param(1, 2, 1, 2, id="Q=1,G=2,D=1,k=G"),
    pytest.param(7, 50, 3, 5, id="Q=7,G=50,D=3"),
    pytest.param(13, 37, 5, 37, id="Q=13,G=37,k=G"),
    pytest.param(70, 600, 33, 20, id="Q=70,G=600,D=33"),
    pytest.param(3, 1500, 70, 257, id="Q=3,G=1500,k=257"),
]


def _data(Q, G, D, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(Q, D, generator=gen).to(dtype), torch.randn(G, D, generator=gen).to(dtype)


def _tol(metric, D):
    # float32 dot products of D N(0,1) terms: abs error ~ sqrt(D) * |x||y| * 2^-24; l2sq carries |x|^2 + |y|^2.
    return dict(atol=2e-4 * max(D, 1), rtol=1e-5) if metric in ("ip", "l2sq") else dict(atol=1e-4, rtol=1e-5)


@pytest.fixture(params=LEVELS, ids=lambda level: f"simd={level}")
def simd(request):
    _native.set_simd_level(request.param)
    yield request.param
    _native.set_simd_level(None)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("Q,G,D,k", SHAPES)
def test_matches_float64_oracle(simd, metric, Q, G, D, k):
    x, y = _data(Q, G, D)
    v, i = icfrr_fast.knn(x, y, k, metric=metric)
    rv, ri = reference.knn_topk(x, y, k, metric)
    assert v.dtype == torch.float32 and i.dtype == torch.int64 and v.shape == (Q, k)
    assert_knn_equal_with_ties(v, i, rv, ri, **_tol(metric, D))


@pytest.mark.parametrize("metric", METRICS)
def test_exclude_self_and_k_equals_G_minus_1(metric):
    _, y = _data(0, 40, 6)
    y[7] = y[3]  # a duplicate: item 7 is item 3's nearest other item, and item 3 itself is never returned
    v, i = icfrr_fast.knn(y, y, 39, metric=metric, exclude_self=True)
    rv, ri = reference.knn_topk(y, y, 39, metric, exclude_self=True)
    assert not bool((i == torch.arange(40)[:, None]).any())
    assert_knn_equal_with_ties(v, i, rv, ri, **_tol(metric, 6))
    # a slice of the gallery: rows 10..19 exclude items 10..19
    v2, i2 = icfrr_fast.knn(y[10:20], y, 5, metric=metric, exclude_self=True, row_offset=10)
    rv2, ri2 = reference.knn_topk(y[10:20], y, 5, metric, exclude_self=True, row_offset=10)
    assert_knn_equal_with_ties(v2, i2, rv2, ri2, **_tol(metric, 6))


@pytest.mark.parametrize("metric", ["ip", "l2sq"])
def test_ties_go_to_the_smaller_index(simd, metric):
    # small integers: every float32 dot product is exact, so ties are real and ids must match exactly
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(-2, 3, (300, 4), generator=gen).float()
    x = torch.randint(-2, 3, (9, 4), generator=gen).float()
    v, i = icfrr_fast.knn(x, y, 40, metric=metric)
    rv, ri = reference.knn_topk(x, y, 40, metric)
    assert_rankings_equal(i, ri, "ids")
    assert_values_equal(v.double(), rv, "values")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("D", [77, 128], ids=lambda d: f"D={d}")
def test_every_simd_level_bit_identical(precision, D):
    """Every level runs the same FMA chain per score (bf16: the vdpbf16ps chain, emulated below that level), and its
    collectors choose the same items: identical values and ids, top-k and dense scores."""
    x, y = _data(37, 700, D, seed=3)
    x[5] = x[4]  # duplicate rows: equal scores, ties broken by index
    y[100:140] = y[:40]
    results = {}
    for level in LEVELS:
        _native.set_simd_level(level)
        assert _native.simd_level() == level
        results[level] = (icfrr_fast.knn(x, y, 31, metric="l2", precision=precision),
                          icfrr_fast.knn(x, y, 257, metric="ip", precision=precision),
                          ops.knn_scores(x, y, "cosine", precision))
    _native.set_simd_level(None)
    (v0, i0), (w0, j0), s0 = results["scalar"]
    for level in LEVELS[1:]:
        (v, i), (w, j), sc = results[level]
        assert_values_equal(v, v0, f"{level} values")
        assert_rankings_equal(i, i0, f"{level} ids")
        assert_values_equal(w, w0, f"{level} values (k=257)")
        assert_rankings_equal(j, j0, f"{level} ids (k=257)")
        assert_values_equal(sc, s0, f"{level} dense scores")


@pytest.mark.parametrize("D", [1, 64, 33], ids=lambda d: f"D={d}")
def test_bf16_is_fp32_on_rounded_inputs_with_pairs_swapped(simd, D):
    """precision="bf16" is, exactly, fp32 on the bfloat16-rounded inputs whose depths are taken in the order
    1, 0, 3, 2, ... (an odd D padded with a zero column): the order of AVX512_BF16's dot-product instruction."""
    x, y = _data(20, 500, D, seed=10)
    xb, yb = x.bfloat16().float(), y.bfloat16().float()
    if D % 2:
        xb, yb = torch.nn.functional.pad(xb, (0, 1)), torch.nn.functional.pad(yb, (0, 1))
    perm = torch.arange(xb.shape[1]).view(-1, 2).flip(1).reshape(-1)
    xs, ys = xb[:, perm].contiguous(), yb[:, perm].contiguous()
    v, i = icfrr_fast.knn(x, y, 25, metric="ip", precision="bf16")
    _native.set_simd_level("scalar")  # the fp32 side on the portable kernel: a plain FMA chain
    v0, i0 = icfrr_fast.knn(xs, ys, 25, metric="ip")
    s0 = ops.knn_scores(xs, ys, "ip", "fp32")
    _native.set_simd_level(simd)
    assert_values_equal(v, v0)
    assert_rankings_equal(i, i0)
    assert_values_equal(ops.knn_scores(x, y, "ip", "bf16"), s0)


def test_simd_level_setter_and_cpu_info(monkeypatch):
    info = icfrr_fast.cpu_info()
    assert set(info) == {"flags", "best_level", "level", "knn_kernel"}
    flags = info["flags"]
    expected_best = ("avx512_bf16" if flags["avx512bf16"] else "avx512") if flags["avx512f"] and flags["avx512bw"] \
        else "avx2" if flags["avx2"] and flags["fma"] else "scalar"
    assert info["best_level"] == expected_best == LEVELS[-1]
    for level in LEVELS:
        icfrr_fast.set_simd_level(level)
        info = icfrr_fast.cpu_info()
        assert info["level"] == level == icfrr_fast.simd_level()
        assert info["knn_kernel"]["fp32"].startswith({"avx512_bf16": "avx512"}.get(level, level) + " ")
        assert info["knn_kernel"]["bf16"].startswith(level + " ")
    icfrr_fast.set_simd_level(None)
    assert icfrr_fast.simd_level() == LEVELS[-1]
    _native.set_simd_enabled(False)
    assert icfrr_fast.simd_level() == "scalar" and not _native.simd_enabled()
    _native.set_simd_enabled(True)
    assert icfrr_fast.simd_level() == LEVELS[-1]
    with pytest.raises(ValueError, match="level must be one of"):
        icfrr_fast.set_simd_level("avx3")
    assert not _native.load().set_simd_level(4)  # the C++ setter refuses levels above the CPU's
    # a CPU without the level: the native setter refuses, the Python one names the CPU's best level
    monkeypatch.setattr(_native.load(), "set_simd_level", lambda level: False)
    with pytest.raises(ValueError, match="not supported by this CPU"):
        icfrr_fast.set_simd_level("avx2")
    assert icfrr_fast.simd_level() == LEVELS[-1]


@pytest.mark.parametrize(
    "level,metric,ints",
    [(LEVELS[-1], "l2", False), (LEVELS[-1], "l2sq", True)]
    + [(level, m, ints) for level in LEVELS for m, ints in (("cosine", False), ("ip", True))],
    ids=lambda v: {False: "float", True: "integer-ties"}.get(v, v) if isinstance(v, (bool, str)) else None)
def test_symmetric_graph_build_is_bit_identical(level, metric, ints):
    """x is y with exclude_self: each pair of row blocks computed once (half the FLOPs) gives exactly the plain
    loop's result, ties included, for 1 and 2 threads, at every SIMD level."""
    _native.set_simd_level(level)
    gen = torch.Generator().manual_seed(11)
    g = torch.randint(-2, 3, (1000, 384), generator=gen).float() if ints else torch.randn(1000, 384, generator=gen)
    for threads in (1, 2):  # the shape is one the kernel builds symmetrically
        assert _native.load().knn_topk_symmetric_rows(G=1000, D=384, k=60, num_threads=threads) > 0
    results = []
    for symmetric, threads in ((False, 1), (True, 1), (True, 2)):
        _native.set_knn_symmetric_enabled(symmetric)
        icfrr_fast.set_num_threads(threads)
        results.append(icfrr_fast.knn(g, g, 60, metric=metric, exclude_self=True))
    _native.set_knn_symmetric_enabled(True)
    _native.set_simd_level(None)
    (v0, i0) = results[0]
    for v, i in results[1:]:
        assert_values_equal(v, v0)
        assert_rankings_equal(i, i0)
    rv, ri = reference.knn_topk(g, g, 60, metric, exclude_self=True)
    assert_knn_equal_with_ties(v0, i0, rv, ri, **_tol(metric, g.shape[1]))


@pytest.mark.parametrize("Q", [1, 3, 200], ids=lambda q: f"Q={q}")  # Q small: the gallery is split across threads
def test_thread_count_does_not_change_results(Q):
    x, y = _data(Q, 3000, 24, seed=4)
    icfrr_fast.set_num_threads(1)
    v1, i1 = icfrr_fast.knn(x, y, 100, metric="ip")
    icfrr_fast.set_num_threads(2)
    v2, i2 = icfrr_fast.knn(x, y, 100, metric="ip")
    assert_values_equal(v2, v1)
    assert_rankings_equal(i2, i1)


def test_scores_independent_of_batch_and_tile():
    """A pair's score does not depend on which rows/items share its call (what makes ICFRRIndex.add exact)."""
    x, y = _data(50, 900, 40, seed=5)
    full = ops.knn_scores(x, y, "l2sq", "fp32")
    part = ops.knn_scores(x[17:29], y[300:777], "l2sq", "fp32")
    assert_values_equal(part, full[17:29, 300:777])
    v, i = icfrr_fast.knn(x, y, 10, metric="l2sq")
    assert_values_equal(v, torch.gather(full, 1, i))


@pytest.mark.parametrize("metric", METRICS)
def test_knn_scores_matches_oracle(metric):
    x, y = _data(9, 70, 12, seed=6)
    s = ops.knn_scores(x, y, metric, "fp32")
    torch.testing.assert_close(s.double(), reference.knn_scores(x, y, metric), **_tol(metric, 12))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=lambda d: f"dtype={d}")
def test_dtypes(dtype):
    x, y = _data(11, 300, 20, seed=7, dtype=dtype)
    v, i = icfrr_fast.knn(x, y, 17, metric="cosine")
    rv, ri = reference.knn_topk(x, y, 17, "cosine")
    assert v.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    tol = dict(atol=1e-12, rtol=1e-12) if dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    assert_knn_equal_with_ties(v, i, rv, ri, **tol)


def test_non_contiguous_inputs_give_identical_results():
    x, y = _data(30, 400, 16, seed=8)
    xs = torch.zeros(30, 48)
    xs[:, ::3] = x  # column stride 3
    yt = y.T.contiguous().T  # column-major
    v, i = icfrr_fast.knn(xs[:, ::3], yt, 12, metric="l2")
    v0, i0 = icfrr_fast.knn(x, y, 12, metric="l2")
    assert_values_equal(v, v0)
    assert_rankings_equal(i, i0)
    v, i = icfrr_fast.knn(x[::2], y[1::2], 12, metric="ip")  # row strides 2 * D
    v0, i0 = icfrr_fast.knn(x[::2].contiguous(), y[1::2].contiguous(), 12, metric="ip")
    assert_values_equal(v, v0)
    assert_rankings_equal(i, i0)


def test_largest_overrides_the_metric_default():
    x, y = _data(5, 90, 8, seed=9)
    v, i = icfrr_fast.knn(x, y, 7, metric="l2", largest=True)  # farthest first
    rv, ri = reference.knn_topk(x, y, 7, "l2", largest=True)
    assert_knn_equal_with_ties(v, i, rv, ri, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
def test_bf16_precision_is_the_oracle_on_bf16_rounded_inputs(simd, metric):
    x, y = _data(20, 500, 64, seed=10)
    v, i = icfrr_fast.knn(x, y, 25, metric=metric, precision="bf16")
    rv, ri = reference.knn_topk(x, y, 25, metric, precision="bf16")
    assert_knn_equal_with_ties(v, i, rv, ri, **_tol(metric, 64))


def test_empty_query_batch():
    v, i = icfrr_fast.knn(torch.zeros(0, 4), torch.randn(10, 4), 3)
    assert v.shape == (0, 3) and i.shape == (0, 3)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_opcheck(metric):
    x, y = _data(6, 40, 5)
    torch.library.opcheck(ops.knn_topk, (x, y, 4, metric, LARGEST[metric], False, 0, "fp32"))
    torch.library.opcheck(ops.knn_topk, (y[:6], y, 4, metric, LARGEST[metric], True, 0, "fp32"))
    torch.library.opcheck(ops.knn_scores, (x, y, metric, "fp32"))


def test_torch_compile_fullgraph():
    x, y = _data(6, 40, 5)

    @torch.compile(fullgraph=True, backend="eager")
    def f(a, b):
        v, i = torch.ops.icfrr_fast.knn_topk(a, b, 4, "l2", False, False, 0, "fp32")
        return v * 2, i, torch.ops.icfrr_fast.knn_scores(a, b, "ip", "fp32")

    v, i, s = f(x, y)
    v0, i0 = icfrr_fast.knn(x, y, 4, metric="l2")
    assert_values_equal(v, v0 * 2)
    assert_rankings_equal(i, i0)
    assert_values_equal(s, ops.knn_scores(x, y, "ip", "fp32"))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda x, y: icfrr_fast.knn(x, y, 0), ValueError, r"k must be in \[1, 20\]"),
        (lambda x, y: icfrr_fast.knn(x, y, 21), ValueError, r"k must be in \[1, 20\].*got 21"),
        (lambda x, y: icfrr_fast.knn(y, y, 20, exclude_self=True), ValueError, r"k must be in \[1, 19\]"),
        (lambda x, y: icfrr_fast.knn(x, y, 2.0), TypeError, "k must be an int"),
        (lambda x, y: icfrr_fast.knn(x[:, :3], y, 2), ValueError, "same feature dimension D"),
        (lambda x, y: icfrr_fast.knn(x, y[:0], 1), ValueError, "at least 1 item"),
        (lambda x, y: icfrr_fast.knn(x[:, :0], y[:, :0], 1), ValueError, "D must be >= 1"),
        (lambda x, y: icfrr_fast.knn(x.int(), y.int(), 2), TypeError, "x must be a floating tensor"),
        (lambda x, y: icfrr_fast.knn(x.double(), y, 2), TypeError, "same dtype"),
        (lambda x, y: icfrr_fast.knn(x[0], y, 2), ValueError, "x must be 2-D"),
        (lambda x, y: icfrr_fast.knn(x.numpy(), y, 2), TypeError, "x must be a torch.Tensor"),
        (lambda x, y: icfrr_fast.knn(x, y, 2, metric="dot"), ValueError, "metric must be one of"),
        (lambda x, y: icfrr_fast.knn(x, y, 2, precision="fp8"), ValueError, "precision must be one of"),
        (lambda x, y: icfrr_fast.knn(x, y, 2, largest=1), TypeError, "largest must be a bool"),
        (lambda x, y: icfrr_fast.knn(x, y, 2, exclude_self="no"), TypeError, "exclude_self must be a bool"),
        (lambda x, y: icfrr_fast.knn(x, y, 2, exclude_self=True, row_offset=15), ValueError, "row_offset \\+ Q <= G"),
        (lambda x, y: icfrr_fast.knn(x, y, 2, row_offset=-1), ValueError, "row_offset must be in"),
        (lambda x, y: icfrr_fast.knn(x.index_fill(0, torch.tensor([1]), float("nan")), y, 2), ValueError,
         "x must be finite"),
        (lambda x, y: icfrr_fast.knn(x, y.index_fill(0, torch.tensor([3]), float("inf")), 2), ValueError,
         "y must be finite"),
        (lambda x, y: ops.knn_scores(x, y[:, :2], "ip", "fp32"), ValueError, "same feature dimension D"),
    ],
)
def test_validation(call, exc, match):
    x, y = _data(8, 20, 4)
    with pytest.raises(exc, match=match):
        call(x, y)
