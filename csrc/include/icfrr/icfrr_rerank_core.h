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
  Acc* acc;                  ///< (G) packed votes of the current voters; all zero between queries
  int32_t* pos;              ///< (G) position of each item in the current order, -1 outside it; -1 between queries
  int32_t* order;            ///< (L) current order (gallery ids)
  int32_t* new_order;        ///< (L) merge output
  double* slot;              ///< (L + 1) v_p: initial scores sorted descending (fixed); [L] = -inf sentinel
  double* cur;               ///< (L + 1) key of the item at position p ("paper": its accumulated score); [L] = -inf
  double* new_cur;           ///< (L)
  double* bkey;              ///< (L + 1) key of the voted item at position p; [L] = -inf sentinel
  uint8_t* boosted;          ///< (L) voted flags (sparse path); zero between iterations
  int32_t* touched;          ///< (G + 1) voted ids (sparse path)
  Acc* touched_votes;        ///< (G + 1) their packed votes
  int32_t* blist;            ///< (L + 1) voted positions, sorted by key, then a sentinel L
  int32_t* ulist;            ///< (L + 1) unvoted positions of the changing region, in order, then a sentinel L
  int32_t* voters_in;        ///< (L + 1) items that became voters in the last iteration (dense path)
  int32_t* voters_out;       ///< (L + 1) items that stopped being voters
  uint32_t* sort_keys;       ///< (G) radix keys (initial scores, then voted keys' high bits)
  uint32_t* sort_tmp_keys;   ///< (G)
  int32_t* init_ids;         ///< (G)
  int32_t* sort_tmp_ids;     ///< (G)
};

namespace detail {
ICFRR_HD int64_t align8(int64_t n) { return (n + 7) & ~int64_t(7); }
}  // namespace detail

/// Bytes of scratch one worker needs (every section 8-byte aligned): about G (2 sizeof(Acc) + 24) + 57 L bytes.
template <typename Acc>
ICFRR_HD int64_t rerank_scratch_bytes(int64_t G, int64_t L) {
  using detail::align8;
  return align8(G * sizeof(Acc)) + align8(G * 4) + 2 * align8(L * 4) + 3 * align8((L + 1) * 8) + align8(L * 8) +
         align8(L) + align8((G + 1) * 4) + align8((G + 1) * sizeof(Acc)) + 4 * align8((L + 1) * 4) +
         4 * align8(G * 4);
}

/// Lay the sections out in `buf` (rerank_scratch_bytes bytes, 8-byte aligned) and initialise the invariants
/// (acc = 0, pos = -1, boosted = 0, sentinels).
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
  s.slot = reinterpret_cast<double*>(take((L + 1) * 8));
  s.cur = reinterpret_cast<double*>(take((L + 1) * 8));
  s.new_cur = reinterpret_cast<double*>(take(L * 8));
  s.bkey = reinterpret_cast<double*>(take((L + 1) * 8));
  s.boosted = reinterpret_cast<uint8_t*>(take(L));
  s.touched = reinterpret_cast<int32_t*>(take((G + 1) * 4));
  s.touched_votes = reinterpret_cast<Acc*>(take((G + 1) * sizeof(Acc)));
  s.blist = reinterpret_cast<int32_t*>(take((L + 1) * 4));
  s.ulist = reinterpret_cast<int32_t*>(take((L + 1) * 4));
  s.voters_in = reinterpret_cast<int32_t*>(take((L + 1) * 4));
  s.voters_out = reinterpret_cast<int32_t*>(take((L + 1) * 4));
  s.sort_keys = reinterpret_cast<uint32_t*>(take(G * 4));
  s.sort_tmp_keys = reinterpret_cast<uint32_t*>(take(G * 4));
  s.init_ids = reinterpret_cast<int32_t*>(take(G * 4));
  s.sort_tmp_ids = reinterpret_cast<int32_t*>(take(G * 4));
  for (int64_t j = 0; j < G; ++j) {
    s.acc[j] = 0;
    s.pos[j] = -1;
  }
  for (int64_t x = 0; x < L; ++x) s.boosted[x] = 0;
  const double neg_inf = -__builtin_huge_val();
  s.slot[L] = neg_inf;
  s.cur[L] = neg_inf;
  s.bkey[L] = neg_inf;
  return s;
}

namespace detail {

/// Step 1: pi^(0) = scores descending, ties by smaller index (stable sort of ids given in index order); top L kept.
template <typename T, typename Acc>
ICFRR_HD void initial_order(const RerankArgs& a, const T* s, const RerankScratch<Acc>& w) {
  const int64_t G = a.G, L = a.depth;
  const T sign = a.largest ? T(1) : T(-1);
  double kmin = __builtin_huge_val(), kmax = -__builtin_huge_val();
  for (int64_t j = 0; j < G; ++j) {
    w.init_ids[j] = static_cast<int32_t>(j);
    const double v = static_cast<double>(static_cast<T>(sign * s[j]));
    kmin = v < kmin ? v : kmin;
    kmax = v > kmax ? v : kmax;
  }
  sort_desc_by_double(w.init_ids, G, w.sort_keys, w.sort_tmp_keys, w.sort_tmp_ids,
                      [s, sign](int32_t id) { return static_cast<double>(static_cast<T>(sign * s[id])); }, kmin, kmax);
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

/// What one query's iterations carry from one to the next.
struct IterState {
  bool dense;         ///< L <= K_q' K_g: (almost) every candidate is voted; votes are kept and updated
  bool first;         ///< no votes accumulated yet
  int64_t n_in = 0;   ///< voters_in / voters_out counts from the last iteration (dense path)
  int64_t n_out = 0;
  int64_t dirty_max = -1;  ///< semantics "reference": cur[p] != slot[p] possible up to here
};

/// acc[j] += SIGN * ((1 << SHIFT) + r) for the candidates j = n_i(r) of one voter i.
template <bool FULL, int SIGN, typename Acc>
ICFRR_HD void apply_votes(const RerankArgs& a, const RerankScratch<Acc>& w, int32_t voter) {
  const int32_t* row = a.neighbors + static_cast<int64_t>(voter) * a.nbr_stride;
  Acc inc = vote_increment<Acc>(0);
  for (int64_t r = 0; r < a.K_g; ++r, ++inc) {
    const int32_t j = row[r];
    if (!FULL && w.pos[j] < 0) continue;
    if (SIGN > 0) w.acc[j] += inc;
    else w.acc[j] -= inc;
  }
}

/// Step 2: one iteration over the scratch state. FULL: depth == G (every item is a candidate).
template <bool FULL, typename Acc>
ICFRR_HD IterResult iterate(const RerankArgs& a, int64_t kq, const RerankScratch<Acc>& w, IterState& st) {
  const int64_t G = a.G, L = a.depth;
  Acc* acc = w.acc;
  const double* base = a.paper ? w.cur : w.slot;  // key of an item before its vote: its score, or its slot value
  int64_t maxpos = -1, nb = 0, nu = 0;
  double kmin = __builtin_huge_val(), kmax = -__builtin_huge_val();  // range of the voted keys

  if (st.dense) {
    // 2a. votes, kept across iterations: the first iteration adds all K_q' voters; later ones only the voters
    //     that entered (+) and left (-) the first K_q' positions. Integer sums make this exact.
    if (st.first) {
      for (int64_t p = 0; p < kq; ++p) apply_votes<FULL, +1>(a, w, w.order[p]);
      st.first = false;
    } else {
      for (int64_t x = 0; x < st.n_out; ++x) apply_votes<FULL, -1>(a, w, w.voters_out[x]);
      for (int64_t x = 0; x < st.n_in; ++x) apply_votes<FULL, +1>(a, w, w.voters_in[x]);
    }
    // 2b. one scan of the L positions splits them, without branches, into voted and unvoted (position order);
    //     then the keys of the voted ones. Unvoted positions after the last voted one do not move.
    for (int64_t p = 0; p < L; ++p) {
      const bool voted = acc[w.order[p]] != 0;
      w.blist[nb] = static_cast<int32_t>(p);
      w.ulist[nu] = static_cast<int32_t>(p);
      nb += voted;
      nu += !voted;
    }
    maxpos = nb > 0 ? w.blist[nb - 1] : -1;
    nu = maxpos + 1 - nb;
    for (int64_t x = 0; x < nb; ++x) {
      const int32_t p = w.blist[x];
      const Acc v = acc[w.order[p]];
      const double key = vote_key(base[p], a.beta, vote_delta(vote_count(v), vote_rank_sum(v), G, kq));
      w.bkey[p] = key;
      kmin = key < kmin ? key : kmin;
      kmax = key > kmax ? key : kmax;
    }
  } else {
    // 2a. votes from scratch (acc is zero): few voted items among many candidates.
    for (int64_t p = 0; p < kq; ++p) apply_votes<FULL, +1>(a, w, w.order[p]);
    // 2b. walk the voters' lists again, collecting each voted id once without a branch (a second visit reads the
    //     cleared zero); keys of the voted items; then the voted/unvoted positions of [0, max voted position].
    int64_t nt = 0;
    for (int64_t pv = 0; pv < kq; ++pv) {
      const int32_t* row = a.neighbors + static_cast<int64_t>(w.order[pv]) * a.nbr_stride;
      for (int64_t r = 0; r < a.K_g; ++r) {
        const int32_t j = row[r];
        if (!FULL && w.pos[j] < 0) continue;
        const Acc v = acc[j];
        acc[j] = 0;
        w.touched[nt] = j;
        w.touched_votes[nt] = v;
        nt += (v != 0);
      }
    }
    for (int64_t x = 0; x < nt; ++x) {
      const int32_t p = w.pos[w.touched[x]];
      const Acc v = w.touched_votes[x];
      const double key = vote_key(base[p], a.beta, vote_delta(vote_count(v), vote_rank_sum(v), G, kq));
      w.bkey[p] = key;
      kmin = key < kmin ? key : kmin;
      kmax = key > kmax ? key : kmax;
      w.boosted[p] = 1;
      if (p > maxpos) maxpos = p;
    }
    for (int64_t p = 0; p <= maxpos; ++p) {
      const bool voted = w.boosted[p] != 0;
      w.blist[nb] = static_cast<int32_t>(p);
      w.ulist[nu] = static_cast<int32_t>(p);
      nb += voted;
      nu += !voted;
      w.boosted[p] = 0;
    }
  }

  // 2c. stable sort of the voted positions by key, descending (they are in position order: ties stay so).
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
    sort_desc_by_double(w.blist, nb, w.sort_keys, w.sort_tmp_keys, w.sort_tmp_ids,
                        [bkey](int32_t p) { return bkey[p]; }, kmin, kmax);
  }
  w.blist[nb] = static_cast<int32_t>(L);  // sentinels: key -inf never wins against a finite key
  w.ulist[nu] = static_cast<int32_t>(L);

  // 2d. merge voted (sorted) and unvoted (in order) over positions [0, maxpos], without branches. Voted items only
  //     move up (delta > 0, beta >= 0), so nothing beyond maxpos moves. Stable: equal keys keep the current order
  //     (the smaller current position first). Measured without gain here: keys copied into list order (a shorter
  //     load chain) and two merge-path halves interleaved in one loop (Odeh et al. 2012).
  int64_t ib = 0, iu = 0;
  for (int64_t out = 0; out <= maxpos; ++out) {
    const int32_t b = w.blist[ib], u = w.ulist[iu];
    const double kb = w.bkey[b], ku = base[u];
    const bool take_voted = RankOrder<true>::before(kb, b, ku, u);
    const int32_t src = take_voted ? b : u;
    w.new_order[out] = w.order[src];
    w.new_cur[out] = take_voted ? kb : ku;
    ib += take_voted;
    iu += !take_voted;
  }

  // 2e. install the new order; note whether it changed and which items entered or left the voters. (A separate
  //     pass: folding the pos[] scatter into the merge loop measured ~15 % slower.)
  bool changed = false;
  int64_t n_in = 0, n_out = 0;
  for (int64_t x = 0; x <= maxpos; ++x) {
    const int32_t id = w.new_order[x];
    const int32_t old = w.pos[id];
    changed |= id != w.order[x];
    w.voters_in[n_in] = id;
    n_in += (x < kq) & (old >= kq);
    w.voters_out[n_out] = id;
    n_out += (x >= kq) & (old < kq);
    w.order[x] = id;
    w.pos[id] = static_cast<int32_t>(x);
    w.cur[x] = w.new_cur[x];
  }
  st.n_in = n_in;
  st.n_out = n_out;
  if (!a.paper) {  // semantics "reference": unvoted positions beyond the region have key v_p again
    for (int64_t x = maxpos + 1; x <= st.dirty_max; ++x) w.cur[x] = w.slot[x];
    st.dirty_max = maxpos;
  }
  return IterResult{changed, n_in == 0};
}

/// Dense path: acc holds the votes of the last iteration's voters, a subset of the current first K_q' items and
/// those that just left; zero the neighbour lists of both, or all of acc when that is less work.
template <bool FULL, typename Acc>
ICFRR_HD void clear_votes(const RerankArgs& a, int64_t kq, const RerankScratch<Acc>& w, const IterState& st) {
  if (!st.dense || st.first) return;
  if (a.G <= (kq + st.n_out) * a.K_g) {
    for (int64_t j = 0; j < a.G; ++j) w.acc[j] = 0;
    return;
  }
  for (int64_t x = 0; x < kq + st.n_out; ++x) {
    const int32_t voter = x < kq ? w.order[x] : w.voters_out[x - kq];
    const int32_t* row = a.neighbors + static_cast<int64_t>(voter) * a.nbr_stride;
    for (int64_t r = 0; r < a.K_g; ++r) w.acc[row[r]] = 0;
  }
}

template <typename Acc>
ICFRR_HD void write_history(const RerankArgs& a, const RerankScratch<Acc>& w, int64_t q, int64_t t) {
  int64_t* h = a.out_history + (q * (a.iters + 1) + t) * a.k;
  for (int64_t p = 0; p < a.k; ++p) h[p] = w.order[p];
}

}  // namespace detail

/// What a driver may hook into a query's iterations; the default does nothing (the CUDA driver). Before each
/// iteration `voters(order, kq)` sees the voters (the CPU driver checks their graph rows, graph_check.h) and
/// `stop()` is polled (Ctrl-C): when it returns true the query ends at once without writing its outputs.
struct NoQueryHooks {
  ICFRR_HD void voters(const int32_t*, int64_t) {}
  ICFRR_HD bool stop() { return false; }
};

/// Re-rank query q: writes out_values[q], out_indices[q] (and out_history[q] when set). T: float or double scores;
/// Acc: the vote packing chosen by vote_packing_fits. Leaves the scratch invariants (acc = 0, pos = -1,
/// boosted = 0) as it found them. Returns false when hooks.stop() ended it (outputs of q not written).
template <typename T, typename Acc, typename Hooks = NoQueryHooks>
ICFRR_HD bool rerank_query(const RerankArgs& a, int64_t q, const RerankScratch<Acc>& w, Hooks hooks = Hooks()) {
  const int64_t kq = a.k_q < a.depth ? a.k_q : a.depth;
  const T* scores = static_cast<const T*>(a.scores) + q * a.score_stride;
  detail::initial_order<T>(a, scores, w);
  if (a.out_history) detail::write_history(a, w, q, 0);
  detail::IterState st;
  st.dense = a.depth <= kq * a.K_g;
  st.first = true;
  const bool full = a.depth == a.G;
  int64_t t = 1;
  bool stopped = false;
  for (; t <= a.iters; ++t) {
    hooks.voters(w.order, kq);
    if ((stopped = hooks.stop())) break;
    const detail::IterResult r = full ? detail::iterate<true>(a, kq, w, st) : detail::iterate<false>(a, kq, w, st);
    if (a.out_history) detail::write_history(a, w, q, t);
    const bool fixed_point = !a.paper && !r.changed;  // exact: every later iteration repeats this one
    if (fixed_point || (a.early_stop && r.voters_unchanged)) break;
  }
  if (a.out_history && !stopped)
    for (int64_t rest = t + 1; rest <= a.iters; ++rest) detail::write_history(a, w, q, rest);
  if (full) detail::clear_votes<true>(a, kq, w, st);
  else detail::clear_votes<false>(a, kq, w, st);
  const double sign = a.largest ? 1.0 : -1.0;
  for (int64_t p = 0; p < a.k && !stopped; ++p) {
    const double v = sign * w.cur[p];
    if (a.values_is_double) static_cast<double*>(a.out_values)[q * a.k + p] = v;
    else static_cast<float*>(a.out_values)[q * a.k + p] = static_cast<float>(v);
    a.out_indices[q * a.k + p] = w.order[p];
  }
  for (int64_t p = 0; p < a.depth; ++p) w.pos[w.order[p]] = -1;
  return !stopped;
}

}  // namespace icfrr
