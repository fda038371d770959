"""Property-based fuzzing of every public entry point (run by tests/test_fuzz.py in a subprocess, so that a crash
-- an abort, a segfault -- fails that test instead of ending the test run).

Each target draws wrong types, shapes, dtypes and devices, huge and negative sizes, NaN/inf, empty tensors and
malformed files, calls the entry point, and lets only ValueError, TypeError and MemoryError (or success) through:
anything else fails the example, and hypothesis shrinks it to a minimal one. Before each call the input is written
to $ICFRR_FUZZ_LAST, so that the parent can show the input that crashed the process.

The raw ops (``torch.ops.icfrr_fast.*``) get arguments of the Python types of their schema (int, float, bool, str,
Tensor), with wrong values: torch's dispatcher rejects other Python types (a list for a Tensor, a float or an int
>= 2^63 for an int) with its own RuntimeError before any of this package's code runs; the public functions check
types first.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import icfrr_fast
from icfrr_fast import GalleryGraph, ICFRRIndex, icfrr, knn, metrics, ops
from icfrr_fast.cli import build_parser

ALLOWED = (ValueError, TypeError, MemoryError)
EXAMPLES = int(os.environ.get("ICFRR_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
OTHER = [torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64]


def _record(what: str, **kw) -> None:
    path = os.environ.get("ICFRR_FUZZ_LAST")
    if path:
        with open(path, "w") as f:
            f.write(f"{what}({', '.join(f'{k}={_short(v)}' for k, v in kw.items())})\n")


def _short(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"Tensor(shape={tuple(v.shape)}, dtype={v.dtype}, device={v.device}, layout={v.layout})"
    r = repr(v)
    return r if len(r) < 200 else r[:200] + "..."


def _call(what: str, fn, **kw):
    _record(what, **kw)
    try:
        return fn(**kw)
    except ALLOWED:
        return None


# ---- strategies ---------------------------------------------------------------------------------------------------
@st.composite
def tensors(draw, dims=(2,), max_side=6, dtypes=None, special=True):
    """A tensor (usually of one of `dims` dimensions and a float dtype), sometimes empty, with NaN/inf, on the meta
    device, sparse, non-contiguous, or not a tensor at all."""
    kind = draw(st.sampled_from(["plain"] * 6 + ["junk", "meta", "sparse", "strided"]))
    if kind == "junk":
        return draw(st.sampled_from([None, 3, 2.5, "x", [1.0, 2.0], [[1.0, 2.0]], np.zeros((2, 2)), object()]))
    dim = draw(st.sampled_from(dims + ((0, 1, 3) if special else ())))
    shape = tuple(draw(st.integers(0, max_side)) for _ in range(dim))
    dtype = draw(st.sampled_from(dtypes or (FLOATS * 3 + OTHER)))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    if dtype.is_floating_point:
        t = (torch.randn(shape, generator=gen) * draw(st.sampled_from([1.0, 1e-30, 1e30]))).to(dtype)
        if special and t.numel() and draw(st.booleans()):
            t.view(-1)[draw(st.integers(0, t.numel() - 1))] = draw(st.sampled_from([float("nan"), float("inf"),
                                                                                    -float("inf")]))
    elif dtype.is_complex:
        t = torch.randn(shape, generator=gen, dtype=dtype)
    elif dtype == torch.bool:
        t = torch.randint(0, 2, shape, generator=gen).bool()
    else:
        t = torch.randint(-2, 8, shape, generator=gen).to(dtype)
    if kind == "meta":
        return t.to("meta")
    if kind == "sparse" and t.dim() >= 1 and not dtype.is_complex:
        return t.to_sparse()
    if kind == "strided" and t.dim() == 2 and t.shape[1] >= 2:
        return t[:, ::2]
    return t


def ints(lo=-2, hi=8):
    return st.one_of(st.integers(lo, hi), st.integers(lo, hi), st.sampled_from(
        [-1, 0, 2**31 - 1, 2**31, 2**62, 2**63 - 1, 2**63, 2**64, -2**63 - 1, 10**30, True, 2.0, "3", None]))


def small_ints(lo=-2, hi=8):
    """Ints that a call may really run with (no hang): small, negative, or far beyond every limit."""
    return st.one_of(st.integers(lo, hi), st.integers(lo, hi), st.sampled_from(
        [-1, 0, 2**31, 2**63 - 1, 2**63, -2**63 - 1, 10**30, True, 2.0, "3", None]))


def op_ints(lo=-2, hi=8):
    """Python ints the op schema accepts (within int64), with wrong values."""
    return st.one_of(st.integers(lo, hi), st.sampled_from([-1, 0, 2**31 - 1, 2**31, -2**63, 2**63 - 1]))


betas = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, 1, -1, 10**400, True, "0.5",
                                                                                   None, 1e308]))
flags = st.one_of(st.booleans(), st.booleans(), st.sampled_from([0, 1, None, "yes"]))


def _graph(G: int, K: int) -> torch.Tensor:
    return ((torch.arange(G)[:, None] + torch.arange(1, K + 1)) % G).to(torch.int32)


@st.composite
def galleries(draw, G):
    kind = draw(st.sampled_from(["graph", "dense", "junk", "tensor"]))
    if kind == "graph" and G >= 2:
        return GalleryGraph.from_neighbors(_graph(G, draw(st.integers(1, G - 1))))
    if kind == "dense":
        return draw(tensors(dims=(2,), max_side=6))
    if kind == "tensor":
        return torch.randn(G, G).abs()
    return draw(st.sampled_from([None, "g", 3, [[0, 1], [1, 0]]]))


class Args:
    """Draws each argument from its valid strategy, except (often) one chosen argument drawn from its bad one: most
    examples then get past the first checks and reach the kernels."""

    def __init__(self, data, names):
        self.data = data
        self.broken = data.draw(st.sampled_from([None, None] + list(names)))

    def __call__(self, name, good, bad):
        return self.data.draw(bad if name == self.broken else st.one_of(good, good, good, bad) if self.broken is None
                              else good)


def good_scores(Q=(0, 4), G=(2, 7), dtypes=FLOATS):
    return st.builds(lambda q, g, dt, seed: torch.randn(q, g, generator=torch.Generator().manual_seed(seed)).to(dt),
                     st.integers(*Q), st.integers(*G), st.sampled_from(dtypes), st.integers(0, 999))


# ---- targets ------------------------------------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_fuzz_icfrr(data):
    a = Args(data, ["scores", "gallery", "k_g", "k_q", "beta", "iters", "semantics", "largest", "k", "depth",
                    "return_history", "early_stop", "backend"])
    scores = a("scores", good_scores(), tensors(dims=(2,)))
    G = scores.shape[1] if isinstance(scores, torch.Tensor) and scores.dim() == 2 else 4
    good_graph = st.builds(lambda K: GalleryGraph.from_neighbors(_graph(max(G, 2), K)), st.integers(1, max(G - 1, 1)))
    _call("icfrr", icfrr, scores=scores,
          gallery=a("gallery", st.one_of(good_graph, st.just(torch.rand(G, G))), galleries(G)),
          k_g=a("k_g", st.integers(1, max(G - 1, 1)), small_ints(-1, 6)), k_q=a("k_q", st.integers(1, 9), ints(-1, 8)),
          beta=a("beta", st.floats(0, 3), betas), iters=a("iters", st.integers(0, 4), small_ints(-2, 4)),
          semantics=a("semantics", st.sampled_from(["reference", "paper"]), st.sampled_from(["x", None, 1])),
          largest=a("largest", st.booleans(), flags),
          k=a("k", st.one_of(st.none(), st.integers(1, max(G, 1))), small_ints(-1, 7)),
          depth=a("depth", st.one_of(st.none(), st.integers(1, max(G, 1))), small_ints(-1, 7)),
          return_history=a("return_history", st.booleans(), flags), early_stop=a("early_stop", st.booleans(), flags),
          backend=a("backend", st.sampled_from(["auto", "reference"]), st.sampled_from(["cuda", None, 0])))


@FUZZ
@given(data=st.data())
def test_fuzz_knn(data):
    a = Args(data, ["x", "y", "k", "metric", "exclude_self", "largest", "precision", "row_offset"])
    x = a("x", good_scores(Q=(0, 5), G=(1, 4)), tensors(dims=(2,)))
    y = a("y", st.one_of(st.just(x), good_scores(Q=(1, 6), G=(1, 4))), tensors(dims=(2,)))
    _call("knn", knn, x=x, y=y, k=a("k", st.integers(1, 5), ints(-1, 7)),
          metric=a("metric", st.sampled_from(["ip", "cosine", "l2", "l2sq"]), st.sampled_from(["x", None])),
          exclude_self=a("exclude_self", st.booleans(), flags), largest=a("largest", st.none(), flags),
          precision=a("precision", st.sampled_from(["fp32", "bf16"]), st.sampled_from(["fp8", None])),
          row_offset=a("row_offset", st.integers(0, 3), ints(-1, 6)))


@FUZZ
@given(data=st.data())
def test_fuzz_gallery_graph(data):
    which = data.draw(st.sampled_from(["init", "from_neighbors", "from_distances", "from_features"]))
    if which in ("init", "from_neighbors"):
        nb = data.draw(tensors(dims=(2,), dtypes=[torch.int32, torch.int64, torch.uint8, torch.float32, torch.bool]))
        fn = GalleryGraph if which == "init" else GalleryGraph.from_neighbors
        _call(which, fn, neighbors=nb, values=data.draw(st.one_of(st.none(), tensors(dims=(2,)))),
              largest=data.draw(flags))
    elif which == "from_distances":
        _call(which, GalleryGraph.from_distances, gg=data.draw(tensors(dims=(2,))), k=data.draw(ints(-1, 6)),
              largest=data.draw(flags))
    else:
        _call(which, GalleryGraph.from_features, g=data.draw(tensors(dims=(2,))), k=data.draw(ints(-1, 6)),
              metric=data.draw(st.sampled_from(["l2", "ip", "cosine", "l2sq", "hamming"])),
              precision=data.draw(st.sampled_from(["fp32", "bf16", "x"])), keep_values=data.draw(flags),
              batch_size=data.draw(st.one_of(st.none(), ints(-1, 4))))


@FUZZ
@given(data=st.data())
def test_fuzz_index(data):
    a = Args(data, ["gallery_features", "k_g", "metric", "precision", "features", "batch_size", "queries", "k", "k_q",
                    "beta", "iters", "semantics", "depth", "return_history", "early_stop", "search_k_g",
                    "search_batch_size"])
    feats = a("gallery_features", good_scores(Q=(2, 8), G=(1, 4), dtypes=FLOATS), tensors(dims=(2,)))
    G = feats.shape[0] if isinstance(feats, torch.Tensor) and feats.dim() == 2 else 8
    index = _call("ICFRRIndex", ICFRRIndex, gallery_features=feats, k_g=a("k_g", st.integers(1, 3), small_ints(-1, 6)),
                  metric=a("metric", st.sampled_from(["l2", "ip", "cosine"]), st.sampled_from(["l2sq", None])),
                  precision=a("precision", st.sampled_from(["fp32", "bf16"]), st.sampled_from(["x", 1])))
    if not isinstance(index, ICFRRIndex):
        index = ICFRRIndex(torch.randn(8, 3), k_g=3)
    D = index.d
    if data.draw(st.booleans()):
        _call("ICFRRIndex.add", index.add, features=a("features", good_scores(Q=(0, 4), G=(D, D)), tensors(dims=(2,))),
              batch_size=a("batch_size", st.one_of(st.none(), st.integers(1, 3)), ints(-1, 4)))
    G = index.ntotal
    _call("ICFRRIndex.search", index.search, queries=a("queries", good_scores(Q=(0, 4), G=(D, D)), tensors(dims=(2,))),
          k=a("k", st.integers(1, G), small_ints(-1, 9)), k_q=a("k_q", st.integers(1, 9), ints(-1, 8)),
          beta=a("beta", st.floats(0, 2), betas), iters=a("iters", st.integers(0, 4), small_ints(-2, 4)),
          semantics=a("semantics", st.sampled_from(["reference", "paper"]), st.sampled_from([3, "x"])),
          depth=a("depth", st.one_of(st.none(), st.integers(G, G)), small_ints(-1, 9)),
          return_history=a("return_history", st.booleans(), flags), early_stop=a("early_stop", st.booleans(), flags),
          k_g=a("search_k_g", st.one_of(st.none(), st.integers(1, index.k_g)), small_ints(-1, 4)),
          batch_size=a("search_batch_size", st.one_of(st.none(), st.integers(1, 3)), ints(-1, 4)))


@FUZZ
@given(data=st.data())
def test_fuzz_evaluate(data):
    a = Args(data, ["indices", "query_labels", "gallery_labels", "map_at", "precision_at", "ap", "at_k", "chunk_size"])
    Q, G = data.draw(st.integers(0, 5)), data.draw(st.integers(1, 6))
    good_idx = st.builds(lambda seed: torch.stack([torch.randperm(G, generator=torch.Generator().manual_seed(seed + i))
                                                   for i in range(Q)]) if Q else torch.zeros(0, G, dtype=torch.long),
                         st.integers(0, 999))
    labels = [torch.int64, torch.uint8, torch.int32, torch.bool, torch.float32]
    lab = lambda n: st.builds(lambda seed, dt: torch.randint(0, 300, (n,), generator=torch.Generator().manual_seed(
        seed)).to(dt), st.integers(0, 99), st.sampled_from([torch.int64, torch.uint8, torch.int16, torch.bool]))
    _call("metrics.evaluate", metrics.evaluate,
          indices=a("indices", good_idx, tensors(dims=(2,), dtypes=[torch.int64, torch.int32, torch.uint8,
                                                                    torch.float32, torch.bool])),
          query_labels=a("query_labels", lab(Q), tensors(dims=(1,), dtypes=labels)),
          gallery_labels=a("gallery_labels", lab(G), tensors(dims=(1,), dtypes=labels)),
          map_at=a("map_at", st.lists(st.integers(1, 8), max_size=3), st.sampled_from([5, "ab", None, [0], [2**70]])),
          precision_at=a("precision_at", st.lists(st.integers(1, 8), max_size=3), st.sampled_from([[-1], (1.5,)])),
          ap=a("ap", st.sampled_from(["non_interpolated", "voc"]), st.sampled_from(["x", None])),
          at_k=a("at_k", st.sampled_from(["retrieved", "min_k_pos"]), st.sampled_from([None, 3])),
          chunk_size=a("chunk_size", st.integers(1, 4), ints(-1, 4)))


@FUZZ
@given(data=st.data())
def test_fuzz_ops(data):
    which = data.draw(st.sampled_from(["icfrr_rerank", "dense_topk", "knn_topk", "knn_scores"]))
    x = data.draw(tensors(dims=(2,), dtypes=FLOATS + [torch.int32, torch.int64]))
    if not isinstance(x, torch.Tensor):
        x = torch.randn(3, 4)
    b = data.draw(st.booleans())
    if which == "icfrr_rerank":
        G = x.shape[1] if x.dim() == 2 else 3
        nb = data.draw(st.one_of(
            st.builds(lambda k: _graph(max(G, 2), k), st.integers(1, 3)),
            tensors(dims=(2,), dtypes=[torch.int32, torch.int64]).filter(lambda t: isinstance(t, torch.Tensor))))
        _call(which, ops.icfrr_rerank, scores=x, neighbors=nb, k_q=data.draw(op_ints()),
              beta=data.draw(st.floats(allow_nan=True, allow_infinity=True)), iters=data.draw(op_ints(-2, 4)),
              semantics=data.draw(st.sampled_from(["reference", "paper", "x"])), largest=b,
              depth=data.draw(op_ints()), k=data.draw(op_ints()), return_history=data.draw(st.booleans()),
              early_stop=data.draw(st.booleans()))
    elif which == "dense_topk":
        _call(which, ops.dense_topk, x=x, k=data.draw(op_ints()), largest=b, exclude_self=data.draw(st.booleans()),
              row_offset=data.draw(op_ints()))
    else:
        y = data.draw(st.one_of(st.just(x), tensors(dims=(2,), dtypes=FLOATS)))
        if not isinstance(y, torch.Tensor):
            y = x
        metric = data.draw(st.sampled_from(["ip", "cosine", "l2", "l2sq", "x"]))
        precision = data.draw(st.sampled_from(["fp32", "bf16", "x"]))
        if which == "knn_topk":
            _call(which, ops.knn_topk, x=x, y=y, k=data.draw(op_ints()), metric=metric, largest=b,
                  exclude_self=data.draw(st.booleans()), row_offset=data.draw(op_ints()), precision=precision)
        else:
            _call(which, ops.knn_scores, x=x, y=y, metric=metric, precision=precision)


@FUZZ
@given(data=st.data())
def test_fuzz_files(data, tmp_path_factory):
    """Malformed files for GalleryGraph.load / ICFRRIndex.load: wrong formats, missing keys, wrong types,
    truncated bytes, pickled code."""
    d = tmp_path_factory.mktemp("f")
    good_graph = {"format": "icfrr_fast.GalleryGraph/1", "neighbors": _graph(6, 2), "values": None, "largest": False}
    good_index = {"format": ICFRRIndex.FORMAT, "features": torch.randn(6, 3), "neighbors": _graph(6, 2),
                  "values": None, "metric": "l2", "precision": "fp32"}
    base = dict(data.draw(st.sampled_from([good_graph, good_index])))
    for key in data.draw(st.lists(st.sampled_from(sorted(base)), max_size=2)):
        if data.draw(st.booleans()):
            base.pop(key, None)
        else:
            base[key] = data.draw(st.sampled_from([None, 3, "x", torch.zeros(2), torch.zeros(6, 2, dtype=torch.int64),
                                                   torch.ones(6, 3, dtype=torch.int64), [1, 2]]))
    path = d / "f.pth"
    torch.save(base, path)
    mode = data.draw(st.sampled_from(["as is", "truncate", "garbage", "npy"]))
    if mode == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])
    elif mode == "garbage":
        path.write_bytes(bytes(random.Random(data.draw(st.integers(0, 99))).getrandbits(8) for _ in range(64)))
    elif mode == "npy":
        path = d / "f.npy"
        np.save(path, np.array([1, 2, 3, 4, 5, 6]).astype(data.draw(st.sampled_from([">f4", "<i8", "U3", "c8"]))))
    loader = data.draw(st.sampled_from([GalleryGraph.load, ICFRRIndex.load]))
    _call(loader.__qualname__, loader, path=path)


@FUZZ
@given(argv=st.lists(st.sampled_from(["rerank", "graph", "--k", "-1", "0", "1e9", "--k-g", "--k-q", "--iters",
                                      "--beta", "nan", "--chunk", "--depth", "--threads", "99999999999", "x",
                                      "--semantics", "paper", "--out", "--similarity", "--map-at", ""]),
                     max_size=8))
def test_fuzz_cli_argument_parsing(argv):
    """The CLI's parser: bad flags end with argparse's usage message (SystemExit 2), never a traceback."""
    _record("build_parser().parse_args", argv=argv)
    parser = build_parser(argv[0] if argv and argv[0] in ("rerank", "graph") else None)
    try:
        parser.parse_args(argv)
    except SystemExit as e:
        assert e.code in (0, 2), e.code


@pytest.fixture(autouse=True)
def _few_threads():
    icfrr_fast.set_num_threads(2)
    yield
