"""Sharded and replicated ICFRR over ``torch.distributed``: galleries across processes and machines.

    # torchrun --nproc_per_node 2 app.py   (or --nnodes 2 --node_rank R --rdzv_endpoint HOST:PORT, see README)
    import icfrr_fast.distributed as ifd
    ifd.init(timeout=120)                                  # gloo on CPU, NCCL when CUDA is available
    index = ifd.ShardedICFRRIndex(my_rows, k_g=256)        # rank r: rows o_r .. o_r + n_r - 1 of the gallery
    D, I = index.search(queries, k=100, depth=1000)        # the same (D, I) on every rank, global gallery ids

Layout: the gallery is sharded by rows. Rank r of the group holds a contiguous block of ``n_r`` rows, blocks in
rank order (global id of local row i = ``o_r + i``, ``o_r = n_0 + ... + n_{r-1}``); sizes may differ and may be 0.
No rank ever holds all features or the whole graph.

* :func:`build_graph` -- the exact k-NN graph of the local rows with global ids. The feature shards travel once
  around the ring (rank r sends the shard it holds to r + 1 while it computes on it); every rank computes its own
  rows against every shard with the fused ``knn_topk`` and merges the per-shard top-k in (score, smaller global id)
  order. Every pair's score is computed by the same kernel arithmetic as in one process (one FMA chain over D,
  symmetric formulas), and the top-k of a row does not depend on how its candidates are split, so the graph is
  bit-identical to ``GalleryGraph.from_features`` on the concatenated features. Each ordered pair is computed once
  (each unordered pair twice): computing an unordered pair once would need the pair's dense score block
  (``knn_scores``) reduced by rows and by columns, and the kernel's own symmetric build only pays off at D >= 384
  (docs/knn.md); the ring keeps the fused kernel's bounded memory and its per-rank work is G n_r D, 1/W of one
  process's.
* :class:`ShardedICFRRIndex` -- a gallery too big for one rank. Per query batch: every rank takes its shard's
  top-``depth`` (fused ``knn_topk``); the lists are all-gathered and merged to the global top-``depth`` (ties ->
  smaller global id); the batch's queries are split over the ranks; each rank receives from their owners only the
  graph rows of its queries' candidates (one ``all_to_all``), numbers the union U of its candidates 0 .. |U| - 1
  (in global id order, so ties still go to the smaller id), re-ranks with ``icfrr_candidates`` (neighbours
  outside U -> -1, alpha over the whole gallery's G) and the results are all-gathered. Memory per rank is bounded
  by the batch (plus a cached (G,) int32 id table of at most :data:`REMAP_TABLE_BYTES` for the remap; beyond that
  size a binary search replaces it), never by Q. Bit-identical to ``ICFRRIndex(all_features).search(..., depth=depth)``.
* :class:`ReplicatedICFRRIndex` -- the index fits on each rank: every rank holds all features and the graph (built
  split by rows, then all-gathered), the queries are split over the ranks (throughput), results all-gathered.

Failures: every collective is issued asynchronously and waited on with a timeout (``timeout`` argument, default
:data:`DEFAULT_TIMEOUT_S`); a peer that died, or did not reach the same call in time, gives every surviving rank a
:class:`DistributedError` naming the step, never a hang (the group is unusable afterwards: destroy it, restart the
job). Inputs are checked on every rank and the verdicts
exchanged first, so a bad argument on one rank (or arguments that differ between ranks) raises the same
``ValueError``/``TypeError`` on every rank instead of leaving the others blocked in a collective.

This module imports ``torch.distributed``; ``import icfrr_fast`` imports it only when ``icfrr_fast.distributed``
is first used.
"""

from __future__ import annotations

import datetime
import math
import os
from typing import List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from . import ops
from . import _checks as checks
from .graph import GalleryGraph
from .index import INDEX_METRICS, ICFRRIndex
from .knn import as_tensor, default_batch_rows, default_largest, knn_into
from .params import ICFRRParams

__all__ = ["init", "build_graph", "ShardedICFRRIndex", "ReplicatedICFRRIndex", "DistributedError",
           "DEFAULT_TIMEOUT_S"]

#: seconds any one collective may take before every waiting rank raises DistributedError
DEFAULT_TIMEOUT_S = 300.0
#: bytes of one search batch's transient buffers per rank (merge lists and candidate graph rows)
SEARCH_BATCH_BYTES = 256 << 20
#: the largest (G,) int32 id table a ShardedICFRRIndex keeps for remapping candidates (G <= 16.7 M at 64 MB)
REMAP_TABLE_BYTES = 64 << 20
_MSG_BYTES = 480  # error message carried by the argument check (truncated)
_ERR_TYPES = (None, ValueError, TypeError)
_ID_PAD = 2**31 - 1  # id of a padding entry in the candidate merge (its value is the worst)


class DistributedError(RuntimeError):
    """A collective failed or timed out: a peer died, hangs, or did not call the same function."""


def init(backend: Optional[str] = None, *, timeout: float = DEFAULT_TIMEOUT_S, **kwargs) -> None:
    """``torch.distributed.init_process_group`` from torchrun's environment, with a timeout.

    Args:
        backend: "gloo" (CPU) or "nccl" (GPU); default "nccl" when CUDA is available, else "gloo".
        timeout: seconds for the rendezvous and every collective of the default group.
        **kwargs: passed on (``init_method``, ``rank``, ``world_size``, ``device_id``, ...).
    """
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl" and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend, timeout=_timedelta(timeout), **kwargs)


def _timedelta(timeout) -> datetime.timedelta:
    if isinstance(timeout, datetime.timedelta):
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0 \
            or not math.isfinite(timeout):
        raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}")
    return datetime.timedelta(seconds=float(timeout))


# ------------------------------------------------------------------------------------------------------------------
# Collectives with timeouts and byte counts
# ------------------------------------------------------------------------------------------------------------------
class _Comm:
    """The group, this rank, a timeout for every collective, and the payload bytes this rank has sent."""

    def __init__(self, group, timeout):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("icfrr_fast.distributed needs an initialised process group: call "
                               "icfrr_fast.distributed.init() (or torch.distributed.init_process_group) first")
        self.group = group
        self.timeout = _timedelta(DEFAULT_TIMEOUT_S if timeout is None else timeout)
        self.rank = dist.get_rank(group)
        if self.rank < 0:
            raise ValueError("group: this process is not a member of the process group it was given")
        self.world = dist.get_world_size(group)
        nccl = dist.get_backend(group) == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        self.bytes_sent = 0

    def _wait(self, what: str, start):
        try:
            work = start()
            if work is not None:
                work.wait(self.timeout)
        except DistributedError:
            raise
        except RuntimeError as e:  # DistBackendError, gloo's "Connection reset by peer", "Operation timed out!"
            raise DistributedError(
                f"icfrr_fast.distributed: {what} failed on rank {self.rank} of {self.world} (a peer died, hangs, or "
                f"did not make the same call within the timeout of {self.timeout.total_seconds():g} s): {e}") from e

    def all_gather(self, t: Tensor, what: str) -> List[Tensor]:
        """Every rank's ``t`` (same shape and dtype on every rank), in rank order, on ``t``'s device."""
        src = t.to(self.device).contiguous()
        out = [torch.empty_like(src) for _ in range(self.world)]
        self.bytes_sent += src.numel() * src.element_size() * (self.world - 1)
        self._wait(what, lambda: dist.all_gather(out, src, group=self.group, async_op=True))
        return [o.to(t.device) for o in out]

    def all_gather_rows(self, t: Tensor, counts: Sequence[int], what: str) -> Tensor:
        """Every rank's rows concatenated in rank order, when rank j holds ``counts[j]`` rows (padded to the
        largest count for the collective, then cut)."""
        pad = t.new_zeros((max(counts),) + tuple(t.shape[1:]))
        pad[: t.shape[0]] = t
        return torch.cat([g[:c] for g, c in zip(self.all_gather(pad, what), counts)])

    def all_to_all(self, send: Tensor, send_counts: Sequence[int], recv_counts: Sequence[int], what: str) -> Tensor:
        """Rows ``send[sum(send_counts[:j]) ...]`` go to rank j; returns the received rows in rank order."""
        src = send.to(self.device).contiguous()
        out = torch.empty((sum(recv_counts),) + tuple(send.shape[1:]), dtype=send.dtype, device=self.device)
        row_bytes = src.element_size() * (math.prod(send.shape[1:]) if send.dim() > 1 else 1)
        self.bytes_sent += (sum(send_counts) - send_counts[self.rank]) * row_bytes
        self._wait(what, lambda: dist.all_to_all_single(out, src, list(recv_counts), list(send_counts),
                                                        group=self.group, async_op=True))
        return out.to(send.device)

    def ring_exchange(self, send: Optional[Tensor], recv_shape, dtype, what: str):
        """Send ``send`` to rank + 1 and receive a ``recv_shape`` tensor from rank - 1 (None: nothing that way),
        both posted at once (``batch_isend_irecv``: NCCL needs the pair grouped, or both ranks wait on their
        receive first). Returns ``finish``: ``finish()`` waits for both transfers and returns the received tensor."""
        nxt, prv = ((dist.get_global_rank(self.group, j) if self.group is not None else j)
                    for j in ((self.rank + 1) % self.world, (self.rank - 1) % self.world))
        p2p, recv = [], None
        if recv_shape is not None:
            recv = torch.empty(recv_shape, dtype=dtype, device=self.device)
            p2p.append(dist.P2POp(dist.irecv, recv, prv, group=self.group))
        if send is not None:
            src = send.to(self.device).contiguous()
            self.bytes_sent += src.numel() * src.element_size()
            p2p.append(dist.P2POp(dist.isend, src, nxt, group=self.group))
        works = []
        if p2p:
            self._wait(what, lambda: works.extend(dist.batch_isend_irecv(p2p)))

        def finish() -> Optional[Tensor]:
            for w in works:
                self._wait(what, lambda: w)
            return recv

        return finish


def _agree(comm: _Comm, error: Optional[Exception], fields: Sequence[float], what: str) -> Tensor:
    """Exchange every rank's local verdict and a few numbers; raise on every rank if any rank failed.

    Returns: (world, len(fields)) float64, row r = rank r's fields.
    """
    code = 0 if error is None else (2 if isinstance(error, TypeError) else 1)
    msg = b"" if error is None else str(error).encode()[:_MSG_BYTES]
    row = torch.zeros(2 + _MSG_BYTES // 8 + len(fields), dtype=torch.float64)
    row[0], row[1] = code, len(msg)
    buf = torch.zeros(_MSG_BYTES, dtype=torch.uint8)
    buf[: len(msg)] = torch.frombuffer(bytearray(msg), dtype=torch.uint8) if msg else buf[:0]
    row[2:2 + _MSG_BYTES // 8] = buf.view(torch.float64)
    row[2 + _MSG_BYTES // 8:] = torch.tensor([float(f) for f in fields], dtype=torch.float64)
    rows = torch.stack(comm.all_gather(row, what))
    for r in range(comm.world):
        c = int(rows[r, 0])
        if c:
            if r == comm.rank:
                raise error
            n = int(rows[r, 1])
            text = bytes(rows[r, 2:2 + _MSG_BYTES // 8].contiguous().view(torch.uint8)[:n].tolist()).decode(
                errors="replace")
            raise _ERR_TYPES[c](f"rank {r} of {comm.world}: {text}")
    return rows[:, 2 + _MSG_BYTES // 8:]


def _check_same(fields: Tensor, col: int, name: str) -> None:
    vals = fields[:, col]
    if bool((vals != vals[0]).any()):
        raise ValueError(f"{name} must be the same on every rank; got {[v for v in vals.tolist()]} (by rank)")


def _prepare_local(features, name: str) -> Tensor:
    """The local shard as a float32/float64 (n, D) tensor; checks shape, dtype and finiteness (0 rows allowed)."""
    t = as_tensor(features, name)
    checks.check_float_matrix(name, t)
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)  # exact; the kernels compute in float32
    checks.check_finite(name, t)
    if t.shape[1] < 1:
        raise ValueError(f"{name} must have at least 1 feature column; got shape {tuple(t.shape)}")
    return t.contiguous()


_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}


# ------------------------------------------------------------------------------------------------------------------
# Merging top-k lists in (score, smaller id) order
# ------------------------------------------------------------------------------------------------------------------
def _merge_topk(values: Tensor, ids: Tensor, k: int, largest: bool) -> Tuple[Tensor, Tensor]:
    """The first k entries of each row in (value, smaller id) order: best value first, ties -> smaller id.

    values (R, M) float, ids (R, M) int64, k <= M. Precondition: within a row, entries of equal value already appear
    in increasing id order (true for a concatenation of (value, id)-sorted lists whose id ranges increase from list
    to list), so one stable sort by value gives exactly the kernels' lexicographic order.
    """
    order = torch.sort(values, dim=1, descending=largest, stable=True).indices[:, :k]
    return torch.gather(values, 1, order), torch.gather(ids, 1, order)


def _sqrt_rn(t: Tensor) -> Tensor:
    """Correctly rounded square root, like the kernels' ``std::sqrt``. (torch's vectorised CPU sqrt is not: on an
    AVX-512 machine it differs from the correctly rounded float32 result in about 1 of 6 values.)"""
    if t.device.type == "cpu":
        import numpy as np

        return torch.from_numpy(np.sqrt(t.numpy()))
    return t.sqrt()


def _shard_layout(comm: _Comm, n_local: int, fields: Sequence[float], error: Optional[Exception], what: str):
    """Agree on the check verdict; returns (sizes, offsets, fields) with sizes[r] = rows of rank r."""
    f = _agree(comm, error, [n_local] + list(fields), what)
    sizes = [int(v) for v in f[:, 0].tolist()]
    offsets = [0]
    for s in sizes[:-1]:
        offsets.append(offsets[-1] + s)
    return sizes, offsets, f[:, 1:]


# ------------------------------------------------------------------------------------------------------------------
# build_graph
# ------------------------------------------------------------------------------------------------------------------
def build_graph(local_features, k: int, *, metric: str = "l2", precision: str = "fp32", group=None,
                timeout: Optional[float] = None, batch_size: Optional[int] = None) -> GalleryGraph:
    """Exact k-NN graph of the local rows of a row-sharded gallery, with global ids (collective: every rank calls).

    Row i of the result = the k nearest *other* items of the whole gallery to global item ``o_r + i`` (self excluded
    by index, ties -> smaller global id): exactly the rows ``o_r .. o_r + n_r - 1`` of
    ``GalleryGraph.from_features(torch.cat(all shards), k, metric=metric, precision=precision)``, bit for bit.

    Args:
        local_features: (n_r, D) float16/bfloat16/float32/float64 rows of this rank (n_r >= 0; D, dtype family the
            same on every rank: float64 everywhere or float32-exact types everywhere).
        k: neighbours per item, in [1, G - 1] with G = sum of the n_r.
        metric: "l2", "l2sq", "ip" or "cosine" (see ``icfrr_fast.knn``).
        precision: "fp32" or "bf16".
        group: the process group (default: the world).
        timeout: seconds each collective may take (default :data:`DEFAULT_TIMEOUT_S`).
        batch_size: local rows per fused call (default: bounded output memory).

    Returns:
        GalleryGraph: ``neighbors`` (n_r, k) int32 global ids, ``values`` (n_r, k) stored as ``from_features``
        stores them (distances for "l2", squared for "l2sq", similarities otherwise). Its ``num_items`` is n_r: the
        rows of this rank only.

    Raises:
        ValueError / TypeError: bad arguments on any rank (raised on every rank), arguments that differ between
            ranks.
        DistributedError: a collective failed or timed out.
    """
    comm = _Comm(group, timeout)
    g, sizes, offsets = _graph_inputs(comm, local_features, k, metric, precision, batch_size)
    return _ring_knn_graph(comm, g, sizes, offsets, k, metric, precision, batch_size)


def _graph_inputs(comm: _Comm, local_features, k, metric, precision, batch_size, metrics=ops.KNN_METRICS,
                  k_name: str = "k", what: str = "build_graph"):
    """Check build_graph's arguments on every rank and agree; returns (features, sizes, offsets)."""
    err, g, fields = None, None, [-1] * 5
    try:
        g = _prepare_local(local_features, "local_features")
        checks.check_int(k_name, k, 1)
        if not isinstance(metric, str) or metric not in metrics:
            raise ValueError(f"metric must be one of {metrics}; got {metric!r}")
        if not isinstance(precision, str) or precision not in ops.KNN_PRECISIONS:
            raise ValueError(f"precision must be one of {ops.KNN_PRECISIONS}; got {precision!r}")
        if batch_size is not None:
            checks.check_int("batch_size", batch_size, 1)
        fields = [g.shape[1], _DTYPE_CODES[g.dtype], k, metrics.index(metric), ops.KNN_PRECISIONS.index(precision)]
    except (ValueError, TypeError) as e:
        err = e
    sizes, offsets, f = _shard_layout(comm, 0 if g is None else g.shape[0], fields, err, f"{what} argument check")
    for col, name in enumerate(["the feature dimension D", "the features' dtype (float64 vs float32)", k_name,
                                "metric", "precision"]):
        _check_same(f, col, name)
    G = sum(sizes)
    if not 2 <= G < 2**31 - 1:
        raise ValueError(f"the gallery must hold between 2 and 2^31 - 2 items over all ranks (int32 graph ids); "
                         f"got G = {G}")
    checks.check_k_g(k, G, name=k_name, hint=" (G = the gallery size over all ranks)")
    return g, sizes, offsets


def _ring_knn_graph(comm: _Comm, g: Tensor, sizes, offsets, k: int, metric: str, precision: str,
                    batch_size: Optional[int]) -> GalleryGraph:
    W, r = comm.world, comm.rank
    n, D = g.shape
    sel = "l2sq" if metric == "l2" else metric  # select on d^2 like the kernel; the square root comes last
    largest = default_largest(metric)
    out_dtype = ops.knn_out_dtype(g, precision)
    # Shards arrive as r, r - 1, ..., 0, W - 1, ..., r + 1: two runs in which each new shard's ids are below every
    # id merged so far, so [new, merged] meets _merge_topk's precondition; the runs are merged last, [low, high].
    runs: dict = {}
    bs = default_batch_rows(sum(sizes), k, D) if batch_size is None else batch_size
    held, owner = g, r
    for step in range(W):
        nxt = (r - step - 1) % W  # the shard that arrives during this step
        finish = None
        if step < W - 1:
            send = held if sizes[owner] > 0 else None
            shape = (sizes[nxt], D) if sizes[nxt] > 0 else None
            finish = comm.ring_exchange(send, shape, g.dtype, f"build_graph ring step {step + 1} of {W - 1}")
        m = sizes[owner]
        own = owner == r
        kk = min(k, m - 1 if own else m)
        if n > 0 and kk > 0:
            held = held.to(g.device)
            low = owner <= r
            prev = runs.get(low)
            width = kk if prev is None else min(k, kk + prev[0].shape[1])
            run_v = torch.empty((n, width), dtype=out_dtype, device=g.device)
            run_i = torch.empty((n, width), dtype=torch.int64, device=g.device)
            if own and batch_size is None and ops.knn_graph_in_one_call(g, kk):
                parts = [(0, n)]  # one call, x is y: the kernel's symmetric build (same bits)
            else:
                parts = [(b0, min(n, b0 + bs)) for b0 in range(0, n, bs)]
            for b0, b1 in parts:
                x = held if (own and (b0, b1) == (0, n)) else g[b0:b1]
                v, i = ops.knn_topk(x, held, k=kk, metric=sel, largest=largest, exclude_self=own,
                                    row_offset=b0 if own else 0, precision=precision)
                i += offsets[owner]
                if prev is not None:
                    v, i = _merge_topk(torch.cat([v, prev[0][b0:b1]], 1), torch.cat([i, prev[1][b0:b1]], 1),
                                       width, largest)
                run_v[b0:b1], run_i[b0:b1] = v, i
            runs[low] = (run_v, run_i)
        if finish is not None:
            held, owner = finish(), nxt
            if held is None:
                held = g.new_empty((0, D))
    parts = [runs[low] for low in (True, False) if low in runs]  # [low, high]: ids increase from one to the next
    if len(parts) == 2:
        best_v, best_i = _merge_topk(torch.cat([parts[0][0], parts[1][0]], 1),
                                     torch.cat([parts[0][1], parts[1][1]], 1), k, largest)
    else:
        best_v, best_i = (parts[0][0], parts[0][1]) if parts else (g.new_empty((0, k), dtype=out_dtype),
                                                                    torch.empty((0, k), dtype=torch.int64))
    if metric == "l2":
        best_v = _sqrt_rn(best_v)
    return GalleryGraph._trusted(best_i.to(torch.int32), best_v, largest)  # values stored as from_features does


def _even_split(n: int, world: int) -> List[int]:
    """Row counts of an even split of n rows over world ranks (the first n % world ranks get one more)."""
    return [n // world + (1 if j < n % world else 0) for j in range(world)]


def _query_fields(comm: _Comm, q: Tensor) -> List[float]:
    """Q, D and a fingerprint of the queries (float64 sum and sum of squares), to catch ranks that pass different
    queries (compared with a relative tolerance: reduction order may differ between machines)."""
    q64 = q.to(torch.float64)
    return [q.shape[0], q.shape[1], float(q64.sum()), float((q64 * q64).sum())]


def _check_same_data(f: Tensor, col: int, name: str, what: str = "Q") -> None:
    """Columns col .. col + 3 hold _query_fields of a tensor called ``name``."""
    _check_same(f, col, f"the number of {name} {what}")
    _check_same(f, col + 1, f"the {name}' dimension D")
    for c in (col + 2, col + 3):
        v = f[:, c]
        if not bool(torch.isclose(v, v[0].expand_as(v), rtol=1e-9, atol=1e-9).all()):
            raise ValueError(f"{name} must be the same on every rank (their sums differ between ranks: "
                             f"{v.tolist()}); pass all of them to every rank")


# ------------------------------------------------------------------------------------------------------------------
# ShardedICFRRIndex
# ------------------------------------------------------------------------------------------------------------------
class ShardedICFRRIndex:
    """A row-sharded gallery (its features and graph rows spread over the ranks); ``search`` returns ICFRR
    re-ranked results equal, bit for bit, to ``ICFRRIndex(all_features).search(..., depth=depth)``.

    Collective: every rank of the group constructs it with its own rows and calls ``search`` with the same queries
    and arguments.

    Args:
        local_features: (n_r, D) float16/bfloat16/float32/float64 gallery rows of this rank (global ids
            o_r .. o_r + n_r - 1, rank order; n_r >= 0, G = sum n_r >= 2).
        k_g: neighbours per gallery item kept in the graph, in [1, G - 1].
        metric: "l2" (scores = -Euclidean distance), "ip" or "cosine" (as ``ICFRRIndex``).
        precision: "fp32" or "bf16" (k-NN arithmetic).
        group: process group (default: the world).
        timeout: seconds each collective may take (default :data:`DEFAULT_TIMEOUT_S`).

    Attributes:
        features: (n_r, D) this rank's rows; graph: :class:`GalleryGraph` (n_r, k_g) of them with global ids
            (squared distances as values for "l2", like ``ICFRRIndex``); sizes, offsets: every rank's n_r and o_r;
            ntotal: G; bytes_sent: payload bytes this rank has sent in collectives so far.
    """

    _prepare = ICFRRIndex._prepare  # dtype/device/D checks of the queries, exactly as the single-process index

    def __init__(self, local_features, *, k_g: int = 256, metric: str = "l2", precision: str = "fp32", group=None,
                 timeout: Optional[float] = None):
        self._comm = _Comm(group, timeout)
        graph_metric = "l2sq" if metric == "l2" else metric
        g, self.sizes, self.offsets = _graph_inputs(self._comm, local_features, k_g, metric, precision, None,
                                                    metrics=INDEX_METRICS, k_name="k_g", what="ShardedICFRRIndex")
        self.metric, self.precision, self.features = metric, precision, g
        self.graph = _ring_knn_graph(self._comm, g, self.sizes, self.offsets, k_g, graph_metric, precision, None)

    @property
    def ntotal(self) -> int:
        """G, the number of gallery items over all ranks."""
        return sum(self.sizes)

    @property
    def d(self) -> int:
        return self.features.shape[1]

    @property
    def k_g(self) -> int:
        return self.graph.k

    @property
    def largest(self) -> bool:
        return default_largest(self.metric)

    @property
    def bytes_sent(self) -> int:
        return self._comm.bytes_sent

    def __repr__(self) -> str:
        return (f"ShardedICFRRIndex(G={self.ntotal}, rank {self._comm.rank}: rows {self.offsets[self._comm.rank]}.."
                f"{self.offsets[self._comm.rank] + self.features.shape[0] - 1}, D={self.d}, k_g={self.k_g}, "
                f"metric={self.metric!r})")

    def search(self, queries, k: int, *, k_q: int = 250, beta: float = 0.5, iters: int = 5, depth: int = 1000,
               semantics: str = "reference", return_history: bool = False, early_stop: bool = False,
               k_g: Optional[int] = None, batch_size: Optional[int] = None):
        """ICFRR-re-ranked top-k gallery items (global ids) of every query; the same result on every rank.

        Args:
            queries: (Q, D) features, the same on every rank (numpy arrays accepted).
            k: results per query, in [1, depth].
            k_q, beta, iters, semantics, return_history, early_stop, k_g: as ``ICFRRIndex.search``.
            depth: L, the candidates per query (the global top-L of the first stage), in [1, G].
            batch_size: queries per batch (default: transient buffers of about 256 MB per rank).

        Returns:
            ``(D, I)`` or ``(D, I, H)``: D (Q, k) float32 re-ranked keys (distances ascending for "l2"), I (Q, k)
            int64 global gallery ids, H (Q, T + 1, k) int64 -- equal to ``ICFRRIndex.search``'s.

        Raises:
            ValueError / TypeError: bad arguments on any rank, or queries/arguments that differ between ranks.
            DistributedError: a collective failed or timed out.
        """
        comm, G = self._comm, self.ntotal
        err, fields = None, [-1.0] * 14  # _query_fields (4) + 10 arguments, the same count on every rank
        try:
            q = self._prepare(queries, "queries", self.d)
            checks.check_int("depth", depth, 1, G, " (the gallery size)")
            checks.check_int("k", k, 1, depth, " (the candidate depth)")
            kg = self.k_g if k_g is None else k_g
            if isinstance(kg, bool) or not isinstance(kg, int) or not 1 <= kg <= self.k_g:
                raise ValueError(f"k_g must be an int in [1, {self.k_g}] (the graph's neighbours per item); got {kg!r}")
            p = ICFRRParams(k_g=kg, k_q=k_q, beta=beta, iters=iters, semantics=semantics, depth=depth,
                            early_stop=early_stop)
            args = dict(p.op_kwargs(), k=k, return_history=return_history)
            # every ICFRR argument check of the single-process op, on meta tensors (no memory)
            ops.validate_icfrr_rerank(torch.empty((1, G), device="meta"),
                                      torch.empty((G, kg), dtype=torch.int32, device="meta"), largest=self.largest,
                                      depth=depth, **args)
            if batch_size is not None:
                checks.check_int("batch_size", batch_size, 1)
            fields = _query_fields(comm, q) + [depth, k, k_q, p.beta, iters, ops.SEMANTICS.index(semantics),
                                               return_history, early_stop, kg, -1 if batch_size is None
                                               else batch_size]
        except (ValueError, TypeError) as e:
            err = e
        f = _agree(comm, err, fields, "search argument check")
        _check_same_data(f, 0, "queries")
        for col, name in enumerate(["depth", "k", "k_q", "beta", "iters", "semantics", "return_history",
                                    "early_stop", "k_g", "batch_size"], start=4):
            _check_same(f, col, name)
        Q, W = q.shape[0], comm.world
        if batch_size is None:  # merge lists (W L ids + values) and candidate graph rows (L k_g int32) per query
            per_query = depth * (W * 16 + 4 * kg + 32)
            batch_size = max(1, SEARCH_BATCH_BYTES // per_query)
        dev = self.features.device
        D_out = torch.empty((Q, k), dtype=torch.float32, device=dev)
        I_out = torch.empty((Q, k), dtype=torch.int64, device=dev)
        H_out = torch.empty((Q, iters + 1, k), dtype=torch.int64, device=dev) if return_history else None
        for q0 in range(0, Q, batch_size):
            q1 = min(Q, q0 + batch_size)
            v, i, h = self._search_batch(q[q0:q1], depth, kg, args)
            D_out[q0:q1], I_out[q0:q1] = v, i
            if H_out is not None:
                H_out[q0:q1] = h
        return (D_out, I_out, H_out) if return_history else (D_out, I_out)

    def _candidates(self, qb: Tensor, L: int) -> Tuple[Tensor, Tensor]:
        """The global top-L of every query of the batch: (b, L) scores (the metric's values) and int64 global ids,
        best first, ties -> smaller id, identical on every rank."""
        comm, r = self._comm, self._comm.rank
        largest = self.largest
        sel = "l2sq" if self.metric == "l2" else self.metric  # merge on d^2, the kernel's selection key
        n = self.features.shape[0]
        out_dtype = ops.knn_out_dtype(qb, self.precision)
        v = torch.full((qb.shape[0], L), -math.inf if largest else math.inf, dtype=out_dtype, device=qb.device)
        # ids travel as int32 (G < 2^31 - 1, checked by the ops); padding (worst value) sorts after every candidate
        i = torch.full((qb.shape[0], L), _ID_PAD, dtype=torch.int32, device=qb.device)
        Lr = min(L, n)
        if Lr > 0 and qb.shape[0] > 0:
            lv, li = ops.knn_topk(qb, self.features, k=Lr, metric=sel, largest=largest, exclude_self=False,
                                  row_offset=0, precision=self.precision)
            v[:, :Lr], i[:, :Lr] = lv, li + self.offsets[r]
        gv = comm.all_gather(v, "search: all-gather of the shards' top-depth values")
        gi = comm.all_gather(i, "search: all-gather of the shards' top-depth ids")
        cv, ci = _merge_topk(torch.cat(gv, 1), torch.cat(gi, 1).to(torch.int64), L, largest)
        return (_sqrt_rn(cv) if self.metric == "l2" else cv), ci

    def _search_batch(self, qb: Tensor, L: int, kg: int, args: dict):
        """``args``: the keyword arguments of ``icfrr_candidates`` but the graph's (ICFRRParams.op_kwargs, k,
        return_history)."""
        comm, W, r = self._comm, self._comm.world, self._comm.rank
        return_history = args["return_history"]
        b = qb.shape[0]
        cv, ci = self._candidates(qb, L)
        # the batch's queries split over the ranks; U_j = the sorted candidate ids of rank j's queries
        counts = _even_split(b, W)
        starts = [sum(counts[:j]) for j in range(W)]
        unions = [torch.unique(ci[s:s + c]) for s, c in zip(starts, counts)]  # sorted, int64
        lo, hi = self.offsets[r], self.offsets[r] + self.features.shape[0]
        # as owner: the graph rows of my items in every U_j; as requester: how many rows of U_r each owner sends
        mine = [u[(u >= lo) & (u < hi)] - lo for u in unions]
        send = torch.cat([self.graph.neighbors[m, :kg] for m in mine]) if b else self.graph.neighbors[:0, :kg]
        bounds = torch.tensor(self.offsets[1:] + [self.ntotal], dtype=torch.int64, device=ci.device)
        recv_counts = torch.bincount(torch.searchsorted(bounds, unions[r], right=True), minlength=W).tolist()
        rows = comm.all_to_all(send, [len(m) for m in mine], recv_counts,
                               "search: all-to-all of the candidates' graph rows")
        v, idx, h = self._rerank(cv[starts[r]:starts[r] + counts[r]], ci[starts[r]:starts[r] + counts[r]],
                                 unions[r], rows, args)
        what = "search: all-gather of the re-ranked results"
        v_all = comm.all_gather_rows(v.to(torch.float32), counts, what)
        i_all = comm.all_gather_rows(idx, counts, what)
        h_all = comm.all_gather_rows(h, counts, what) if return_history else None
        return v_all, i_all, h_all

    def _rerank(self, cv: Tensor, ci: Tensor, U: Tensor, rows: Tensor, args: dict):
        """ICFRR of this rank's queries over the compact table of their candidates: U (|U|,) sorted global ids ->
        rows 0 .. |U| - 1 (order-preserving, so ties still go to the smaller global id); neighbour ids outside U
        -> -1 (no vote; their ranks still count); alpha over the whole gallery's G."""
        k, iters, return_history = args["k"], args["iters"], args["return_history"]
        bq = ci.shape[0]
        if bq == 0:
            empty = torch.empty((0, k), dtype=torch.int64, device=ci.device)
            hist = torch.empty((0, iters + 1, k), dtype=torch.int64, device=ci.device) if return_history else None
            return cv.new_empty((0, k)), empty, hist
        nbc, cids = self._compact_ids(U, rows, ci)
        v, idx, h = ops.icfrr_candidates(cv, cids, nbc, gallery_size=self.ntotal, largest=self.largest, **args)
        return v, U[idx], (U[h] if return_history else None)

    def _compact_ids(self, U: Tensor, rows: Tensor, ci: Tensor) -> Tuple[Tensor, Tensor]:
        """Global ids -> rows of the compact table: the neighbour rows (|U|, k_g) int32 (-1 outside U) and the
        candidates (bq, L) int64. Through a cached (G,) int32 table (set for U, read, reset: O(|U| k_g)) when it
        costs at most :data:`REMAP_TABLE_BYTES`; else a binary search per entry (O(|U| k_g log |U|), ~15x slower)."""
        if 4 * self.ntotal <= REMAP_TABLE_BYTES:
            table = getattr(self, "_remap_table", None)
            if table is None or table.device != U.device:
                table = self._remap_table = torch.full((self.ntotal,), -1, dtype=torch.int32, device=U.device)
            table[U] = torch.arange(U.numel(), dtype=torch.int32, device=U.device)
            try:
                return table[rows], table[ci].to(torch.int64)
            finally:
                table[U] = -1
        nb = rows.to(torch.int64)
        pos = torch.searchsorted(U, nb).clamp_(max=U.numel() - 1)
        return torch.where(U[pos] == nb, pos, -1).to(torch.int32), torch.searchsorted(U, ci)


# ------------------------------------------------------------------------------------------------------------------
# ReplicatedICFRRIndex
# ------------------------------------------------------------------------------------------------------------------
class ReplicatedICFRRIndex:
    """The whole index on every rank, queries split over the ranks: throughput when the index fits on one rank.

    Collective: every rank constructs it with the same features and calls ``search`` with the same queries. The
    graph is built split by rows (rank r computes rows of an even split against all features, then the rows are
    all-gathered), bit-identical to ``ICFRRIndex(features)``'s; ``search`` runs ``ICFRRIndex.search`` on rank r's
    share of the queries and all-gathers the results, so every rank returns the full, identical ``(D, I)``. (For
    queries that each rank owns on its own, call ``self.index.search`` directly: no collective.)

    Args:
        features: (G, D) gallery features, the same on every rank (numpy arrays accepted).
        k_g, metric, precision: as ``ICFRRIndex``.
        group, timeout: as :class:`ShardedICFRRIndex`.

    Attributes:
        index: the local :class:`ICFRRIndex` (identical on every rank).
    """

    def __init__(self, features, *, k_g: int = 256, metric: str = "l2", precision: str = "fp32", group=None,
                 timeout: Optional[float] = None):
        self._comm = comm = _Comm(group, timeout)
        err, g, fields = None, None, [-1.0] * 7
        try:
            g = _prepare_local(features, "features")
            checks.check_gallery_size(g.shape[0])
            checks.check_k_g(k_g, g.shape[0])
            if not isinstance(metric, str) or metric not in INDEX_METRICS:
                raise ValueError(f"metric must be one of {INDEX_METRICS}; got {metric!r}")
            if not isinstance(precision, str) or precision not in ops.KNN_PRECISIONS:
                raise ValueError(f"precision must be one of {ops.KNN_PRECISIONS}; got {precision!r}")
            fields = _query_fields(comm, g) + [_DTYPE_CODES[g.dtype], k_g, INDEX_METRICS.index(metric)]
        except (ValueError, TypeError) as e:
            err = e
        f = _agree(comm, err, fields, "ReplicatedICFRRIndex argument check")
        _check_same_data(f, 0, "features", "G")
        for col, name in enumerate(["the features' dtype", "k_g", "metric"], start=4):
            _check_same(f, col, name)
        G = g.shape[0]
        graph_metric = "l2sq" if metric == "l2" else metric
        largest = default_largest(graph_metric)
        counts = _even_split(G, comm.world)
        s = sum(counts[:comm.rank])
        nbr = torch.empty((counts[comm.rank], k_g), dtype=torch.int32, device=g.device)
        val = torch.empty((counts[comm.rank], k_g), dtype=ops.knn_out_dtype(g, precision), device=g.device)
        knn_into(g[s:s + counts[comm.rank]], g, k=k_g, metric=graph_metric, largest=largest, exclude_self=True,
                 row_offset=s, precision=precision, out_values=val, out_indices=nbr,
                 batch_size=default_batch_rows(G, k_g, g.shape[1]))
        what = "ReplicatedICFRRIndex: all-gather of the graph rows"
        graph = GalleryGraph._trusted(comm.all_gather_rows(nbr, counts, what), comm.all_gather_rows(val, counts, what),
                                      largest)
        index = object.__new__(ICFRRIndex)
        index.metric, index.precision, index.progress, index._graph_metric = metric, precision, False, graph_metric
        index.features, index.graph = g, graph
        self.index = index

    @classmethod
    def from_index(cls, index: ICFRRIndex, *, group=None, timeout: Optional[float] = None) -> "ReplicatedICFRRIndex":
        """Wrap an index every rank already holds (built or loaded there; it must be the same on every rank)."""
        if not isinstance(index, ICFRRIndex):
            raise TypeError(f"index must be an ICFRRIndex; got {type(index).__name__}")
        self = object.__new__(cls)
        self._comm = _Comm(group, timeout)
        self.index = index
        return self

    @property
    def bytes_sent(self) -> int:
        return self._comm.bytes_sent

    def __repr__(self) -> str:
        return f"ReplicatedICFRRIndex({self.index!r}, world={self._comm.world})"

    def search(self, queries, k: int, **kwargs):
        """``ICFRRIndex.search`` over all ranks: rank r re-ranks its share of the queries (an even split), the
        results are all-gathered. Same arguments and results as ``ICFRRIndex.search`` (every rank gets all of them).
        """
        comm = self._comm
        err, fields, res = None, [-1.0] * 4, None
        try:
            q = self.index._prepare(queries, "queries", self.index.d)
            counts = _even_split(q.shape[0], comm.world)
            s = sum(counts[:comm.rank])
            res = self.index.search(q[s:s + counts[comm.rank]], k, **kwargs)
            fields = _query_fields(comm, q)
        except (ValueError, TypeError) as e:
            err = e
        _check_same_data(_agree(comm, err, fields, "search argument check"), 0, "queries")
        what = "search: all-gather of the re-ranked results"
        return tuple(comm.all_gather_rows(t, counts, what) for t in res)
