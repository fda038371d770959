"""Reliability: out-of-memory becomes MemoryError (never an abort), Ctrl-C stops one long query, invalid gallery graphs
and rankings are refused instead of giving silent wrong answers, and every user error is a clear ValueError /
TypeError naming the argument (a CLI error: one line, exit status 2, no traceback).

Out-of-memory runs in a subprocess under an address-space limit (RLIMIT_AS), so that an abort would fail the test
instead of ending the test run, and so that the failure does not depend on the machine's overcommit setting.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

import icfrr_fast
from icfrr_fast import GalleryGraph, ICFRRIndex, icfrr, metrics, ops, reference
from icfrr_fast.cli import main
from icfrr_fast.testing import cross_domain_features

from _assertions import assert_rankings_equal, assert_values_equal

PACKAGE_ROOT = str(Path(icfrr_fast.__file__).resolve().parent.parent)


def _ring_graph(G: int, K: int) -> torch.Tensor:
    """(G, K) int32: row i = i + 1, ..., i + K (mod G): distinct ids, never the row's own."""
    return ((torch.arange(G)[:, None] + torch.arange(1, K + 1)) % G).to(torch.int32)


def _run_limited(body: str, headroom_mb: int) -> subprocess.CompletedProcess:
    """Run `body` in a fresh interpreter after limiting its address space to its current size + headroom_mb.

    `body` prepares its inputs in `setup()` (run before the limit, warming up the OpenMP threads) and runs the
    call under test in `run()`, which must print OK.
    """
    code = textwrap.dedent("""
        import resource, torch, icfrr_fast
        from icfrr_fast import ops
        icfrr_fast.set_num_threads(2)
        {body}
        state = setup()
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024
        limit = vm + {headroom} * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        run(state)
    """).format(body=textwrap.dedent(body), headroom=headroom_mb)
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT, OMP_STACKSIZE="1M")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


def _assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0 and "OK" in proc.stdout, (
        f"exit {proc.returncode} (negative: killed by a signal, -6 = abort)\nstdout: {proc.stdout[-2000:]}\n"
        f"stderr: {proc.stderr[-2000:]}")


# ------------------------------------------------------------------------------------------------------------------
# out of memory -> MemoryError with the size
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path,G", [(2, 4_000_000), (1, 8_000_000)], ids=["merge kernel", "touched-set kernel"])
def test_icfrr_rerank_scratch_out_of_memory_is_a_memory_error(path, G):
    """Full depth at G = 4e6 (merge kernel, ~360 MB of scratch per thread) / 8e6 (touched-set kernel, ~320 MB): the
    scratch cannot be had; it was allocated inside the OpenMP region, where std::bad_alloc called std::terminate
    (exit -6)."""
    proc = _run_limited("""
        def setup():
            icfrr_fast._native.load().set_full_depth_path(%d)
            G = %d
            nb = ((torch.arange(G) + 1) %% G).to(torch.int32)[:, None]
            ops.icfrr_rerank(torch.randn(4, 50), ((torch.arange(50)[:, None] + torch.arange(1, 4)) %% 50).int(),
                             3, 0.5, 2, "reference", True, 50, 5, False, False)  # start the OpenMP threads
            return torch.randn(2, G), nb

        def run(state):
            scores, nb = state
            try:
                ops.icfrr_rerank(scores, nb, 1, 0.5, 1, "reference", True, scores.shape[1], 10, False, False)
            except MemoryError as e:
                assert "bytes" in str(e) and "icfrr_rerank" in str(e), str(e)
                print("OK")
            else:
                print("no MemoryError")
        """ % (path, G), headroom_mb=200)
    _assert_ok(proc)


def test_dense_topk_scratch_out_of_memory_is_a_memory_error():
    """Rows of 10^7 columns: the per-thread candidate buffers (~200 MB each) grew inside the OpenMP region."""
    proc = _run_limited("""
        def setup():
            ops.dense_topk(torch.randn(64, 5000), 3, True, False, 0)  # start the OpenMP threads
            return torch.randn(2, 10_000_000)

        def run(x):
            try:
                ops.dense_topk(x, 5, True, False, 0)
            except MemoryError as e:
                assert "bytes" in str(e) and "dense_topk" in str(e), str(e)
                print("OK")
            else:
                print("no MemoryError")
        """, headroom_mb=60)
    _assert_ok(proc)


def test_outputs_that_cannot_be_allocated_are_a_memory_error_that_suggests_k():
    proc = _run_limited("""
        def setup():
            G = 50
            nb = ((torch.arange(G)[:, None] + torch.arange(1, 5)) % G).to(torch.int32)
            graph = icfrr_fast.GalleryGraph.from_neighbors(nb)
            icfrr_fast.icfrr(torch.randn(3, G), graph, k_g=4, k_q=5, iters=2, return_history=True)  # warm up
            return torch.randn(3, G), graph

        def run(state):
            scores, graph = state
            try:  # history (3, 2^31 - 1, 50) int64: 2.6 TB
                icfrr_fast.icfrr(scores, graph, k_g=4, k_q=5, iters=2**31 - 2, return_history=True)
            except MemoryError as e:
                assert "bytes" in str(e) and "k" in str(e) and "depth" in str(e), str(e)
                print("OK")
            else:
                print("no MemoryError")
        """, headroom_mb=200)
    _assert_ok(proc)


# ------------------------------------------------------------------------------------------------------------------
# Ctrl-C inside one long query
# ------------------------------------------------------------------------------------------------------------------
def test_ctrl_c_stops_one_long_query():
    """Q = 1, iters = 10^7: interrupts used to be polled only between queries."""
    G = 5000
    scores = torch.randn(1, G, generator=torch.Generator().manual_seed(0))
    nb = _ring_graph(G, 16)
    ops.icfrr_rerank(scores, nb, 50, 0.5, 1, "paper", True, G, 10, False, False)  # first-call imports done
    fired = {}

    def interrupt():
        fired["t"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(0.3, interrupt)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            ops.icfrr_rerank(scores, nb, 50, 0.5, 10**7, "paper", True, G, 10, False, False)
    finally:
        timer.cancel()
    stopped = time.perf_counter()
    assert "t" in fired, "the call finished before the interrupt"
    assert stopped - fired["t"] < 1.0, f"took {stopped - fired['t']:.2f} s to stop after SIGINT"


# ------------------------------------------------------------------------------------------------------------------
# invalid gallery graphs: duplicate ids, self
# ------------------------------------------------------------------------------------------------------------------
def test_duplicate_neighbour_ids_are_refused_by_the_kernel():
    """A row listing one id 510 times used to wrap the 8-bit vote count (510 votes -> 254), and the kernel (every
    occurrence) and the reference (one) disagreed."""
    G, K = 600, 510
    nb = _ring_graph(G, K)
    nb[:, 1:] = nb[:, :1]  # every row: its first neighbour 510 times
    scores = torch.randn(2, G)
    with pytest.raises(ValueError, match=r"row \d+ lists item \d+ twice \(ranks 0 and 1\)"):
        ops.icfrr_rerank(scores, nb, 3, 0.5, 2, "reference", True, G, 10, False, False)


@pytest.mark.parametrize("threads", [1, 2])
def test_graph_row_errors_name_the_smallest_bad_voter_row_whatever_the_threads(threads):
    G = 300
    nb = _ring_graph(G, 8)
    nb[200, 5] = 200  # the row's own id
    nb[150, 3] = nb[150, 0]  # a duplicate
    scores = torch.zeros(40, G)
    scores[:, 140:210] = 1.0  # rows 140..209 are everybody's voters
    icfrr_fast.set_num_threads(threads)
    with pytest.raises(ValueError, match=r"row 150 lists item 151 twice"):
        ops.icfrr_rerank(scores, nb, 70, 0.5, 1, "reference", True, G, 5, False, False)
    nb[150, 3] = 154
    with pytest.raises(ValueError, match=r"row 200 lists the item itself"):
        ops.icfrr_rerank(scores, nb, 70, 0.5, 1, "reference", True, G, 5, False, False)
    nb[200, 5] = 209
    ops.icfrr_rerank(scores, nb, 70, 0.5, 1, "reference", True, G, 5, False, False)


def test_duplicate_neighbour_ids_are_refused_by_gallery_graph_and_the_other_paths():
    nb = _ring_graph(20, 4)
    nb[7, 2] = nb[7, 1]
    with pytest.raises(ValueError, match="row 7 lists an id twice"):
        GalleryGraph.from_neighbors(nb)
    with pytest.raises(ValueError, match="row 7 lists an id twice"):
        GalleryGraph(nb.long())
    with pytest.raises(ValueError, match="row 7 lists an id twice"):  # reference / CUDA paths: one sort
        ops._check_graph_rows(nb)
    nb[7, 2] = 7
    with pytest.raises(ValueError, match="row 7 lists the item itself"):
        ops._check_graph_rows(nb)


def test_valid_graph_results_unchanged_by_the_row_check():
    d = cross_domain_features(5, 120, 8, 4, seed=1)
    qg = torch.cdist(d.queries.double(), d.gallery.double())
    nb = reference.dense_topk(torch.cdist(d.gallery.double(), d.gallery.double()), 12, largest=False,
                              exclude_self=True)[1].to(torch.int32)
    got = ops.icfrr_rerank(qg, nb, 10, 0.5, 4, "paper", False, 120, 120, True, False)
    want = reference.icfrr_rerank(qg, nb, k_q=10, beta=0.5, iters=4, semantics="paper", largest=False,
                                  return_history=True)
    assert_rankings_equal(got[1], want[1])
    assert_values_equal(got[0], want[0])
    assert_rankings_equal(got[2], want[2])


# ------------------------------------------------------------------------------------------------------------------
# values in the scores' dtype
# ------------------------------------------------------------------------------------------------------------------
def test_float64_values_do_not_overflow():
    G = 40
    scores = torch.randn(2, G, dtype=torch.float64) * 1e299 + 5e299
    nb = _ring_graph(G, 5)
    v, i, _ = ops.icfrr_rerank(scores, nb, 6, 0.5, 3, "reference", True, G, G, False, False)
    assert v.dtype == torch.float64 and bool(torch.isfinite(v).all())
    rv, ri, _ = reference.icfrr_rerank(scores, nb, k_q=6, beta=0.5, iters=3)
    assert_rankings_equal(i, ri)
    assert_values_equal(v, rv)
    res = icfrr(scores, GalleryGraph.from_neighbors(nb), k_g=5, k_q=6)
    assert res.values.dtype == torch.float64 and bool(torch.isfinite(res.values).all())


# ------------------------------------------------------------------------------------------------------------------
# ICFRRIndex.add equals a rebuild for float64 features
# ------------------------------------------------------------------------------------------------------------------
def test_add_equals_rebuild_for_float64_features():
    """Positions i + eps_i on a line (|eps| ~ 1e-9): distances to both sides tie in float32 but not in float64."""
    gen = torch.Generator().manual_seed(4)
    pos = torch.arange(60, dtype=torch.float64) + torch.randn(60, generator=gen, dtype=torch.float64) * 1e-9
    perm = torch.randperm(60, generator=gen)
    g = pos[perm][:, None].contiguous()
    index = ICFRRIndex(g[:35], k_g=4, metric="l2")
    index.add(g[35:])
    rebuilt = ICFRRIndex(g, k_g=4, metric="l2")
    assert_rankings_equal(index.graph.neighbors, rebuilt.graph.neighbors, "neighbors")
    assert_values_equal(index.graph.values, rebuilt.graph.values, "values")
    assert index.graph.values.dtype == torch.float64


# ------------------------------------------------------------------------------------------------------------------
# metrics.evaluate
# ------------------------------------------------------------------------------------------------------------------
def _eval_args():
    return torch.tensor([[0, 1, 2]]), torch.tensor([1]), torch.tensor([1, 0, 1])


@pytest.mark.parametrize("chunk_size,exc", [(-1, ValueError), (0, ValueError), (1.5, TypeError), (True, TypeError)])
def test_evaluate_rejects_bad_chunk_size(chunk_size, exc):
    with pytest.raises(exc, match="chunk_size"):
        metrics.evaluate(*_eval_args(), chunk_size=chunk_size)
    assert round(metrics.evaluate(*_eval_args(), chunk_size=1)["mAP@all"], 4) == 0.8333


def test_evaluate_rejects_repeated_ids():
    with pytest.raises(ValueError, match="row 1 lists a gallery id twice"):
        metrics.evaluate(torch.tensor([[0, 1, 2], [0, 0, 0]]), torch.tensor([1, 1]), torch.tensor([1, 0, 1]))


def test_evaluate_never_casts_query_labels_to_the_gallery_dtype():
    """Query label 300 against uint8 gallery labels used to wrap to 44."""
    g8 = torch.tensor([44, 1, 44, 1], dtype=torch.uint8)
    idx = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]])
    q = torch.tensor([300, 1])
    got = metrics.evaluate(idx, q, g8)
    want = metrics.evaluate(idx, q, g8.long())
    assert got == want and got["queries_without_positive"] == 1


# ------------------------------------------------------------------------------------------------------------------
# clear errors naming the argument
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    d = cross_domain_features(3, 30, 4, 3, seed=0)
    return d.queries, d.gallery, torch.cdist(d.queries, d.gallery), torch.cdist(d.gallery, d.gallery)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(k_g=2.0), TypeError, "k_g must be an int"),
    (dict(k_q=2**63), ValueError, "k_q must be in"),
    (dict(iters=2**63), ValueError, "iters must be in"),
    (dict(beta=10**400), ValueError, "beta must be finite"),
    (dict(scores="sparse"), TypeError, "scores must be a dense"),
], ids=lambda v: str(v)[:30])
def test_icfrr_argument_errors(small, kw, exc, match):
    _, _, qg, gg = small
    kw = dict(kw)
    scores = qg.to_sparse() if kw.pop("scores", None) == "sparse" else qg
    args = {**dict(k_g=5, k_q=4, largest=False), **kw}
    with pytest.raises(exc, match=match):
        icfrr(scores, gg, **args)


def test_index_search_validates_before_allocating_and_for_empty_queries(small):
    q, g, _, _ = small
    index = ICFRRIndex(g, k_g=5)
    with pytest.raises(ValueError, match="iters must be in"):
        index.search(q, 5, iters=-3, return_history=True)
    with pytest.raises(ValueError, match="k_q must be in"):
        index.search(q[:0], 5, k_q=0)
    with pytest.raises(ValueError, match="beta must be finite"):
        index.search(q, 5, beta=10**400)
    D, I = index.search(q[:0], 5, k_q=3)
    assert D.shape == (0, 5) and I.shape == (0, 5)


def test_index_and_graph_files_with_missing_or_mistyped_entries(small, tmp_path):
    _, g, _, _ = small
    index = ICFRRIndex(g, k_g=5)
    index.save(tmp_path / "i.pth")
    d = torch.load(tmp_path / "i.pth", weights_only=True)
    for change, match in [(dict(metric=None), "missing entry 'metric'"), (dict(features=[1, 2]), "'features' must"),
                          (dict(features=d["features"].long()), "features must be a floating"),
                          (dict(neighbors=d["neighbors"].float()), "neighbors must be an integer")]:
        bad = {**d, **change}
        if change.get("metric", 0) is None:
            del bad["metric"]
        torch.save(bad, tmp_path / "bad.pth")
        with pytest.raises(ValueError, match=match):
            ICFRRIndex.load(tmp_path / "bad.pth")
    index.graph.save(tmp_path / "g.pth")
    gd = torch.load(tmp_path / "g.pth", weights_only=True)
    torch.save({k: v for k, v in gd.items() if k != "largest"}, tmp_path / "bad_g.pth")
    with pytest.raises(ValueError, match="missing entry 'largest'"):
        GalleryGraph.load(tmp_path / "bad_g.pth")
    torch.save({**gd, "neighbors": "nope"}, tmp_path / "bad_g.pth")
    with pytest.raises(ValueError, match="'neighbors' must be Tensor"):
        GalleryGraph.load(tmp_path / "bad_g.pth")


def test_set_num_threads_bounds():
    with pytest.raises(ValueError, match=r"num_threads must be in \[1, "):
        icfrr_fast.set_num_threads(10**10)
    with pytest.raises(TypeError, match="num_threads must be an int"):
        icfrr_fast.set_num_threads(2.0)


def test_errors_name_the_users_argument_not_the_ops():
    with pytest.raises(ValueError, match="gg must be finite"):
        GalleryGraph.from_distances(torch.full((5, 5), float("nan")), 2)
    with pytest.raises(TypeError, match="gg must be a floating"):
        GalleryGraph.from_distances(torch.ones(5, 5, dtype=torch.int64), 2)
    with pytest.raises(TypeError, match="g must be a floating"):
        GalleryGraph.from_features(torch.ones(5, 3, dtype=torch.int64), 2)


# ------------------------------------------------------------------------------------------------------------------
# files and the command line
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def cache(tmp_path):
    d = cross_domain_features(10, 60, 8, 4, seed=2)
    torch.save(torch.cdist(d.queries, d.gallery), tmp_path / "qg_dists.pth")
    torch.save(torch.cdist(d.gallery, d.gallery), tmp_path / "gg_dists.pth")
    torch.save({"query": d.query_labels, "gallery": d.gallery_labels}, tmp_path / "labels.pth")
    return tmp_path


def _cli(capsys, *argv):
    code = main(["rerank", *map(str, argv), "--k-g", "8", "--k-q", "6", "--iters", "2", "--no-progress"])
    return code, capsys.readouterr()


@pytest.mark.parametrize("k", ["-1", "0", "61"])
def test_cli_rerank_rejects_bad_k(cache, capsys, k):
    code, out = _cli(capsys, cache, "--k", k)
    assert code == 2 and "--k must be" in out.err and "Traceback" not in out.err
    assert not (cache / "icfrr_rankings.pth").exists()


def test_cli_rerank_keeps_only_k_columns_and_bounds_chunk_memory(cache, capsys, monkeypatch):
    """With labels, every chunk ran with k=None and views of its (chunk, G) outputs stayed alive until the end."""
    from icfrr_fast.commands import rerank as cmd

    # 3 queries' histories per chunk
    monkeypatch.setattr(cmd, "HISTORY_BUDGET_BYTES", 3 * (2 + 3) * 60 * 8, raising=False)
    alive, sizes = [], []

    def spy(scores, *a, **kw):
        assert all(ref() is None for ref in alive), "an earlier chunk's full outputs are still alive"
        res = icfrr(scores, *a, **kw)
        alive.append(weakref.ref(res.indices))
        sizes.append(scores.shape[0])
        return res

    monkeypatch.setattr(cmd, "icfrr", spy)
    code, out = _cli(capsys, cache, "--k", "7", "--chunk", "4")
    assert code == 0, out.err
    assert max(sizes) == 3 and sum(sizes) == 10
    saved = torch.load(cache / "icfrr_rankings.pth", weights_only=True)
    assert saved["indices"].shape == (10, 7)


def test_cli_errors_are_one_line_without_traceback(cache, capsys):
    torch.save({"query": torch.tensor(3), "gallery": torch.zeros(60, dtype=torch.int64)}, cache / "labels.pth")
    code, out = _cli(capsys, cache)
    assert code == 2 and "expected a 1-D tensor of int labels" in out.err and "Traceback" not in out.err
    (cache / "labels.pth").unlink()
    (cache / "a_dir").mkdir()
    code, out = _cli(capsys, cache, "--out", cache / "a_dir")
    assert code == 2 and "is a directory" in out.err and len(out.err.strip().splitlines()) == 1


def test_npy_files_truncated_or_big_endian(tmp_path):
    from icfrr_fast import io

    a = np.arange(12, dtype=">f4").reshape(3, 4)
    np.save(tmp_path / "be.npy", a)
    assert torch.equal(io.load_tensor_file(tmp_path / "be.npy"), torch.arange(12, dtype=torch.float32).view(3, 4))
    np.save(tmp_path / "ok.npy", np.ones((100, 100), dtype=np.float32))
    raw = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a readable .npy file") as e:
        io.load_tensor_file(tmp_path / "cut.npy")
    assert "object arrays" not in str(e.value)
    (tmp_path / "junk.pth").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="not a readable torch file"):
        io.load_tensor_file(tmp_path / "junk.pth")


def test_atomic_write_never_touches_the_umask_and_keeps_permissions(tmp_path, monkeypatch):
    from icfrr_fast import io

    target = tmp_path / "out.pth"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)

    def no_umask(mask):
        raise AssertionError("os.umask changes the whole process's umask (a race with other threads)")

    monkeypatch.setattr(os, "umask", no_umask)
    io.atomic_save({"x": torch.ones(2)}, target)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    io.atomic_save({"x": torch.ones(2)}, tmp_path / "new.pth")
    assert torch.load(tmp_path / "new.pth", weights_only=True)["x"].shape == (2,)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_training_checkpoints_are_validated(tmp_path):
    from icfrr_fast.training.checkpoint import load_checkpoint, save_checkpoint
    from icfrr_fast.training.config import Config

    cfg = Config()
    cfg.data.benchmark = "skimage_toy"
    model = torch.nn.Linear(2, 2)
    path = save_checkpoint(tmp_path / "ck.pth", model=model, position={"epoch": 0, "batch": 0, "step": 0},
                           config=cfg.to_dict())
    good = load_checkpoint(path)
    for change, match in [(dict(position={"epoch": -1, "batch": 0, "step": 0}), r"position\['epoch'\]"),
                          (dict(model=[1, 2]), "'model' has type list"),
                          (dict(rng={"torch": torch.zeros(3), "python": None}), r"rng\['torch'\]"),
                          (dict(config={**good["config"], "optim": {**good["config"]["optim"], "lr": -1.0}}),
                           "config: optim.lr")]:
        torch.save({**good, **change}, tmp_path / "bad.pth")
        with pytest.raises(ValueError, match=match):
            load_checkpoint(tmp_path / "bad.pth")


def test_meta_tensors_where_values_are_needed_are_a_value_error():
    meta = lambda t: t.to("meta")  # noqa: E731
    calls = [
        lambda: metrics.evaluate(meta(torch.tensor([[0, 1]])), torch.tensor([0]), torch.tensor([0, 1])),
        lambda: metrics.evaluate(torch.tensor([[0, 1]]), meta(torch.tensor([0])), torch.tensor([0, 1])),
        lambda: GalleryGraph(meta(torch.tensor([[1], [0]]))),
        lambda: GalleryGraph.from_features(meta(torch.rand(4, 3)), 2),
        lambda: ICFRRIndex(meta(torch.rand(5, 3)), k_g=2),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="meta tensor"):
            call()


def test_evaluate_k_beyond_int64_is_a_value_error():
    """Found by the fuzz test: map_at=[2**70] raised OverflowError from inside torch.clamp."""
    with pytest.raises(ValueError, match="map_at must hold positive ints"):
        metrics.evaluate(*_eval_args(), map_at=[2**70])
