"""Sorting networks on (key, payload) pairs held in registers, and the exact rank key of a float.

Triton's ``tl.sort`` sorts one tensor; the kernels here need a *stable* order on float64 keys, i.e. a lexicographic
order on (key, tie-breaker) that does not fit in one 64-bit word. These helpers sort pairs (int64 key, integer
payload) ascending by (key, payload) with Batcher's bitonic network (K. E. Batcher, "Sorting networks and their
applications", AFIPS 1968), written over the "hypercube" view of a register tensor: a tensor of 2^n elements is
reshaped to n axes of size 2, and one compare-exchange step pairs the two elements along one axis. The partner of
each element is obtained with a sum over that size-2 axis ((a + b) - a = b, exact in wrap-around integer arithmetic),
which Triton lowers to register moves or warp shuffles; no shared-memory scratch is addressed by hand.

Conventions used by every kernel of this package:
    rank key   ``rank_key(v)``: int64, *smaller is better*, v larger is better; -0.0 and +0.0 share one key; the map is
               exact and invertible (``rank_key_value``), so keys carry float32 or float64 values without loss.
    ties       compare the payload next: callers put the tie-breaker (gallery index, or current position) in the
               payload's high bits, so "ascending (key, payload)" is "best first, ties -> smaller index/position".
    sentinel   ``SENTINEL`` (int64 max) ranks after every real key (it would be a NaN's key; inputs are finite).
"""

import triton
import triton.language as tl

#: rank key of an empty slot: worse than every finite value
SENTINEL = tl.constexpr(0x7FFFFFFFFFFFFFFF)
_MAGNITUDE = tl.constexpr(0x7FFFFFFFFFFFFFFF)  # every bit but the sign


@triton.constexpr_function
def _log2(n):
    r = 0
    while n > 1:
        n >>= 1
        r += 1
    return r


@triton.jit
def rank_key(v):
    """int64 key of a float32/float64 value: increasing key = decreasing value, exact and invertible."""
    v64 = v.to(tl.float64) + 0.0  # -0.0 + 0.0 = +0.0: equal values must get equal keys
    bits = v64.to(tl.int64, bitcast=True)
    ordered = tl.where(bits < 0, bits ^ _MAGNITUDE, bits)  # signed order of the bits = order of the values
    return ~ordered


@triton.jit
def rank_key_value(key):
    """Inverse of ``rank_key``: the float64 value of a key (the sentinel decodes to a NaN; callers mask it)."""
    ordered = ~key
    bits = tl.where(ordered < 0, ordered ^ _MAGNITUDE, ordered)
    return bits.to(tl.float64, bitcast=True)


@triton.jit
def _upper_half(N_DIMS: tl.constexpr, AXIS: tl.constexpr):
    # 0 for the first, 1 for the second element along hypercube axis AXIS (counted from the innermost), broadcastable
    side = tl.arange(0, 2)
    return tl.reshape(side, [1] * (N_DIMS - AXIS - 1) + [2] + [1] * AXIS)


@triton.jit
def _exchange(k, p, descending, AXIS: tl.constexpr, N_DIMS: tl.constexpr):
    """One compare-exchange step between the two elements along hypercube axis AXIS (innermost = 0).

    ``descending`` (0/1, constant or broadcastable tensor) says which way each compared pair is ordered.
    """
    red: tl.constexpr = N_DIMS - 1 - AXIS
    # the partner: (x + y) - x = y, exact in wrap-around integer arithmetic (a sum over a size-2 axis lowers to a
    # register move or a shuffle on a GPU, and is vectorised in the interpreter, unlike an xor reduction)
    pk = tl.sum(k, red, keep_dims=True) - k
    pp = tl.sum(p, red, keep_dims=True) - p
    after_partner = (k > pk) | ((k == pk) & (p > pp))  # lexicographic (key, payload)
    # the first element of an ascending pair keeps the smaller pair, the second the larger; descending is the mirror
    # (_upper_half inlined: helper calls are what the interpreter spends its time on)
    upper = tl.reshape(tl.arange(0, 2), [1] * (N_DIMS - AXIS - 1) + [2] + [1] * AXIS)
    take = after_partner != (descending ^ upper)
    return tl.where(take, pk, k), tl.where(take, pp, p)


@triton.jit
def sort_pairs(k, p, DESCENDING: tl.constexpr):
    """Sort (k, p) along the last axis (a power of two) by (k, p), ascending unless DESCENDING. Any leading axes
    are independent rows. Bitonic sort: log2(n) (log2(n) + 1) / 2 compare-exchange steps."""
    LOG_N: tl.constexpr = _log2(k.shape[len(k.shape) - 1])
    N_DIMS: tl.constexpr = _log2(k.numel)
    hk = tl.reshape(k, [2] * N_DIMS)
    hp = tl.reshape(p, [2] * N_DIMS)
    for stage in tl.static_range(1, LOG_N + 1):
        if stage < LOG_N:
            # runs of 2^stage elements alternate ascending/descending, so pairs of runs form bitonic sequences
            direction = _upper_half(N_DIMS, stage)
        else:
            direction = DESCENDING
        for i in tl.static_range(stage):
            hk, hp = _exchange(hk, hp, direction, stage - 1 - i, N_DIMS)
    return tl.reshape(hk, k.shape), tl.reshape(hp, p.shape)


@triton.jit
def merge_pairs(k, p, DESCENDING: tl.constexpr):
    """Sort (k, p) along the last axis when every row is already bitonic (rises then falls, or the reverse):
    log2(n) compare-exchange steps instead of a full sort."""
    LOG_N: tl.constexpr = _log2(k.shape[len(k.shape) - 1])
    N_DIMS: tl.constexpr = _log2(k.numel)
    hk = tl.reshape(k, [2] * N_DIMS)
    hp = tl.reshape(p, [2] * N_DIMS)
    for i in tl.static_range(LOG_N):
        hk, hp = _exchange(hk, hp, DESCENDING, LOG_N - 1 - i, N_DIMS)
    return tl.reshape(hk, k.shape), tl.reshape(hp, p.shape)


@triton.jit
def min_pairs(ak, ap, bk, bp):
    """Elementwise smaller of two pairs (lexicographic)."""
    a_first = (ak < bk) | ((ak == bk) & (ap < bp))
    return tl.where(a_first, ak, bk), tl.where(a_first, ap, bp)
