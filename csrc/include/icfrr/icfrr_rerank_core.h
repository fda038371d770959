// The per-query ICFRR algorithm (DESIGN §2), header-only and host/device: the CPU driver (csrc/cpu/icfrr_rerank.cpp)
// and the CUDA driver (csrc/cuda/) call the same `rerank_query`, so the CPU tests exercise the GPU build's logic.
// Oracle: icfrr_fast.reference.icfrr_rerank   Test: tests/test_icfrr_rerank.py   Bench: benchmarks/bench_icfrr_rerank.py
//
// Per query, with scratch that the driver allocates once per worker (acc = 0, pos = -1, boosted = 0 between queries):
//   1. initial order: stable radix sort of the G scores (descending, ties -> smaller id), keep the top L;
//   2. per iteration: scatter packed integer votes of the K_q' voters' K_g neighbours into acc[G]; key of every
//      voted item (vote.h); sort the voted items by key (stable, in position order); merge them into the unvoted
//      items, which are already in order. Voted items only move up (delta > 0, beta >= 0), so only positions
//      [0, max voted position] change: an iteration costs O(K_q' K_g + B + region), never a sort of L items;
//   3. semantics "reference" reaches an exact fixed point when an iteration leaves the order unchanged (keys then
//      depend only on the order), so the remaining iterations are skipped without changing any result.
// Invariants: integer votes, float64 keys, ties keep the current order; results independent of threads/devices.
#pragma once
#include <cstdint>

#include "icfrr_rerank.h"
#include "order.h"
#include "radix_sort.h"
#include "vote.h"

namespace icfrr {

/// Scratch of one worker (one query at a time). Sizes: G = gallery, L = depth.
template <typename Acc>
struct RerankScratch {
  Acc* acc;                  ///< (G) packed votes; all zero between iterations
  int32_t* pos;              ///< (G) position of each item in the current order, -1 outside it; -1 between queries
  int32_t* order;            ///< (L) current order (gallery ids)
  int32_t* new_order;        ///< (L) merge output
  double* slot;              ///< (L) v_p: initial scores sorted descending (fixed)
  double* cur;               ///< (L) key of the item at position p (semantics "paper": its accumulated score)
  double* new_cur;           ///< (L)
  double* bkey;              ///< (L) key of the voted item at position p
  uint8_t* boosted;          ///< (L) 1 when the item at position p was voted this iteration; zero between iterations
  int32_t* touched;          ///< (G + 1) voted ids (sparse case)
  Acc* touched_votes;        ///< (G + 1) their packed votes
  int32_t* blist;            ///< (L) voted positions, then sorted by key
  uint32_t* sort_keys;       ///< (G) radix keys (initial scores, then voted keys' high bits)
  uint32_t* sort_tmp_keys;   ///< (G)
  int32_t* init_ids;         ///< (G)
  int32_t* sort_tmp_ids;     ///< (G)
};

namespace detail {
ICFRR_HD int64_t align8(int64_t n) { return (n + 7) & ~int64_t(7); }
}  // namespace detail

/// Bytes of scratch one worker needs (every section 8-byte aligned): about (2 G (sizeof(Acc) + 12) + 45 L) bytes.
template <typename Acc>
ICFRR_HD int64_t rerank_scratch_bytes(int64_t G, int64_t L) {
  using detail::align8;
  return align8(G * sizeof(Acc)) + align8(G * 4) + 2 * align8(L * 4) + 4 * align8(L * 8) + align8(L) +
         align8((G + 1) * 4) + align8((G + 1) * sizeof(Acc)) + align8(L * 4) + 4 * align8(G * 4);
}

/// Lay the sections out in `buf` (rerank_scratch_bytes bytes, 8-byte aligned) and initialise the invariants
/// (acc = 0, pos = -1, boosted = 0).
template <typename Acc>
ICFRR_HD RerankScratch<Acc> rerank_scratch_carve(void* buf, int64_t G, int64_t L) {
  using detail::align8;
  char* p = static_cast<char*>(buf);
  auto take = [&p](int64_t bytes) {
    char* q = p;
    p += align8(bytes);
    return q;
  };
  RerankScratch<Acc> s;
  s.acc = reinterpret_cast<Acc*>(take(G * sizeof(Acc)));
  s.pos = reinterpret_cast<int32_t*>(take(G * 4));
  s.order = reinterpret_cast<int32_t*>(take(L * 4));
  s.new_order = reinterpret_cast<int32_t*>(take(L * 4));
  s.slot = reinterpret_cast<double*>(take(L * 8));
  s.cur = reinterpret_cast<double*>(take(L * 8));
  s.new_cur = reinterpret_cast<double*>(take(L * 8));
  s.bkey = reinterpret_cast<double*>(take(L * 8));
  s.boosted = reinterpret_cast<uint8_t*>(take(L));
  s.touched = reinterpret_cast<int32_t*>(take((G + 1) * 4));
  s.touched_votes = reinterpret_cast<Acc*>(take((G + 1) * sizeof(Acc)));
  s.blist = reinterpret_cast<int32_t*>(take(L * 4));
  s.sort_keys = reinterpret_cast<uint32_t*>(take(G * 4));
  s.sort_tmp_keys = reinterpret_cast<uint32_t*>(take(G * 4));
  s.init_ids = reinterpret_cast<int32_t*>(take(G * 4));
  s.sort_tmp_ids = reinterpret_cast<int32_t*>(take(G * 4));
  for (int64_t j = 0; j < G; ++j) {
    s.acc[j] = 0;
    s.pos[j] = -1;
  }
  for (int64_t x = 0; x < L; ++x) s.boosted[x] = 0;
  return s;
}

namespace detail {

/// Step 1: pi^(0) = scores descending, ties by smaller index (stable sort of ids given in index order); top L kept.
template <typename T, typename Acc>
ICFRR_HD void initial_order(const RerankArgs& a, const T* s, const RerankScratch<Acc>& w) {
  const int64_t G = a.G, L = a.depth;
  const T sign = a.largest ? T(1) : T(-1);
  for (int64_t j = 0; j < G; ++j) w.init_ids[j] = static_cast<int32_t>(j);
  if (sizeof(T) == 4) {  // float32: the 32-bit key is exact
    for (int64_t j = 0; j < G; ++j) w.sort_keys[j] = static_cast<uint32_t>(descending_key(static_cast<T>(sign * s[j])));
    radix_sort_pairs(w.sort_keys, w.init_ids, G, w.sort_tmp_keys, w.sort_tmp_ids);
  } else {  // float64: high 32 bits by radix, then exact fix-up inside equal runs
    sort_by_u64_key(w.init_ids, G, w.sort_keys, w.sort_tmp_keys, w.sort_tmp_ids,
                    [s, sign](int32_t id) { return static_cast<uint64_t>(descending_key(static_cast<T>(sign * s[id]))); });
  }
  for (int64_t p = 0; p < L; ++p) {
    const int32_t id = w.init_ids[p];
    w.order[p] = id;
    w.slot[p] = static_cast<double>(static_cast<T>(sign * s[id]));
    w.cur[p] = w.slot[p];
    w.pos[id] = static_cast<int32_t>(p);
  }
}

struct IterResult {
  bool changed;           ///< the order differs from the previous one
  bool voters_unchanged;  ///< the first K_q' items are the same set as before
};

/// Step 2: one iteration over the scratch state. FULL: depth == G (every item is a candidate).
template <bool FULL, typename Acc>
ICFRR_HD IterResult iterate(const RerankArgs& a, int64_t kq, const RerankScratch<Acc>& w, int64_t& dirty_max) {
  const int64_t G = a.G;
  Acc* acc = w.acc;
  const int32_t* pos = w.pos;

  // 2a. votes: acc[j] += (1 << SHIFT) + r for every voter i and rank r with j = n_i(r) a candidate. Nothing else
  //     in this loop: a running count of distinct ids would chain every update to the previous load.
  for (int64_t p = 0; p < kq; ++p) {
    const int32_t* row = a.neighbors + static_cast<int64_t>(w.order[p]) * a.nbr_stride;
    Acc inc = vote_increment<Acc>(0);
    for (int64_t r = 0; r < a.K_g; ++r, ++inc) {
      const int32_t j = row[r];
      if (!FULL && pos[j] < 0) continue;
      acc[j] += inc;
    }
  }

  // 2b. keys of the voted items (marked by position, acc cleared for the next iteration) and the voted positions
  //        in position order. Dense case (L <= votes, e.g. G = 10^4): one scan of the L positions. Sparse case
  //        (G = 10^6): walk the voters' lists again, collecting each voted id once without a branch (a second
  //        visit reads the cleared zero), then scan positions [0, max voted position].
  int64_t maxpos = -1, nb = 0;
  const int64_t n_votes = kq * a.K_g;
  if (a.depth <= n_votes) {
    for (int64_t p = 0; p < a.depth; ++p) {
      const int32_t j = w.order[p];
      const Acc v = acc[j];
      if (v == 0) continue;
      acc[j] = 0;
      const double delta = vote_delta(vote_count(v), vote_rank_sum(v), G, kq);
      const double base = a.paper ? w.cur[p] : w.slot[p];
      w.bkey[p] = vote_key(base, a.beta, delta);
      w.boosted[p] = 1;
      w.blist[nb++] = static_cast<int32_t>(p);
      maxpos = p;
    }
  } else {
    int64_t nt = 0;
    for (int64_t pv = 0; pv < kq; ++pv) {
      const int32_t* row = a.neighbors + static_cast<int64_t>(w.order[pv]) * a.nbr_stride;
      for (int64_t r = 0; r < a.K_g; ++r) {
        const int32_t j = row[r];
        if (!FULL && pos[j] < 0) continue;
        const Acc v = acc[j];
        acc[j] = 0;
        w.touched[nt] = j;
        w.touched_votes[nt] = v;
        nt += (v != 0);
      }
    }
    for (int64_t x = 0; x < nt; ++x) {
      const int32_t p = pos[w.touched[x]];
      const Acc v = w.touched_votes[x];
      const double delta = vote_delta(vote_count(v), vote_rank_sum(v), G, kq);
      const double base = a.paper ? w.cur[p] : w.slot[p];
      w.bkey[p] = vote_key(base, a.beta, delta);
      w.boosted[p] = 1;
      if (p > maxpos) maxpos = p;
    }
    for (int64_t p = 0; p <= maxpos; ++p)
      if (w.boosted[p]) w.blist[nb++] = static_cast<int32_t>(p);
  }

  // 2c. stable sort of the voted positions by key, descending.
  if (nb <= 32) {
    for (int64_t x = 1; x < nb; ++x) {  // insertion sort: stable
      const int32_t p = w.blist[x];
      int64_t y = x;
      while (y > 0 && w.bkey[w.blist[y - 1]] < w.bkey[p]) {
        w.blist[y] = w.blist[y - 1];
        --y;
      }
      w.blist[y] = p;
    }
  } else {
    const double* bkey = w.bkey;
    sort_by_u64_key(w.blist, nb, w.sort_keys, w.sort_tmp_keys, w.sort_tmp_ids,
                    [bkey](int32_t p) { return descending_key(bkey[p]); });
  }

  // 2d. merge voted (sorted) with unvoted (in order) over positions [0, maxpos]. Stable: equal keys keep the
  //     current order, i.e. the smaller current position goes first.
  const double* ukeys = a.paper ? w.cur : w.slot;  // an unvoted item's key: its score, or its slot value
  int64_t ib = 0, u = 0;
  for (int64_t out = 0; out <= maxpos; ++out) {
    while (u <= maxpos && w.boosted[u]) ++u;
    bool take_voted;
    if (ib >= nb) {
      take_voted = false;
    } else if (u > maxpos) {
      take_voted = true;
    } else {
      const int32_t b = w.blist[ib];
      take_voted = RankOrder<true>::before(w.bkey[b], b, ukeys[u], u);
    }
    if (take_voted) {
      const int32_t b = w.blist[ib++];
      w.new_order[out] = w.order[b];
      w.new_cur[out] = w.bkey[b];
    } else {
      w.new_order[out] = w.order[u];
      w.new_cur[out] = ukeys[u];
      ++u;
    }
  }

  IterResult res{false, true};
  for (int64_t x = 0; x <= maxpos; ++x) {
    const int32_t id = w.new_order[x];
    if (x < kq && w.pos[id] >= kq) res.voters_unchanged = false;
    if (id != w.order[x]) res.changed = true;
  }
  for (int64_t x = 0; x <= maxpos; ++x) {
    const int32_t id = w.new_order[x];
    w.order[x] = id;
    w.pos[id] = static_cast<int32_t>(x);
    w.cur[x] = w.new_cur[x];
    w.boosted[x] = 0;
  }
  if (!a.paper) {  // semantics "reference": unvoted positions beyond the region have key v_p again
    for (int64_t x = maxpos + 1; x <= dirty_max; ++x) w.cur[x] = w.slot[x];
    dirty_max = maxpos;
  }
  return res;
}

template <typename Acc>
ICFRR_HD void write_history(const RerankArgs& a, const RerankScratch<Acc>& w, int64_t q, int64_t t) {
  int64_t* h = a.out_history + (q * (a.iters + 1) + t) * a.k;
  for (int64_t p = 0; p < a.k; ++p) h[p] = w.order[p];
}

}  // namespace detail

/// Re-rank query q: writes out_values[q], out_indices[q] (and out_history[q] when set). T: float or double scores;
/// Acc: the vote packing chosen by vote_packing_fits. Leaves the scratch invariants (acc = 0, pos = -1,
/// boosted = 0) as it found them.
template <typename T, typename Acc>
ICFRR_HD void rerank_query(const RerankArgs& a, int64_t q, const RerankScratch<Acc>& w) {
  const int64_t kq = a.k_q < a.depth ? a.k_q : a.depth;
  const T* scores = static_cast<const T*>(a.scores) + q * a.score_stride;
  detail::initial_order<T>(a, scores, w);
  if (a.out_history) detail::write_history(a, w, q, 0);
  int64_t dirty_max = -1;
  int64_t t = 1;
  const bool full = a.depth == a.G;
  for (; t <= a.iters; ++t) {
    const detail::IterResult r =
        full ? detail::iterate<true>(a, kq, w, dirty_max) : detail::iterate<false>(a, kq, w, dirty_max);
    if (a.out_history) detail::write_history(a, w, q, t);
    const bool fixed_point = !a.paper && !r.changed;  // exact: every later iteration repeats this one
    if (fixed_point || (a.early_stop && r.voters_unchanged)) break;
  }
  if (a.out_history)
    for (int64_t rest = t + 1; rest <= a.iters; ++rest) detail::write_history(a, w, q, rest);
  const double sign = a.largest ? 1.0 : -1.0;
  for (int64_t p = 0; p < a.k; ++p) {
    a.out_values[q * a.k + p] = static_cast<float>(sign * w.cur[p]);
    a.out_indices[q * a.k + p] = w.order[p];
  }
  for (int64_t p = 0; p < a.depth; ++p) w.pos[w.order[p]] = -1;
}

}  // namespace icfrr
