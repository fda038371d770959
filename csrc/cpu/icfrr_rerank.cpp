// CPU driver of the fused ICFRR kernel (see include/icfrr/icfrr_rerank.h for the contract).
//
// Per query, with per-thread scratch allocated once:
//   1. initial order: stable radix sort of the G scores (descending, ties -> smaller id), keep the top L;
//   2. per iteration: scatter packed integer votes of the K_q' voters' K_g neighbours into acc[G]; for every voted
//      item compute its key (vote.h); sort the voted items by key (stable, in position order); merge them into the
//      unboosted items, which are already in order. Voted items only move up, so only positions [0, max voted
//      position] change: one iteration costs O(K_q' K_g + B log B + region), never a sort of L items.
//   3. semantics "reference" reaches an exact fixed point when an iteration leaves the order unchanged (keys
//      depend only on the order), so the remaining iterations are skipped without changing any result.
#include "icfrr/icfrr_rerank.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "icfrr/order.h"
#include "icfrr/parallel.h"
#include "icfrr/radix_sort.h"
#include "icfrr/vote.h"

namespace icfrr {
namespace {

using Before = RankOrder<true>;  // larger key first, ties -> smaller position

template <typename Acc>
struct Workspace {
  std::vector<Acc> acc;             // (G) packed votes, zero between iterations
  std::vector<int32_t> pos;         // (G) position of each gallery item in the current order, -1 outside depth
  std::vector<int32_t> order;       // (L) current order
  std::vector<int32_t> new_order;   // (L) merge output
  std::vector<double> slot;         // (L) v_p: initial scores sorted descending (fixed)
  std::vector<double> cur;          // (L) key of the item at position p (paper: its accumulated score)
  std::vector<double> new_cur;      // (L)
  std::vector<double> bkey;         // (L) key of the voted item at position p
  std::vector<uint8_t> boosted;     // (L) 1 when the item at position p received votes this iteration
  std::vector<int32_t> touched;     // voted gallery ids, capacity min(G, K_q' K_g) + 1
  std::vector<int32_t> blist;       // voted positions, sorted by key
  std::vector<uint64_t> bsort_keys, bsort_tmp_keys;
  std::vector<int32_t> bsort_tmp_pos;
  std::vector<uint32_t> init_keys32, init_tmp32;
  std::vector<uint64_t> init_keys64, init_tmp64;
  std::vector<int32_t> init_ids, init_tmp_ids;

  void allocate(const RerankArgs& a, int64_t kq) {
    acc.assign(a.G, 0);
    pos.assign(a.G, -1);
    order.resize(a.depth);
    new_order.resize(a.depth);
    slot.resize(a.depth);
    cur.resize(a.depth);
    new_cur.resize(a.depth);
    bkey.resize(a.depth);
    boosted.assign(a.depth, 0);
    touched.resize(std::min<int64_t>(a.G, kq * a.K_g) + 1);
    blist.resize(a.depth);
    init_ids.resize(a.G);
    if (a.scores_is_double) init_keys64.resize(a.G); else init_keys32.resize(a.G);
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Step 1: initial order (DESIGN §2: pi^(0) sorts the scores descending, ties by smaller index), top L kept.
// ---------------------------------------------------------------------------------------------------------------
template <typename T, typename K, typename Acc>
void initial_order(const RerankArgs& a, const T* s, Workspace<Acc>& w, std::vector<K>& keys, std::vector<K>& tmp) {
  const int64_t G = a.G, L = a.depth;
  const T sign = a.largest ? T(1) : T(-1);
  int32_t* ids = w.init_ids.data();
  for (int64_t j = 0; j < G; ++j) {
    keys[j] = descending_key(static_cast<T>(sign * s[j]));
    ids[j] = static_cast<int32_t>(j);
  }
  if (L * 8 <= G) {  // few candidates: partial selection of (key, id) pairs, then sort those
    std::vector<std::pair<K, int32_t>> pairs(G);
    for (int64_t j = 0; j < G; ++j) pairs[j] = {keys[j], ids[j]};
    std::nth_element(pairs.begin(), pairs.begin() + (L - 1), pairs.end());
    std::sort(pairs.begin(), pairs.begin() + L);
    for (int64_t p = 0; p < L; ++p) ids[p] = pairs[p].second;
  } else {
    radix_sort_pairs(keys.data(), ids, G, tmp, w.init_tmp_ids);
  }
  for (int64_t p = 0; p < L; ++p) {
    const int32_t id = ids[p];
    w.order[p] = id;
    w.slot[p] = static_cast<double>(static_cast<T>(sign * s[id]));
    w.cur[p] = w.slot[p];
    w.pos[id] = static_cast<int32_t>(p);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Step 2: one iteration. Returns {changed, voters_unchanged}.
// ---------------------------------------------------------------------------------------------------------------
struct IterResult {
  bool changed;
  bool voters_unchanged;
};

template <typename Acc, bool FULL>
IterResult iterate(const RerankArgs& a, int64_t kq, Workspace<Acc>& w, int64_t& dirty_max) {
  const int64_t G = a.G;
  Acc* acc = w.acc.data();
  const int32_t* pos = w.pos.data();
  int32_t* touched = w.touched.data();

  // 2a. votes: acc[j] += (1 << SHIFT) + r for every voter i and rank r with j = n_i(r) a candidate.
  int64_t nt = 0;
  for (int64_t p = 0; p < kq; ++p) {
    const int32_t* row = a.neighbors + static_cast<int64_t>(w.order[p]) * a.nbr_stride;
    Acc inc = vote_increment<Acc>(0);
    for (int64_t r = 0; r < a.K_g; ++r, ++inc) {
      const int32_t j = row[r];
      if (!FULL && pos[j] < 0) continue;
      const Acc old = acc[j];
      acc[j] = old + inc;
      touched[nt] = j;
      nt += (old == 0);
    }
  }

  // 2b. keys of the voted items, marked by position.
  int64_t maxpos = -1;
  for (int64_t x = 0; x < nt; ++x) {
    const int32_t j = touched[x];
    const Acc v = acc[j];
    acc[j] = 0;
    const int32_t p = pos[j];
    const double delta = vote_delta(vote_count(v), vote_rank_sum(v), G, kq);
    const double base = a.paper ? w.cur[p] : w.slot[p];
    w.bkey[p] = vote_key(base, a.beta, delta);
    w.boosted[p] = 1;
    maxpos = std::max<int64_t>(maxpos, p);
  }

  // 2c. voted positions in position order, then stable sort by key descending.
  int64_t nb = 0;
  for (int64_t p = 0; p <= maxpos; ++p)
    if (w.boosted[p]) w.blist[nb++] = static_cast<int32_t>(p);
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
    if (static_cast<int64_t>(w.bsort_keys.size()) < nb) w.bsort_keys.resize(nb);
    for (int64_t x = 0; x < nb; ++x) w.bsort_keys[x] = descending_key(w.bkey[w.blist[x]]);
    radix_sort_pairs(w.bsort_keys.data(), w.blist.data(), nb, w.bsort_tmp_keys, w.bsort_tmp_pos);
  }

  // 2d. merge voted (sorted) with unvoted (already in order) over positions [0, maxpos]; stable: equal keys keep
  //     the current order, i.e. the smaller current position first.
  const double* ukeys = a.paper ? w.cur.data() : w.slot.data();
  int64_t ib = 0, u = 0;
  for (int64_t out = 0; out <= maxpos; ++out) {
    while (u <= maxpos && w.boosted[u]) ++u;
    bool take_boosted;
    if (ib >= nb) take_boosted = false;
    else if (u > maxpos) take_boosted = true;
    else {
      const int32_t b = w.blist[ib];
      take_boosted = Before::before(w.bkey[b], b, ukeys[u], u);
    }
    if (take_boosted) {
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
  if (!a.paper) {  // reference semantics: unvoted positions beyond the region have key v_p again
    for (int64_t x = maxpos + 1; x <= dirty_max; ++x) w.cur[x] = w.slot[x];
    dirty_max = maxpos;
  }
  return res;
}

template <typename Acc>
void write_history(const RerankArgs& a, const Workspace<Acc>& w, int64_t q, int64_t t) {
  int64_t* h = a.out_history + (q * (a.iters + 1) + t) * a.k;
  for (int64_t p = 0; p < a.k; ++p) h[p] = w.order[p];
}

template <typename T, typename K, typename Acc>
bool run(const RerankArgs& a, InterruptPoll poll) {
  const int64_t kq = std::min(a.k_q, a.depth);
  const int nt = a.num_threads < 1 ? 1 : a.num_threads;
  std::vector<Workspace<Acc>> ws(nt);
  std::vector<std::vector<K>> keys(nt), tmp(nt);
  const T* scores = static_cast<const T*>(a.scores);
  const bool full = a.depth == a.G;
  const double cost = static_cast<double>(a.G) + static_cast<double>(a.iters) * kq * a.K_g;
  return parallel_rows(a.Q, nt, cost, poll, [&](int64_t q, int tid) {
    Workspace<Acc>& w = ws[tid];
    if (w.acc.empty()) {
      w.allocate(a, kq);
      keys[tid].resize(a.G);
    }
    initial_order<T, K, Acc>(a, scores + q * a.score_stride, w, keys[tid], tmp[tid]);
    if (a.out_history) write_history(a, w, q, 0);
    int64_t dirty_max = -1;
    int64_t t = 1;
    for (; t <= a.iters; ++t) {
      IterResult r = full ? iterate<Acc, true>(a, kq, w, dirty_max) : iterate<Acc, false>(a, kq, w, dirty_max);
      if (a.out_history) write_history(a, w, q, t);
      const bool fixed_point = !a.paper && !r.changed;  // exact: later iterations repeat this one
      if (fixed_point || (a.early_stop && r.voters_unchanged)) break;
    }
    if (a.out_history)
      for (int64_t rest = t + 1; rest <= a.iters; ++rest) write_history(a, w, q, rest);
    const double sign = a.largest ? 1.0 : -1.0;
    for (int64_t p = 0; p < a.k; ++p) {
      a.out_values[q * a.k + p] = static_cast<float>(sign * w.cur[p]);
      a.out_indices[q * a.k + p] = w.order[p];
    }
    for (int64_t p = 0; p < a.depth; ++p) w.pos[w.order[p]] = -1;
  });
}

template <typename Acc>
bool dispatch_dtype(const RerankArgs& a, InterruptPoll poll) {
  if (a.scores_is_double) return run<double, uint64_t, Acc>(a, poll);
  return run<float, uint32_t, Acc>(a, poll);
}

}  // namespace

bool icfrr_rerank_cpu(const RerankArgs& a, InterruptPoll poll) {
  const int64_t kq = std::min(a.k_q, a.depth);
  if (vote_packing_fits<uint32_t>(kq, a.K_g)) return dispatch_dtype<uint32_t>(a, poll);
  return dispatch_dtype<uint64_t>(a, poll);
}

}  // namespace icfrr
