"""icfrr_fast.distributed: 2 and 3 gloo processes on CPU (spawned here, free port, bounded by timeouts).

Each scenario runs once per world size in spawned processes (a module-scoped fixture, so the whole file starts only
a few process groups); the single-process results they must equal bit for bit are computed here in the parent.
Shards are uneven (one is empty, one smaller than k) and the features are small integers, so exact ties between
items of different shards are frequent and the (score, smaller global id) order is exercised.
"""

from __future__ import annotations

import os
import socket
import time
import traceback

import pytest
import torch
import torch.multiprocessing as mp

import icfrr_fast
from icfrr_fast import GalleryGraph, ICFRRIndex

from _assertions import assert_rankings_equal, assert_values_equal

SHARDS = {2: [9, 31], 3: [14, 0, 27]}  # rows per rank; G = 40 / 41
GRAPH_CASES = [("l2", "fp32", torch.float32), ("l2sq", "fp32", torch.float32), ("ip", "fp32", torch.float32),
               ("cosine", "fp32", torch.float32), ("l2", "bf16", torch.float32), ("ip", "fp32", torch.float64)]
SEARCH = dict(k_q=6, beta=0.5, iters=3, depth=20)
JOB_TIMEOUT_S = 90


def _gallery(G: int, dtype=torch.float32, seed: int = 5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    g = torch.randint(-2, 3, (G, 6), generator=gen).to(dtype)
    g[G // 2] = g[1]  # an exact duplicate across shards
    return g


def _queries(Q: int = 7) -> torch.Tensor:
    return torch.randint(-2, 3, (Q, 6), generator=torch.Generator().manual_seed(11)).to(torch.float32)


def _shard(t: torch.Tensor, sizes, rank: int) -> torch.Tensor:
    o = sum(sizes[:rank])
    return t[o:o + sizes[rank]]


# ------------------------------------------------------------------------------------------------------------------
# scenarios (run in every spawned rank; return a dict saved for the parent)
# ------------------------------------------------------------------------------------------------------------------
def _scenario_results(rank: int, world: int) -> dict:
    import icfrr_fast.distributed as ifd

    sizes = SHARDS[world]
    out = {}
    for metric, precision, dtype in GRAPH_CASES:
        g = _shard(_gallery(sum(sizes), dtype), sizes, rank)
        graph = ifd.build_graph(g, 10, metric=metric, precision=precision, timeout=30)
        out[f"graph/{metric}/{precision}/{dtype}"] = (graph.neighbors, graph.values)
    batched = ifd.build_graph(_shard(_gallery(sum(sizes)), sizes, rank), 10, batch_size=4, timeout=30)
    out["graph_batched"] = (batched.neighbors, batched.values)
    all_g = _gallery(sum(sizes))
    q = _queries()
    for metric in ("l2", "ip"):
        index = ifd.ShardedICFRRIndex(_shard(all_g, sizes, rank), k_g=8, metric=metric, timeout=30)
        out[f"sharded_graph/{metric}"] = index.graph.neighbors
        for semantics in ("reference", "paper"):
            b0 = index.bytes_sent
            out[f"search/{metric}/{semantics}"] = index.search(q, 10, semantics=semantics, return_history=True,
                                                               batch_size=3, **SEARCH)
            out[f"bytes/{metric}/{semantics}"] = index.bytes_sent - b0
        out[f"search_es/{metric}"] = index.search(q, 5, early_stop=True, k_g=5, **SEARCH)
        ifd.REMAP_TABLE_BYTES, table_bytes = 0, ifd.REMAP_TABLE_BYTES  # the binary-search remap
        out[f"search_bsearch/{metric}"] = index.search(q, 10, batch_size=4, **SEARCH)
        ifd.REMAP_TABLE_BYTES = table_bytes
    rep = ifd.ReplicatedICFRRIndex(all_g, k_g=8, metric="l2", timeout=30)
    out["replicated_graph"] = (rep.index.graph.neighbors, rep.index.graph.values)
    out["replicated_search"] = rep.search(q, 10, depth=20, k_q=6, iters=3, return_history=True)
    out["replicated_full_depth"] = rep.search(q, 4, k_q=6, iters=2)
    return out


def _expect_error(fn, *args, **kwargs) -> tuple:
    try:
        fn(*args, **kwargs)
    except Exception as e:  # recorded for the parent's assertions
        return type(e).__name__, str(e)
    return None, ""


def _scenario_bad_input(rank: int, world: int) -> dict:
    import icfrr_fast.distributed as ifd

    sizes = SHARDS[world]
    g = _shard(_gallery(sum(sizes)), sizes, rank)
    nan = g.clone()
    if rank == world - 1:
        nan[0, 0] = float("nan")
    wide = torch.zeros((g.shape[0], 7)) if rank == 0 else g
    index = ifd.ShardedICFRRIndex(g, k_g=5, timeout=30)
    q = _queries()
    return {
        "nan_on_last_rank": _expect_error(ifd.build_graph, nan, 3, timeout=30),
        "k_too_large": _expect_error(ifd.build_graph, g, sum(sizes), timeout=30),
        "k_differs": _expect_error(ifd.build_graph, g, 3 + rank, timeout=30),
        "d_differs": _expect_error(ifd.build_graph, wide, 3, timeout=30),
        "bad_metric": _expect_error(ifd.build_graph, g, 3, metric="hamming", timeout=30),
        "k_not_int": _expect_error(ifd.build_graph, g, 2.5, timeout=30),
        "bad_timeout": _expect_error(ifd.build_graph, g, 3, timeout=-1),
        "queries_differ": _expect_error(index.search, q + rank, 5, depth=10, k_q=4),
        "depth_too_large": _expect_error(index.search, q, 5, depth=sum(sizes) + 1),
        "k_above_depth": _expect_error(index.search, q, 11, depth=10),
        "bad_semantics": _expect_error(index.search, q, 5, depth=10, semantics="nope"),
        "query_dim": _expect_error(index.search, q[:, :5], 5, depth=10),
        "replicated_differs": _expect_error(ifd.ReplicatedICFRRIndex, _gallery(20) + rank, k_g=3, timeout=30),
        "still_works": index.search(q, 5, depth=10, k_q=4),
    }


def _scenario_dead_rank(rank: int, world: int) -> dict:
    import icfrr_fast.distributed as ifd

    if rank == world - 1:
        os._exit(3)  # dies after the rendezvous, before the collective
    t0 = time.monotonic()
    err = _expect_error(ifd.build_graph, _gallery(20), 3, timeout=20)
    return {"error": err, "seconds": time.monotonic() - t0}


def _scenario_stuck_rank(rank: int, world: int) -> dict:
    import icfrr_fast.distributed as ifd

    if rank == world - 1:
        time.sleep(JOB_TIMEOUT_S)  # never joins the collective (the parent kills it)
    t0 = time.monotonic()
    err = _expect_error(ifd.build_graph, _gallery(20), 3, timeout=3)
    return {"error": err, "seconds": time.monotonic() - t0}


SCENARIOS = {f.__name__[len("_scenario_"):]: f for f in
             (_scenario_results, _scenario_bad_input, _scenario_dead_rank, _scenario_stuck_rank)}


# ------------------------------------------------------------------------------------------------------------------
# process harness
# ------------------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _context():
    """A forkserver that has imported torch and icfrr_fast once: each rank then starts in milliseconds, and no rank
    is forked from this (possibly multi-threaded) test process."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "torch.distributed", "icfrr_fast", "icfrr_fast.distributed",
                                 __name__])
    return ctx


def _entry(rank: int, world: int, port: int, scenario: str, out_dir: str) -> None:
    import icfrr_fast.distributed as ifd

    torch.set_num_threads(1)
    icfrr_fast.set_num_threads(1)
    path = os.path.join(out_dir, f"rank{rank}.pt")
    try:
        # torchrun's environment, read by init()
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
        ifd.init(backend="gloo", timeout=60)
        result = SCENARIOS[scenario](rank, world)
        torch.save({"ok": result}, path)
    except BaseException:  # the parent reports it
        torch.save({"error": traceback.format_exc()}, path)
    os._exit(0)  # no destroy_process_group: a dead peer would make it wait


def _spawn(world: int, scenario: str, tmp_path, *, wait_for=None) -> list:
    """Run a scenario on ``world`` gloo ranks; returns each rank's result (None: it wrote none). ``wait_for``: the
    ranks whose results end the job (others are killed then)."""
    ctx = _context()
    out_dir = str(tmp_path / f"{scenario}-{world}")
    os.makedirs(out_dir, exist_ok=True)
    port = _free_port()
    procs = [ctx.Process(target=_entry, args=(r, world, port, scenario, out_dir), daemon=True) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    wanted = range(world) if wait_for is None else wait_for
    try:
        for r in wanted:
            procs[r].join(max(0.0, deadline - time.monotonic()))
        assert all(not procs[r].is_alive() for r in wanted), f"{scenario}: ranks still running after {JOB_TIMEOUT_S} s"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    results = []
    for r in range(world):
        path = os.path.join(out_dir, f"rank{r}.pt")
        res = torch.load(path, weights_only=False) if os.path.exists(path) else None
        if res is not None and "error" in res:
            pytest.fail(f"{scenario}, rank {r} of {world} failed:\n{res['error']}")
        results.append(None if res is None else res["ok"])
    return results


@pytest.fixture(scope="module", params=[2, 3], ids=["world2", "world3"])
def results(request, tmp_path_factory):
    world = request.param
    return world, _spawn(world, "results", tmp_path_factory.mktemp("dist"))


# ------------------------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric,precision,dtype", GRAPH_CASES)
def test_build_graph_equals_single_process(results, metric, precision, dtype):
    world, res = results
    sizes = SHARDS[world]
    g = _gallery(sum(sizes), dtype)
    ref = GalleryGraph.from_features(g, 10, metric=metric, precision=precision)
    for r in range(world):
        nbr, val = res[r][f"graph/{metric}/{precision}/{dtype}"]
        assert nbr.dtype == torch.int32 and nbr.shape == (sizes[r], 10)
        assert_rankings_equal(nbr, _shard(ref.neighbors, sizes, r), f"rank {r} neighbours")
        assert_values_equal(val, _shard(ref.values, sizes, r), f"rank {r} values")
    if (metric, precision, dtype) == GRAPH_CASES[0]:  # rows in batches of 4 (the merge runs per batch)
        for r in range(world):
            assert_rankings_equal(res[r]["graph_batched"][0], _shard(ref.neighbors, sizes, r), f"rank {r} batched")
            assert_values_equal(res[r]["graph_batched"][1], _shard(ref.values, sizes, r), f"rank {r} batched")


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("semantics", ["reference", "paper"])
def test_sharded_search_equals_icfrr_index(results, metric, semantics):
    world, res = results
    g, q = _gallery(sum(SHARDS[world])), _queries()
    index = ICFRRIndex(g, k_g=8, metric=metric)
    for r in range(world):
        assert_rankings_equal(res[r][f"sharded_graph/{metric}"], _shard(index.graph.neighbors, SHARDS[world], r))
    D, I, H = index.search(q, 10, semantics=semantics, return_history=True, **SEARCH)
    for r in range(world):
        Dr, Ir, Hr = res[r][f"search/{metric}/{semantics}"]
        assert_rankings_equal(Ir, I, f"rank {r} I")
        assert_values_equal(Dr, D, f"rank {r} D")
        assert_rankings_equal(Hr, H, f"rank {r} H")
        assert res[r][f"bytes/{metric}/{semantics}"] > 0
    D, I = index.search(q, 10, **SEARCH)
    for r in range(world):
        assert_rankings_equal(res[r][f"search_bsearch/{metric}"][1], I, f"rank {r} I (binary-search remap)")
        assert_values_equal(res[r][f"search_bsearch/{metric}"][0], D, f"rank {r} D (binary-search remap)")
    D, I = index.search(q, 5, early_stop=True, k_g=5, **SEARCH)
    for r in range(world):
        assert_rankings_equal(res[r][f"search_es/{metric}"][1], I, f"rank {r} early-stop I")
        assert_values_equal(res[r][f"search_es/{metric}"][0], D, f"rank {r} early-stop D")


def test_replicated_equals_icfrr_index(results):
    world, res = results
    g, q = _gallery(sum(SHARDS[world])), _queries()
    index = ICFRRIndex(g, k_g=8, metric="l2")
    want = [index.search(q, 10, depth=20, k_q=6, iters=3, return_history=True), index.search(q, 4, k_q=6, iters=2)]
    for r in range(world):
        nbr, val = res[r]["replicated_graph"]
        assert_rankings_equal(nbr, index.graph.neighbors, f"rank {r} replicated graph")
        assert_values_equal(val, index.graph.values, f"rank {r} replicated graph values")
        for got, exp, name in zip((res[r]["replicated_search"], res[r]["replicated_full_depth"]), want,
                                  ("depth 20", "full depth")):
            assert len(got) == len(exp)
            for a, b in zip(got, exp):
                assert_values_equal(a, b, f"rank {r} replicated search, {name}")


@pytest.fixture(scope="module")
def bad_input(tmp_path_factory):
    return _spawn(2, "bad_input", tmp_path_factory.mktemp("dist"))


@pytest.mark.parametrize("case,exc,pattern", [
    ("nan_on_last_rank", "ValueError", "local_features must be finite"),
    ("k_too_large", "ValueError", r"k must be in \[1, G - 1\] = \[1, 39\]"),
    ("k_differs", "ValueError", r"k must be the same on every rank; got \[3.0, 4.0\]"),
    ("d_differs", "ValueError", "the feature dimension D must be the same on every rank"),
    ("bad_metric", "ValueError", "metric must be one of"),
    ("k_not_int", "TypeError", "k must be an int"),
    ("bad_timeout", "ValueError", "timeout must be a positive number of seconds"),
    ("queries_differ", "ValueError", "queries must be the same on every rank"),
    ("depth_too_large", "ValueError", r"depth must be in \[1, 40\]"),
    ("k_above_depth", "ValueError", r"k must be in \[1, 10\]"),
    ("bad_semantics", "ValueError", "semantics must be one of"),
    ("query_dim", "ValueError", "queries must have the index's feature dimension D = 6"),
    ("replicated_differs", "ValueError", "features must be the same on every rank"),
])
def test_bad_input_raises_on_every_rank(bad_input, case, exc, pattern):
    import re

    for r, res in enumerate(bad_input):
        name, msg = res[case]
        assert name == exc and re.search(pattern, msg), f"rank {r}: {name}: {msg}"
    if case == "nan_on_last_rank":  # the other rank names the rank that failed
        assert bad_input[0][case][1].startswith("rank 1 of 2: ")


def test_group_usable_after_bad_input(bad_input):
    """A rejected call leaves every rank in step: the next collective call works and agrees."""
    D0, I0 = bad_input[0]["still_works"]
    D1, I1 = bad_input[1]["still_works"]
    assert_rankings_equal(I0, I1)
    assert_values_equal(D0, D1)


def test_dead_rank_gives_an_error_not_a_hang(tmp_path):
    t0 = time.monotonic()
    res = _spawn(2, "dead_rank", tmp_path, wait_for=[0])
    name, msg = res[0]["error"]
    assert name == "DistributedError" and "rank 0 of 2" in msg and "failed" in msg, msg
    assert res[0]["seconds"] < 25 and time.monotonic() - t0 < JOB_TIMEOUT_S


def test_stuck_rank_times_out(tmp_path):
    res = _spawn(2, "stuck_rank", tmp_path, wait_for=[0])
    name, msg = res[0]["error"]
    assert name == "DistributedError" and "timeout of 3 s" in msg, msg
    assert 2.5 < res[0]["seconds"] < 15


def test_needs_an_initialised_group():
    import icfrr_fast.distributed as ifd

    with pytest.raises(RuntimeError, match="needs an initialised process group"):
        ifd.build_graph(_gallery(10), 3)


def test_import_is_lazy():
    import subprocess
    import sys

    code = "import sys, icfrr_fast; assert 'icfrr_fast.distributed' not in sys.modules; " \
           "d = icfrr_fast.distributed; assert 'icfrr_fast.distributed' in sys.modules and d.build_graph"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
