// ICFRR at full depth (depth == G) without O(G) work per iteration: the state is the initial order plus the set of
// touched items (items that received a vote in some iteration). CPU only; results bit-identical to the merge kernel
// of icfrr_rerank_core.h, which stays selectable (set_full_depth_path) and serves as its oracle in the tests.
// Oracle: icfrr_fast.reference.icfrr_rerank   Test: tests/test_icfrr_rerank_full.py
// Bench: benchmarks/bench_icfrr_full_depth.py
//
// Per query:
//   1. one O(G) bucket pass, not a comparison sort: the min/max of the scores, a coarse key
//      c(x) = trunc((x_max - x) * (2^B - 1) / (x_max - x_min)) per score (monotone: x > y => c(x) <= c(y)), and
//      two cache-friendly scatters (high bits of c into blocks, then low bits inside each block) that leave the
//      ids, ascending, in their buckets (2^B ~ G / 2 buckets). The exact order inside a bucket (score descending,
//      ties -> smaller id: the order of sort_desc_by_double) is made only when something reads it: the top of
//      the list, the slot values v_p. Counts inside an unordered bucket (an item's initial rank, #{scores > k})
//      are branch-free scans of its few items; buckets of more than kLazyMax items are ordered at once.
//   2. per iteration, O(K_q' K_g + touched + voted log voted): untouched items keep their initial relative order
//      (their key never changed: "reference" v_p of their position, monotone in position; "paper" their score),
//      so they fill, in initial order, the positions the touched items leave free: an untouched item of initial
//      rank r sits at p = u + #{i : t_pos[i] - i <= u}, u = r - #{touched ranks < r}. With f(q) the key of the
//      item at position q before the iteration (non-increasing in q), a voted item b (position p_b, new key k_b)
//      is preceded in the stable sort by the voted items before it in (key desc, position asc) order and by the
//      A(b) = P* - #{voted positions < P*} unvoted ones, P* = max(lo, min(p_b, hi)), lo = #{q : f(q) > k_b},
//      hi = #{q : f(q) >= k_b} (ties keep the current order): lo and hi come from the buckets ("paper" adds the
//      touched items' keys and removes their initial scores). An unvoted touched item with unvoted index m lands
//      at m + #{voted b : A(b) <= m}. Along the sorted voted list lo, hi, P* and A never decrease, and the voted
//      items are visited in rank or position order where it matters, so every count is a forward sweep.
//   3. the stop rules of the merge kernel: "reference" stops at the fixed point (nothing moved); early_stop when
//      no item entered the first K_q' positions.
// Memory per worker: about G (sizeof(Acc) + 40) bytes + 9 bytes per bucket + O(min(G, T K_q' K_g))
// for the touched set, allocated before the parallel region.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "icfrr_rerank.h"
#include "radix_sort.h"
#include "vote.h"

namespace icfrr {

/// Which algorithm runs a full-depth call: 0 = chosen by size (touched-set when the votes per iteration are few
/// against G), 1 = always the touched-set algorithm, 2 = always the merge kernel. Results are identical.
inline std::atomic<int>& full_depth_path_flag() {
  static std::atomic<int> flag{0};
  return flag;
}
inline void set_full_depth_path(int path) { full_depth_path_flag().store(path); }

/// True when a depth == G call should run the touched-set algorithm: forced, or the votes of one iteration
/// (K_q' K_g) are at most G / 20. Measured on random graphs, 1 thread, T = 5 (time merge / touched-set):
/// K_q' K_g / G = 0.016 -> 2.3 (G = 10^5) and about 4 (G = 10^6), 0.024 -> 1.8, 0.08 -> 0.85, 0.16 -> 0.5,
/// 0.32 -> 0.4: with many votes per item the merge kernel's O(G) scan is cheaper than per-item bookkeeping.
inline bool full_depth_use_touched(const RerankArgs& a, int64_t kq) {
  const int path = full_depth_path_flag().load(std::memory_order_relaxed);
  if (path != 0) return path == 1;
  return a.G >= 4096 && kq * a.K_g * 20 <= a.G;
}

namespace detail {
/// Bucket bits for G items: 2 to 4 items per bucket, at most 2^20 buckets.
inline int full_bucket_bits(int64_t G) {
  int bits = 0;
  while ((int64_t(1) << (bits + 1)) <= G) ++bits;  // floor(log2 G)
  bits -= 1;
  return bits < 1 ? 1 : (bits > 20 ? 20 : bits);
}
}  // namespace detail

/// Buckets up to this size are put in order by a comparison sort of (score, id) pairs; larger ones by a radix sort.
constexpr int64_t kSortPairsMax = 4096;
/// Buckets up to this size are put in order only when read (counts inside them are branch-free scans).
constexpr int64_t kLazyMax = 32;
/// Items ahead that the per-voted-item loops prefetch.
constexpr int64_t kAhead = 8;
/// Bits of the bucket index that the second (in-cache) scatter of the bucket pass resolves.
constexpr int kLowBits = 10;

/// One voted item of the current iteration.
struct FullVoted {
  double key;      ///< new key
  int32_t old;     ///< position before the iteration
  int32_t id;      ///< gallery id
  int32_t rank;    ///< initial rank when untouched before this iteration, else -1
  int32_t ti;      ///< index in the touched list when touched before this iteration, else -1
  int32_t newpos;  ///< position after the iteration
};

/// Scratch of one worker (one query at a time), allocated once before the parallel region.
template <typename Acc>
struct FullDepthScratch {
  int64_t G = 0, nb = 0, kq = 0, tcap = 0, vcap = 0;
  int bits = 0;  ///< nb = 2^bits buckets
  // O(G)
  std::vector<Acc> acc;              ///< packed votes; zero between queries
  std::vector<int32_t> tidx;         ///< id -> index in the touched list, -1 if untouched; -1 between queries
  std::vector<int32_t> init_order;   ///< the initial order (ids)
  std::vector<double> okey_store;    ///< (G) the scores in the initial order (as T: float or double)
  std::vector<double> okey_tmp_store;  ///< (G) the scores after the first scatter
  std::vector<uint32_t> h1, h2;      ///< histograms of the two scatters
  std::vector<double> pair_store;    ///< (2 min(G, kSortPairsMax)) (score, id) pairs of a bucket being sorted
  std::vector<uint32_t> ckey;        ///< coarse keys, then radix scratch of big buckets
  std::vector<uint32_t> tmp_keys;    ///< radix scratch
  std::vector<int32_t> tmp_ids;      ///< radix scratch
  // buckets
  std::vector<uint32_t> bstart;      ///< (nb + 1) first initial rank of each bucket
  std::vector<uint32_t> bfill;       ///< (nb) scatter cursors
  std::vector<uint8_t> bsorted;      ///< (nb) bucket in exact order
  // touched set, sorted by current position (t_*) and by initial rank (r_*); n_* / r2_*: rebuild buffers
  std::vector<int32_t> t_pos, t_id, n_pos, n_id;
  std::vector<double> t_key, n_key;  ///< "paper": accumulated key
  std::vector<int32_t> t_voted;      ///< 1 + index in `voted` when voted in the current iteration, else 0
  std::vector<int32_t> r_rank, r2_rank;
  std::vector<double> r_x, r2_x;     ///< initial score at r_rank (non-increasing)
  // voted items of the current iteration
  std::vector<FullVoted> voted, voted2;  ///< then sorted by (key desc, old position asc)
  std::vector<int32_t> pord;         ///< indices into `voted` in old-position order, then in sorted order
  std::vector<uint32_t> sort_coarse, sort_tmp;  ///< radix scratch of the voted sort
  std::vector<int32_t> sort_tmp_idx;
  std::vector<Acc> vvotes;
  std::vector<int32_t> vold;         ///< old positions, ascending
  std::vector<int32_t> vA;           ///< unvoted items before each voted item (non-decreasing)
  std::vector<uint32_t> fresh_key, fresh_tmp_key;  ///< initial ranks of the newly touched, radix-sorted
  std::vector<int32_t> fresh_idx, fresh_tmp_idx;    ///< their indices in `voted`
  std::vector<int32_t> voters;       ///< (K_q')

  FullDepthScratch(const RerankArgs& a, int64_t kq_) : G(a.G), kq(kq_) {
    bits = detail::full_bucket_bits(G);
    nb = int64_t(1) << bits;
    const int64_t per_iter = kq * a.K_g;  // < 2^55
    vcap = std::min(G, per_iter);
    tcap = (a.iters > 0 && per_iter > G / a.iters) ? G : std::max<int64_t>(1, a.iters * per_iter);
    tcap = std::min(tcap, G);
    acc.assign(G, 0);
    tidx.assign(G, -1);
    init_order.resize(G);
    okey_store.resize(G);
    okey_tmp_store.resize(G);
    h1.resize((int64_t(1) << kLowBits) + 2);
    h2.resize((int64_t(1) << kLowBits) + 2);
    pair_store.resize(2 * std::min<int64_t>(G, kSortPairsMax));
    ckey.resize(G);
    tmp_keys.resize(G);
    tmp_ids.resize(G);
    bstart.resize(nb + 1);
    bfill.resize(nb);
    bsorted.resize(nb);
    for (auto* v : {&t_pos, &t_id, &n_pos, &n_id, &r_rank, &r2_rank}) v->resize(tcap);
    for (auto* v : {&t_key, &n_key, &r_x, &r2_x}) v->resize(tcap);
    t_voted.assign(tcap, 0);
    voted.resize(vcap + 1);  // + 1: the branchless collection writes one slot past the last voted item
    voted2.resize(vcap + 1);
    for (auto* v : {&sort_coarse, &sort_tmp}) v->resize(vcap);
    for (auto* v : {&pord, &sort_tmp_idx}) v->resize(vcap);
    vvotes.resize(vcap + 1);
    vold.resize(vcap);
    vA.resize(vcap);
    for (auto* v : {&fresh_key, &fresh_tmp_key}) v->resize(vcap);
    for (auto* v : {&fresh_idx, &fresh_tmp_idx}) v->resize(vcap);
    voters.resize(kq);
  }
};

namespace detail {

/// First index i in [from, n) with !pred(a[i]), given pred true on a prefix of [0, n) that reaches at least
/// `from`: exponential steps from `from`, then a binary search (cheap when the answer is near `from`).
template <typename K, typename Pred>
inline int64_t gallop(const K* a, int64_t from, int64_t n, Pred pred) {
  int64_t lo = from, step = 1;  // pred(a[i]) for i < lo
  int64_t hi = from;
  while (hi < n && pred(a[hi])) {
    lo = hi + 1;
    hi = lo + step;
    step *= 2;
  }
  if (hi > n) hi = n;
  return std::partition_point(a + lo, a + hi, pred) - a;
}

/// The per-query algorithm over one worker's scratch. T: float or double scores.
template <typename T, typename Acc>
class FullDepthQuery {
 public:
  FullDepthQuery(const RerankArgs& a, int64_t q, FullDepthScratch<Acc>& w)
      : a_(a), q_(q), w_(w), s_(static_cast<const T*>(a.scores) + q * a.score_stride),
        sign_(a.largest ? T(1) : T(-1)), G_(a.G), kq_(w.kq), okey_(reinterpret_cast<T*>(w.okey_store.data())) {}

  /// Returns false when hooks.stop() ended the query (its outputs are then not written).
  template <typename Hooks>
  bool run(Hooks& hooks) {
    initial_order();
    if (a_.out_history) write_history(0);
    int64_t t = 1;
    bool ran = false, stopped = false;
    for (; t <= a_.iters; ++t) {
      if ((stopped = hooks.stop())) break;
      bool changed = false, voters_unchanged = false;
      iterate(changed, voters_unchanged, hooks);
      ran = true;
      if (a_.out_history) write_history(t);
      if ((!a_.paper && !changed) || (a_.early_stop && voters_unchanged)) break;
    }
    if (a_.out_history && !stopped)
      for (int64_t rest = t + 1; rest <= a_.iters; ++rest) write_history(rest);
    if (!stopped) write_output(ran);
    for (int64_t i = 0; i < M_; ++i) w_.tidx[w_.t_id[i]] = -1;
    return !stopped;
  }

 private:
  const RerankArgs& a_;
  const int64_t q_;
  FullDepthScratch<Acc>& w_;
  const T* s_;
  const T sign_;
  const int64_t G_, kq_;
  T* okey_;        ///< (G) okey_[r] = v_r, the (signed) score at initial rank r: non-increasing
  int64_t M_ = 0;  ///< touched items
  int64_t V_ = 0;  ///< voted items of the last iteration
  int64_t nbq_ = 1;  ///< buckets of this query (1 when the score range cannot be scaled)
  double kmax_ = 0, scale_ = 0, top_ = 0;

  /// Bucket of a score: coarse key c(x) = trunc((kmax - x) * scale), monotone (x > y => c(x) <= c(y)), as in
  /// sort_desc_by_double.
  uint32_t bucket_of(double v) const {
    if (nbq_ == 1) return 0;
    const double c = (kmax_ - v) * scale_;
    return c < top_ ? static_cast<uint32_t>(c) : static_cast<uint32_t>(top_);
  }

  double x(int32_t id) const { return static_cast<double>(static_cast<T>(sign_ * s_[id])); }

  /// Initial rank of an item: its bucket's start plus the items of the bucket before it in (score desc, id asc)
  /// order (a branch-free count: the bucket need not be in order).
  int32_t initial_rank(int32_t id) const {
    const T v = static_cast<T>(sign_ * s_[id]);
    const uint32_t b = bucket_of(static_cast<double>(v));
    const int32_t* order = w_.init_order.data();
    const int64_t lo = w_.bstart[b], hi = w_.bstart[b + 1];
    if (w_.bsorted[b]) {
      int64_t l = lo, h = hi;
      while (l < h) {
        const int64_t mid = (l + h) / 2;
        if (okey_[mid] > v || (okey_[mid] == v && order[mid] < id)) l = mid + 1;
        else h = mid;
      }
      return static_cast<int32_t>(l);
    }
    int64_t before = 0;
    for (int64_t i = lo; i < hi; ++i) before += (okey_[i] > v) | ((okey_[i] == v) & (order[i] < id));
    return static_cast<int32_t>(lo + before);
  }

  /// #{items : score > v} and #{items : score >= v} (v <= the largest score): the counts of the buckets before
  /// v's bucket plus a count inside it.
  void count_initial(double v, int64_t& gt, int64_t& ge) const {
    const uint32_t b = bucket_of(v);
    const int64_t lo = w_.bstart[b], hi = w_.bstart[b + 1];
    if (w_.bsorted[b]) {
      const T* k = okey_;
      gt = std::partition_point(k + lo, k + hi, [v](T key) { return static_cast<double>(key) > v; }) - k;
      ge = std::partition_point(k + gt, k + hi, [v](T key) { return static_cast<double>(key) >= v; }) - k;
      return;
    }
    int64_t n_gt = 0, n_ge = 0;
    for (int64_t i = lo; i < hi; ++i) {
      const double key = static_cast<double>(okey_[i]);
      n_gt += key > v;
      n_ge += key >= v;
    }
    gt = lo + n_gt;
    ge = lo + n_ge;
  }

  /// Put bucket b in exact order (once per query).
  void ensure_sorted(int64_t b) {
    if (w_.bsorted[b]) return;
    w_.bsorted[b] = 1;
    const int64_t lo = w_.bstart[b], n = w_.bstart[b + 1] - lo;
    if (n > 1) sort_bucket(lo, n);
  }

  /// v_r of a bucket that may be unordered: the score with #{scores > v} <= r - start < #{scores >= v} among the
  /// bucket's items (branch-free counts; the buckets left unordered hold at most kLazyMax items).
  T value_at_rank(int64_t b, int64_t r) const {
    const int64_t lo = w_.bstart[b], hi = w_.bstart[b + 1], t = r - lo;
    if (w_.bsorted[b]) return okey_[r];
    const T* k = okey_;
    for (int64_t i = lo; i < hi; ++i) {
      int64_t gt = 0, ge = 0;
      for (int64_t j = lo; j < hi; ++j) {
        gt += k[j] > k[i];
        ge += k[j] >= k[i];
      }
      if (gt <= t && t < ge) return k[i];
    }
    return okey_[r];  // not reached: some score of the bucket has rank r
  }

  /// A forward cursor over initial ranks: seek(r) for non-decreasing r finds the bucket holding rank r and, when
  /// ORDER, puts it in exact order.
  struct RankCursor {
    FullDepthQuery* qy;
    int64_t b = 0;
    template <bool ORDER = true>
    void seek(int64_t r) {
      const uint32_t* bs = qy->w_.bstart.data();
      if (bs[b + 1] <= r) {  // gallop forward to the bucket holding r
        int64_t lo = b + 1, step = 1, hi = b + 1;
        while (hi < qy->nbq_ && bs[hi + 1] <= r) {
          lo = hi + 1;
          hi = lo + step;
          step *= 2;
        }
        if (hi > qy->nbq_ - 1) hi = qy->nbq_ - 1;
        // the first bucket in [lo, hi] whose end exceeds r
        while (lo < hi) {
          const int64_t mid = (lo + hi) / 2;
          if (bs[mid + 1] <= r) lo = mid + 1;
          else hi = mid;
        }
        b = lo;
      }
      if (ORDER) qy->ensure_sorted(b);
    }
  };

  // ---- step 1: the initial order by one bucket pass ----
  void initial_order() {
    double kmin = __builtin_huge_val(), kmax = -__builtin_huge_val();
    for (int64_t j = 0; j < G_; ++j) {
      const double v = x(static_cast<int32_t>(j));
      kmin = v < kmin ? v : kmin;
      kmax = v > kmax ? v : kmax;
    }
    const double top = static_cast<double>(w_.nb - 1);
    const double range = kmax - kmin;
    const double scale = top / range;
    const bool scalable = range > 0.0 && range < __builtin_huge_val() && scale > 0.0 && scale < __builtin_huge_val();
    const int64_t nbq = scalable ? w_.nb : 1;
    nbq_ = nbq;
    kmax_ = kmax;
    scale_ = scale;
    top_ = top;
    uint32_t* bstart = w_.bstart.data();
    int32_t* order = w_.init_order.data();
    T* okey = okey_;
    std::memset(w_.bsorted.data(), 0, nbq);
    if (nbq == 1) {  // one bucket: the exact sort of everything
      for (int64_t j = 0; j < G_; ++j) {
        order[j] = static_cast<int32_t>(j);
        okey[j] = static_cast<T>(sign_ * s_[j]);
      }
      bstart[0] = 0;
      bstart[1] = static_cast<uint32_t>(G_);
      ensure_sorted(0);
      return;
    }
    // Two cache-friendly scatters instead of one 2^B-way scatter: by the high bits of the bucket into blocks,
    // then inside each block (in cache) by the low bits. Ids stay ascending inside each bucket; buckets of more
    // than kLazyMax items are put in order now, the others when something reads their order.
    const int low = w_.bits < kLowBits ? w_.bits : kLowBits;
    const uint32_t low_mask = (1u << low) - 1u;
    const int64_t n1 = nbq >> low;
    uint32_t* h1 = w_.h1.data();
    uint32_t* h2 = w_.h2.data();
    uint32_t* ckey = w_.ckey.data();
    std::memset(h1, 0, (n1 + 1) * sizeof(uint32_t));
    for (int64_t j = 0; j < G_; ++j) {
      const uint32_t c = bucket_of(x(static_cast<int32_t>(j)));
      ckey[j] = c;
      ++h1[(c >> low) + 1];
    }
    for (int64_t h = 0; h < n1; ++h) h1[h + 1] += h1[h];
    uint32_t* fill = w_.bfill.data();
    for (int64_t h = 0; h < n1; ++h) fill[h] = h1[h];
    uint32_t* tc = w_.tmp_keys.data();
    int32_t* tid = w_.tmp_ids.data();
    T* tkey = reinterpret_cast<T*>(w_.okey_tmp_store.data());
    for (int64_t j = 0; j < G_; ++j) {  // ids stay ascending inside each block
      const uint32_t c = ckey[j];
      const uint32_t d = fill[c >> low]++;
      tc[d] = c;
      tid[d] = static_cast<int32_t>(j);
      tkey[d] = static_cast<T>(sign_ * s_[j]);
    }
    const int64_t n2 = int64_t(1) << low;
    for (int64_t h = 0; h < n1; ++h) {
      const int64_t s0 = h1[h], e0 = h1[h + 1];
      std::memset(h2, 0, (n2 + 1) * sizeof(uint32_t));
      for (int64_t i = s0; i < e0; ++i) ++h2[(tc[i] & low_mask) + 1];
      uint32_t* bs = bstart + (h << low);
      for (int64_t l = 0; l < n2; ++l) {
        bs[l] = static_cast<uint32_t>(s0) + h2[l];
        h2[l + 1] += h2[l];
        fill[l] = bs[l];
      }
      for (int64_t i = s0; i < e0; ++i) {
        const uint32_t d = fill[tc[i] & low_mask]++;
        okey[d] = tkey[i];
        order[d] = tid[i];
      }
    }
    bstart[nbq] = static_cast<uint32_t>(G_);
    for (int64_t b = 0; b < nbq; ++b) {
      const int64_t n = bstart[b + 1] - bstart[b];
      if (n > kLazyMax) ensure_sorted(b);
    }
  }

  /// Exact order inside one bucket: score descending, ties -> smaller id (the ids arrive ascending).
  void sort_bucket(int64_t lo, int64_t n) {
    int32_t* it = w_.init_order.data() + lo;
    T* k = okey_ + lo;
    if (n <= 16) {
      for (int64_t i = 1; i < n; ++i) {  // stable insertion sort, descending
        const int32_t id = it[i];
        const T key = k[i];
        int64_t y = i;
        for (; y > 0 && k[y - 1] < key; --y) {
          it[y] = it[y - 1];
          k[y] = k[y - 1];
        }
        it[y] = id;
        k[y] = key;
      }
    } else if (n <= kSortPairsMax) {  // (score desc, id asc) is a total order: any comparison sort is exact
      auto* pairs = reinterpret_cast<std::pair<T, int32_t>*>(w_.pair_store.data());
      for (int64_t i = 0; i < n; ++i) pairs[i] = {k[i], it[i]};
      std::sort(pairs, pairs + n, [](const std::pair<T, int32_t>& l, const std::pair<T, int32_t>& r) {
        return l.first != r.first ? l.first > r.first : l.second < r.second;
      });
      for (int64_t i = 0; i < n; ++i) {
        k[i] = pairs[i].first;
        it[i] = pairs[i].second;
      }
    } else {  // a crowded bucket: the stable radix sort of the merge kernel
      double bmin = __builtin_huge_val(), bmax = -__builtin_huge_val();
      for (int64_t i = 0; i < n; ++i) {
        const double v = static_cast<double>(k[i]);
        bmin = v < bmin ? v : bmin;
        bmax = v > bmax ? v : bmax;
      }
      sort_desc_by_double(it, n, w_.ckey.data(), w_.tmp_keys.data(), w_.tmp_ids.data(),
                          [this](int32_t id) { return x(id); }, bmin, bmax);
      for (int64_t i = 0; i < n; ++i) k[i] = static_cast<T>(sign_ * s_[it[i]]);
    }
  }

  /// Calls emit(p, id, touched index or -1) for the positions p in [0, m) of the current order, in order.
  template <typename Emit>
  void walk(int64_t m, Emit&& emit) {
    int64_t ti = 0, r = 0;
    const int32_t* order = w_.init_order.data();
    RankCursor cur{this};
    for (int64_t p = 0; p < m; ++p) {
      if (ti < M_ && w_.t_pos[ti] == p) {
        emit(p, w_.t_id[ti], ti);
        ++ti;
        continue;
      }
      int32_t id;
      do {
        cur.seek(r);
        id = order[r++];
      } while (w_.tidx[id] >= 0);
      emit(p, id, int64_t(-1));
    }
  }

  void write_history(int64_t t) {
    int64_t* h = a_.out_history + (q_ * (a_.iters + 1) + t) * a_.k;
    walk(a_.k, [h](int64_t p, int32_t id, int64_t) { h[p] = id; });
  }

  // ---- step 2: one iteration ----
  template <typename Hooks>
  void iterate(bool& changed, bool& voters_unchanged, Hooks& hooks) {
    FullDepthScratch<Acc>& w = w_;
    const int64_t kq = kq_, K_g = a_.K_g;
    const T* okey = okey_;
    int32_t* voters = w.voters.data();
    walk(kq, [voters](int64_t p, int32_t id, int64_t) { voters[p] = id; });
    hooks.voters(voters, kq);  // e.g. the CPU driver's graph-row check
    // 2a. votes (exact packed integers), then each voted id once, clearing acc as it goes
    Acc* acc = w.acc.data();
    for (int64_t p = 0; p < kq; ++p) {
      const int32_t* row = a_.neighbors + static_cast<int64_t>(voters[p]) * a_.nbr_stride;
      Acc inc = vote_increment<Acc>(0);
      for (int64_t r = 0; r < K_g; ++r, ++inc) acc[row[r]] += inc;
    }
    int64_t V = 0;
    for (int64_t p = 0; p < kq; ++p) {
      const int32_t* row = a_.neighbors + static_cast<int64_t>(voters[p]) * a_.nbr_stride;
      for (int64_t r = 0; r < K_g; ++r) {
        const int32_t j = row[r];
        const Acc v = acc[j];
        acc[j] = 0;
        w.voted[V].id = j;
        w.vvotes[V] = v;
        V += (v != 0);
      }
    }
    // 2b. position of every voted item. Touched: from the touched list. Untouched (initial rank r, in rank
    //     order): u = r - #{touched ranks < r} untouched items precede it, so it sits at the u-th position the
    //     touched items leave free: p = u + #{i : t_pos[i] - i <= u}; both counts by forward sweeps.
    int64_t nf = 0;
    for (int64_t x_ = 0; x_ < V; ++x_) {
      if (x_ + kAhead < V) {
        const int32_t later = w.voted[x_ + kAhead].id;
        __builtin_prefetch(&w.tidx[later]);
        __builtin_prefetch(&s_[later]);
      }
      FullVoted& e = w.voted[x_];
      const int32_t ti = w.tidx[e.id];
      const Acc v = w.vvotes[x_];
      e.key = vote_delta(vote_count(v), vote_rank_sum(v), G_, kq);  // the key once the base is known
      e.ti = ti;
      if (ti >= 0) {
        w.t_voted[ti] = static_cast<int32_t>(x_ + 1);
        e.rank = -1;
        e.old = w.t_pos[ti];
      } else {
        const int32_t r = initial_rank(e.id);
        e.rank = r;
        w.fresh_key[nf] = static_cast<uint32_t>(r);
        w.fresh_idx[nf] = static_cast<int32_t>(x_);
        ++nf;
      }
    }
    radix_sort_pairs(w.fresh_key.data(), w.fresh_idx.data(), nf, w.fresh_tmp_key.data(), w.fresh_tmp_idx.data());
    {
      int64_t ir = 0, it = 0;
      const int32_t* rr = w.r_rank.data();
      const int32_t* tp = w.t_pos.data();
      for (int64_t f = 0; f < nf; ++f) {
        FullVoted& e = w.voted[w.fresh_idx[f]];
        const int32_t r = e.rank;
        ir = gallop(rr, ir, M_, [r](int32_t v) { return v < r; });
        const int64_t u = r - ir;
        it = gallop_free(tp, it, u);
        e.old = static_cast<int32_t>(u + it);
      }
    }
    // 2c. the voted items in old-position order (touched ones in list order merged with the fresh ones in rank
    //     order); their keys (base + beta delta; "reference" base v_p read with a forward cursor); then the
    //     stable radix sort by key, descending: (key desc, position asc).
    {
      int64_t i = 0, f = 0, o = 0;
      for (; i < M_; ++i) {
        const int32_t xv = w.t_voted[i] - 1;
        if (xv < 0) continue;
        const int32_t pos = w.t_pos[i];
        for (; f < nf && w.voted[w.fresh_idx[f]].old < pos; ++f, ++o) w.pord[o] = w.fresh_idx[f];
        w.pord[o++] = xv;
      }
      for (; f < nf; ++f, ++o) w.pord[o] = w.fresh_idx[f];
    }
    double kmin = __builtin_huge_val(), kmax = -__builtin_huge_val();  // range of the voted keys
    RankCursor cur{this};
    for (int64_t x_ = 0; x_ < V; ++x_) {
      if (x_ + kAhead < V) {
        const FullVoted& later = w.voted[w.pord[x_ + kAhead]];
        __builtin_prefetch(&later);
        if (x_ + 2 * kAhead < V) __builtin_prefetch(&w.voted[w.pord[x_ + 2 * kAhead]]);
        __builtin_prefetch(a_.paper ? static_cast<const void*>(&s_[later.id]) : static_cast<const void*>(&okey_[later.old]));
      }
      FullVoted& e = w.voted[w.pord[x_]];
      w.vold[x_] = e.old;
      double base;
      if (a_.paper) {
        base = e.ti >= 0 ? w.t_key[e.ti] : x(e.id);
      } else {
        cur.seek<false>(e.old);
        base = static_cast<double>(value_at_rank(cur.b, e.old));
      }
      e.key = vote_key(base, a_.beta, e.key);
      kmin = e.key < kmin ? e.key : kmin;
      kmax = e.key > kmax ? e.key : kmax;
    }
    {
      const FullVoted* vd = w.voted.data();
      sort_desc_by_double(w.pord.data(), V, w.sort_coarse.data(), w.sort_tmp.data(), w.sort_tmp_idx.data(),
                          [vd](int32_t i) { return vd[i].key; }, kmin, kmax);
      for (int64_t x_ = 0; x_ < V; ++x_) w.voted2[x_] = vd[w.pord[x_]];
      w.voted.swap(w.voted2);  // voted2: the unsorted list, read by 2f through fresh_idx
    }
    // 2d. new positions of the voted items. Along the sorted voted list lo, hi and P* never decrease, so every
    //     count is a forward sweep.
    const int32_t* vold = w.vold.data();
    changed = false;
    int64_t n_in = 0;
    int64_t gt_t = 0, ge_t = 0, gt_r = 0, ge_r = 0, nv = 0;
    const double* tk = w.t_key.data();
    const double* rx = w.r_x.data();
    for (int64_t x_ = 0; x_ < V; ++x_) {
      if (x_ + 2 * kAhead < V && w.voted[x_ + 2 * kAhead].key <= kmax_)  // two stages: bucket start, its scores
        __builtin_prefetch(&w.bstart[bucket_of(w.voted[x_ + 2 * kAhead].key)]);
      if (x_ + kAhead < V && w.voted[x_ + kAhead].key <= kmax_)
        __builtin_prefetch(&okey_[w.bstart[bucket_of(w.voted[x_ + kAhead].key)]]);
      FullVoted& e = w.voted[x_];
      const double k = e.key;
      int64_t lo = 0, hi = 0;
      if (k <= kmax_) count_initial(k, lo, hi);
      if (a_.paper) {  // keys of the positions: touched items' keys and untouched items' scores
        gt_t = gallop(tk, gt_t, M_, [k](double v) { return v > k; });
        ge_t = gallop(tk, std::max(ge_t, gt_t), M_, [k](double v) { return v >= k; });
        gt_r = gallop(rx, gt_r, M_, [k](double v) { return v > k; });
        ge_r = gallop(rx, std::max(ge_r, gt_r), M_, [k](double v) { return v >= k; });
        lo += gt_t - gt_r;
        hi += ge_t - ge_r;
      }
      const int64_t pstar = std::max<int64_t>(lo, std::min<int64_t>(e.old, hi));
      const int32_t ps = static_cast<int32_t>(pstar);
      nv = gallop(vold, nv, V, [ps](int32_t v) { return v < ps; });
      const int64_t A = pstar - nv;
      w.vA[x_] = static_cast<int32_t>(A);
      const int64_t np = x_ + A;
      e.newpos = static_cast<int32_t>(np);
      changed |= np != e.old;
      n_in += (np < kq) & (e.old >= kq);
    }
    voters_unchanged = n_in == 0;
    // 2e. the touched list in new position order: unvoted touched items shift down by the voted items that pass
    //     them; merged with the voted items (both sequences are in new-position order)
    int64_t out = 0, xv = 0, vo = 0, ab = 0;
    auto emit = [&w, &out](int32_t pos, int32_t id, double key) {
      w.n_pos[out] = pos;
      w.n_id[out] = id;
      w.n_key[out] = key;
      w.tidx[id] = static_cast<int32_t>(out);
      ++out;
    };
    for (int64_t i = 0; i < M_; ++i) {
      if (w.t_voted[i]) {
        w.t_voted[i] = 0;
        continue;
      }
      const int64_t qpos = w.t_pos[i];
      while (vo < V && vold[vo] < qpos) ++vo;
      const int64_t m = qpos - vo;  // index among the unvoted items
      while (ab < V && w.vA[ab] <= m) ++ab;
      const int32_t np = static_cast<int32_t>(m + ab);
      for (; xv < V && w.voted[xv].newpos < np; ++xv) emit(w.voted[xv].newpos, w.voted[xv].id, w.voted[xv].key);
      emit(np, w.t_id[i], w.t_key[i]);
    }
    for (; xv < V; ++xv) emit(w.voted[xv].newpos, w.voted[xv].id, w.voted[xv].key);
    // 2f. the newly touched items (in rank order: fresh_key) join the initial-rank list
    int64_t i = 0, f = 0, o = 0;
    while (i < M_ || f < nf) {
      const bool take_old = f >= nf || (i < M_ && w.r_rank[i] < static_cast<int32_t>(w.fresh_key[f]));
      const int32_t r = take_old ? w.r_rank[i] : static_cast<int32_t>(w.fresh_key[f]);
      w.r2_rank[o] = r;
      w.r2_x[o] = take_old ? w.r_x[i] : x(w.voted2[w.fresh_idx[f]].id);
      i += take_old;
      f += !take_old;
      ++o;
    }
    w.t_pos.swap(w.n_pos);
    w.t_id.swap(w.n_id);
    w.t_key.swap(w.n_key);
    w.r_rank.swap(w.r2_rank);
    w.r_x.swap(w.r2_x);
    M_ = out;
    V_ = V;
  }

  /// #{i : t_pos[i] - i <= u} (non-decreasing in u), galloping forward from `from` (a count for a smaller u).
  int64_t gallop_free(const int32_t* tp, int64_t from, int64_t u) const {
    int64_t lo = from, step = 1, hi = from;
    while (hi < M_ && tp[hi] - hi <= u) {
      lo = hi + 1;
      hi = lo + step;
      step *= 2;
    }
    if (hi > M_) hi = M_;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (tp[mid] - mid <= u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  // ---- output: indices and final keys of the first k positions ----
  void write_output(bool ran) {
    const double sign = a_.largest ? 1.0 : -1.0;
    // values in the scores' dtype (float32, or float64 when values_is_double)
    auto put = [this](int64_t p, double v) {
      if (a_.values_is_double) static_cast<double*>(a_.out_values)[q_ * a_.k + p] = v;
      else static_cast<float*>(a_.out_values)[q_ * a_.k + p] = static_cast<float>(v);
    };
    int64_t* oi = a_.out_indices + q_ * a_.k;
    if (a_.paper) {  // the accumulated key of each item
      walk(a_.k, [&](int64_t p, int32_t id, int64_t ti) {
        oi[p] = id;
        put(p, sign * (ti >= 0 ? w_.t_key[ti] : x(id)));
      });
      return;
    }
    // "reference": the key of the last iteration, v at the item's position before it (+ its boost when voted)
    int64_t xv = 0, vo = 0, qn = 0;
    const int64_t V = ran ? V_ : 0;
    RankCursor cur{this};
    walk(a_.k, [&](int64_t p, int32_t id, int64_t) {
      oi[p] = id;
      double key;
      if (xv < V && w_.voted[xv].newpos == p) {
        key = w_.voted[xv++].key;
      } else {
        while (vo < V && w_.vold[vo] == qn) {
          ++qn;
          ++vo;
        }
        cur.seek(qn);
        key = static_cast<double>(okey_[qn++]);
      }
      put(p, sign * key);
    });
  }
};

}  // namespace detail

/// Re-rank query q at full depth (a.depth == a.G) with the touched-set algorithm; same outputs as rerank_query,
/// and the same hooks (see NoQueryHooks in icfrr_rerank_core.h). Returns false when hooks.stop() ended it.
template <typename T, typename Acc, typename Hooks>
bool rerank_query_full(const RerankArgs& a, int64_t q, FullDepthScratch<Acc>& w, Hooks hooks) {
  return detail::FullDepthQuery<T, Acc>(a, q, w).run(hooks);
}

}  // namespace icfrr
