// The per-query ICFRR algorithm (docs/design.md §2), header-only and host/device: the CPU drivers (csrc/cpu/icfrr_rerank.cpp,
// csrc/cpu/icfrr_candidates.cpp) and the CUDA driver (csrc/cuda/) call the same `rerank_query`, so the CPU tests
// exercise the GPU build's logic.
// Oracle: icfrr_fast.reference.icfrr_rerank, .icfrr_candidates
// Test: tests/test_icfrr_rerank.py, tests/test_icfrr_candidates.py   Bench: benchmarks/bench_icfrr_rerank.py
//
// Per query, with scratch that the driver allocates once per worker (acc = 0, pos = -1, boosted = 0 between queries):
//   1. initial order: dense scores: stable radix sort of the G scores (descending, ties -> smaller id), keep the
//      top L; candidate lists (args.ids): the row's L_q real candidates sorted by (score desc, id asc), O(L_q) --
//      a check when they already are, else the exact radix sort by key and, for equal keys, by id;
//   2. per iteration: scatter packed integer votes of the K_q' voters' K_g neighbours into acc[G]; key of every
//      voted item (vote.h); sort the voted items by key (stable, in position order); merge them into the unvoted
//      items, which are already in order. Voted items only move up (delta > 0, beta >= 0), so only positions
//      [0, max voted position] change: an iteration costs O(K_q' K_g + B + region), never a sort of L items;
//   3. semantics "reference" reaches an exact fixed point when an iteration leaves the order unchanged (keys then
//      depend only on the order), so the remaining iterations are skipped without changing any result.
// Ids index acc[] and pos[] (N = rows of the graph); both have one more element at index -1, so that a graph entry -1
// (a neighbour that is nobody's candidate) reads pos = -1 and is skipped like any non-candidate, without a branch.
// Invariants: integer votes, float64 keys, ties keep the current order; results independent of threads/devices.
#pragma once
#include <cstdint>

#include "icfrr_rerank.h"
#include "order.h"
#include "radix_sort.h"
#include "vote.h"

namespace icfrr {

/// Scratch of one worker (one query at a time). Sizes: N = ids (rows of the graph), L = depth, S = items of the
/// initial sort (G for dense scores, L for candidate lists).
template <typename Acc>
struct RerankScratch {
  Acc* acc;                  ///< ([-1] + N) packed votes of the current voters; all zero between queries
  int32_t* pos;              ///< ([-1] + N) position of each item in the current order, -1 outside it (and at [-1])
  int32_t* order;            ///< (L) current order (gallery ids)
  int32_t* new_order;        ///< (L) merge output
  double* slot;              ///< (L + 1) v_p: initial scores sorted descending (fixed); [L] = -inf sentinel
  double* cur;               ///< (L + 1) key of the item at position p ("paper": its accumulated score); [L] = -inf
  double* new_cur;           ///< (L)
  double* bkey;              ///< (L + 1) key of the voted item at position p; [L] = -inf sentinel
  uint8_t* boosted;          ///< (L) voted flags (sparse path); zero between iterations
  int32_t* touched;          ///< (N + 1) voted ids (sparse path)
  Acc* touched_votes;        ///< (N + 1) their packed votes
  int32_t* blist;            ///< (L + 1) voted positions, sorted by key, then a sentinel L
  int32_t* ulist;            ///< (L + 1) unvoted positions of the changing region, in order, then a sentinel L
  int32_t* voters_in;        ///< (L + 1) items that became voters in the last iteration (dense path)
  int32_t* voters_out;       ///< (L + 1) items that stopped being voters
  uint32_t* sort_keys;       ///< (S) radix keys (initial scores, then voted keys' high bits)
  uint32_t* sort_tmp_keys;   ///< (S)
  int32_t* init_ids;         ///< (S) the initial sort's items (dense: ids; candidate lists: indices into the row)
  int32_t* sort_tmp_ids;     ///< (S)
};

/// Id type tag of rerank_query for dense (Q, G) scores (candidate lists use their id type, int32_t or int64_t).
struct DenseRows {};

namespace detail {
ICFRR_HD int64_t align8(int64_t n) { return (n + 7) & ~int64_t(7); }

/// Items of the initial sort: all G scores of a dense row, or the L entries of a candidate row.
ICFRR_HD int64_t initial_sort_items(const RerankArgs& a) { return a.ids ? a.depth : a.G; }
}  // namespace detail

/// Bytes of scratch one worker needs (every section 8-byte aligned): about N (2 sizeof(Acc) + 8) + 16 S + 57 L
/// bytes (N: rows of the graph, S: items of the initial sort, L: depth).
template <typename Acc>
ICFRR_HD int64_t rerank_scratch_bytes(const RerankArgs& a) {
  using detail::align8;
  const int64_t N = a.N, L = a.depth, S = detail::initial_sort_items(a);
  return align8((N + 1) * sizeof(Acc)) + align8((N + 1) * 4) + 2 * align8(L * 4) + 3 * align8((L + 1) * 8) +
         align8(L * 8) + align8(L) + align8((N + 1) * 4) + align8((N + 1) * sizeof(Acc)) +
         4 * align8((L + 1) * 4) + 4 * align8(S * 4);
}

/// Lay the sections out in `buf` (rerank_scratch_bytes(a) bytes, 8-byte aligned) and initialise the invariants
/// (acc = 0, pos = -1, boosted = 0, sentinels).
template <typename Acc>
ICFRR_HD RerankScratch<Acc> rerank_scratch_carve(void* buf, const RerankArgs& a) {
  using detail::align8;
  const int64_t N = a.N, L = a.depth, S = detail::initial_sort_items(a);
  char* p = static_cast<char*>(buf);
  auto take = [&p](int64_t bytes) {
    char* q = p;
    p += align8(bytes);
    return q;
  };
  RerankScratch<Acc> s;
  s.acc = reinterpret_cast<Acc*>(take((N + 1) * sizeof(Acc))) + 1;  // [-1]: the slot of graph entries -1
  s.pos = reinterpret_cast<int32_t*>(take((N + 1) * 4)) + 1;
  s.order = reinterpret_cast<int32_t*>(take(L * 4));
  s.new_order = reinterpret_cast<int32_t*>(take(L * 4));
  s.slot = reinterpret_cast<double*>(take((L + 1) * 8));
  s.cur = reinterpret_cast<double*>(take((L + 1) * 8));
  s.new_cur = reinterpret_cast<double*>(take(L * 8));
  s.bkey = reinterpret_cast<double*>(take((L + 1) * 8));
  s.boosted = reinterpret_cast<uint8_t*>(take(L));
  s.touched = reinterpret_cast<int32_t*>(take((N + 1) * 4));
  s.touched_votes = reinterpret_cast<Acc*>(take((N + 1) * sizeof(Acc)));
  s.blist = reinterpret_cast<int32_t*>(take((L + 1) * 4));
  s.ulist = reinterpret_cast<int32_t*>(take((L + 1) * 4));
  s.voters_in = reinterpret_cast<int32_t*>(take((L + 1) * 4));
  s.voters_out = reinterpret_cast<int32_t*>(take((L + 1) * 4));
  s.sort_keys = reinterpret_cast<uint32_t*>(take(S * 4));
  s.sort_tmp_keys = reinterpret_cast<uint32_t*>(take(S * 4));
  s.init_ids = reinterpret_cast<int32_t*>(take(S * 4));
  s.sort_tmp_ids = reinterpret_cast<int32_t*>(take(S * 4));
  for (int64_t j = -1; j < N; ++j) {
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

/// Step 1 (dense scores): pi^(0) = scores descending, ties by smaller index (stable sort of ids given in index
/// order); top L kept. Returns L.
template <typename T, typename Acc>
ICFRR_HD int64_t initial_order(const RerankArgs& a, int64_t q, const RerankScratch<Acc>& w) {
  const T* s = static_cast<const T*>(a.scores) + q * a.score_stride;
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
  return L;
}

/// Stable sort of the row indices items[0..n), already ordered by key descending, by id ascending inside each run
/// of equal keys (rare: an insertion sort for short runs, a radix sort by id for long ones, never quadratic).
template <typename I, typename KeyOf, typename Acc>
ICFRR_HD void order_ties_by_id(int32_t* items, int64_t n, const I* ids, KeyOf key_of, const RerankScratch<Acc>& w) {
  int64_t start = 0;
  while (start < n) {
    const double key = key_of(items[start]);
    int64_t end = start + 1;
    while (end < n && key_of(items[end]) == key) ++end;
    if (end - start > 32) {
      for (int64_t x = start; x < end; ++x) w.sort_keys[x] = static_cast<uint32_t>(ids[items[x]]);
      radix_sort_pairs(w.sort_keys + start, items + start, end - start, w.sort_tmp_keys, w.sort_tmp_ids);
    } else {
      for (int64_t x = start + 1; x < end; ++x) {
        const int32_t item = items[x];
        int64_t y = x;
        while (y > start && ids[items[y - 1]] > ids[item]) {
          items[y] = items[y - 1];
          --y;
        }
        items[y] = item;
      }
    }
    start = end;
  }
}

/// Step 1 (candidate lists): pi^(0) = the row's L_q real candidates (ids before the first -1) by score descending,
/// ties by smaller id. Rows that already are in this order (the output of a top-k) cost one check. Returns L_q.
template <typename T, typename I, typename Acc>
ICFRR_HD int64_t candidate_order(const RerankArgs& a, int64_t q, const RerankScratch<Acc>& w) {
  const T* s = static_cast<const T*>(a.scores) + q * a.score_stride;
  const I* ids = static_cast<const I*>(a.ids) + q * a.ids_stride;
  const T sign = a.largest ? T(1) : T(-1);
  auto key_of = [s, sign](int32_t c) { return static_cast<double>(static_cast<T>(sign * s[c])); };
  int64_t L = 0;
  while (L < a.depth && ids[L] >= 0) ++L;
  const double neg_inf = -__builtin_huge_val();  // the merge's sentinels sit at position L of this row
  w.slot[L] = neg_inf;
  w.cur[L] = neg_inf;
  w.bkey[L] = neg_inf;
  double kmin = __builtin_huge_val(), kmax = -__builtin_huge_val();
  bool sorted = true;
  for (int64_t c = 0; c < L; ++c) {
    w.init_ids[c] = static_cast<int32_t>(c);
    const double v = key_of(static_cast<int32_t>(c));
    if (c > 0) sorted = sorted && RankOrder<true>::before(key_of(static_cast<int32_t>(c - 1)), ids[c - 1], v, ids[c]);
    kmin = v < kmin ? v : kmin;
    kmax = v > kmax ? v : kmax;
  }
  if (!sorted) {
    sort_desc_by_double(w.init_ids, L, w.sort_keys, w.sort_tmp_keys, w.sort_tmp_ids, key_of, kmin, kmax);
    order_ties_by_id(w.init_ids, L, ids, key_of, w);
  }
  for (int64_t p = 0; p < L; ++p) {
    const int32_t c = w.init_ids[p];
    const int32_t id = static_cast<int32_t>(ids[c]);
    w.order[p] = id;
    w.slot[p] = key_of(c);
    w.cur[p] = w.slot[p];
    w.pos[id] = static_cast<int32_t>(p);
  }
  return L;
}

struct IterResult {
  bool changed;           ///< the order differs from the previous one
  bool voters_unchanged;  ///< the first K_q' items are the same set as before
};

/// What one query's iterations carry from one to the next.
struct IterState {
  int64_t L;          ///< candidates of this query (depth, or a candidate row's L_q)
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
  const int64_t G = a.G, L = st.L;
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
  if (a.N <= (kq + st.n_out) * a.K_g) {
    for (int64_t j = 0; j < a.N; ++j) w.acc[j] = 0;
    return;
  }
  for (int64_t x = 0; x < kq + st.n_out; ++x) {
    const int32_t voter = x < kq ? w.order[x] : w.voters_out[x - kq];
    const int32_t* row = a.neighbors + static_cast<int64_t>(voter) * a.nbr_stride;
    for (int64_t r = 0; r < a.K_g; ++r) w.acc[row[r]] = 0;
  }
}

/// Order after iteration t; positions beyond the query's L candidates get -1.
template <typename Acc>
ICFRR_HD void write_history(const RerankArgs& a, const RerankScratch<Acc>& w, int64_t L, int64_t q, int64_t t) {
  int64_t* h = a.out_history + (q * (a.iters + 1) + t) * a.k;
  for (int64_t p = 0; p < a.k; ++p) h[p] = p < L ? w.order[p] : -1;
}

/// Initial order of query q: from dense scores (the tag DenseRows) or from its candidate list (int32_t / int64_t).
template <typename T, typename Acc>
ICFRR_HD int64_t first_order(const RerankArgs& a, int64_t q, const RerankScratch<Acc>& w, const DenseRows*) {
  return initial_order<T>(a, q, w);
}
template <typename T, typename I, typename Acc>
ICFRR_HD int64_t first_order(const RerankArgs& a, int64_t q, const RerankScratch<Acc>& w, const I*) {
  return candidate_order<T, I>(a, q, w);
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
/// I: DenseRows for dense scores, the id type (int32_t / int64_t) for candidate lists; Acc: the vote packing chosen by
/// vote_packing_fits. Leaves the scratch invariants (acc = 0, pos = -1, boosted = 0) as it found them. Returns false
/// when hooks.stop() ended it (outputs of q not written).
template <typename T, typename I, typename Acc, typename Hooks = NoQueryHooks>
ICFRR_HD bool rerank_query(const RerankArgs& a, int64_t q, const RerankScratch<Acc>& w, Hooks hooks = Hooks()) {
  detail::IterState st;
  st.L = detail::first_order<T>(a, q, w, static_cast<const I*>(nullptr));
  const int64_t L = st.L;
  const int64_t kq = a.k_q < L ? a.k_q : L;
  if (a.out_history) detail::write_history(a, w, L, q, 0);
  st.dense = L <= kq * a.K_g;
  st.first = true;
  const bool full = !a.ids && L == a.G;
  int64_t t = L > 0 ? 1 : 0;  // a candidate row without candidates: nothing to iterate, history -1 throughout
  bool stopped = false;
  for (; t <= a.iters && L > 0; ++t) {
    hooks.voters(w.order, kq);
    if ((stopped = hooks.stop())) break;
    const detail::IterResult r = full ? detail::iterate<true>(a, kq, w, st) : detail::iterate<false>(a, kq, w, st);
    if (a.out_history) detail::write_history(a, w, L, q, t);
    const bool fixed_point = !a.paper && !r.changed;  // exact: every later iteration repeats this one
    if (fixed_point || (a.early_stop && r.voters_unchanged)) break;
  }
  if (a.out_history && !stopped)
    for (int64_t rest = t + 1; rest <= a.iters; ++rest) detail::write_history(a, w, L, q, rest);
  if (full) detail::clear_votes<true>(a, kq, w, st);
  else detail::clear_votes<false>(a, kq, w, st);
  const double sign = a.largest ? 1.0 : -1.0;
  const double pad = -sign * __builtin_huge_val();  // past the last candidate: the worst value, like torch.topk's
  for (int64_t p = 0; p < a.k && !stopped; ++p) {
    const double v = p < L ? sign * w.cur[p] : pad;
    if (a.values_is_double) static_cast<double*>(a.out_values)[q * a.k + p] = v;
    else static_cast<float*>(a.out_values)[q * a.k + p] = static_cast<float>(v);
    a.out_indices[q * a.k + p] = p < L ? w.order[p] : -1;
  }
  for (int64_t p = 0; p < L; ++p) w.pos[w.order[p]] = -1;
  return !stopped;
}

}  // namespace icfrr
