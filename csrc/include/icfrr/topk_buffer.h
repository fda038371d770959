// Top-K collector for long scans (fused k-NN): candidates that beat a threshold are appended to a buffer (values and
// ids in separate arrays), which is cut back to the K best whenever it holds 2K; the threshold is then the K-th best
// so far. A cut is an nth_element on a copy of the float values plus one stable, branch-free compaction pass, so an
// accepted candidate costs an append and an amortised few float comparisons, instead of a sift-down through
// log2 K levels of (value, index) pairs with unpredictable branches (topk_select.h's heap); the threshold stays
// fixed between cuts, so whole runs are filtered with one SIMD comparison per 4 values.
// Invariant (ANY_ORDER = false, as TopKCollector::push_run): candidates arrive in increasing index order, so a value
// equal to the threshold can never enter (the K items kept at or above it all have smaller indices) and the buffer
// stays in index order; a stale threshold (the K-th best at the last cut) only lets more candidates in, never fewer.
// ANY_ORDER = true (the symmetric graph build offers each row its candidates block by block, in any order): values
// equal to the threshold enter too, and cuts and the final sort break value ties by index explicitly.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "order.h"
#include "scratch.h"

namespace icfrr {

template <typename T, bool LARGEST, bool ANY_ORDER = false>
class TopKBuffer {
 public:
  using Order = RankOrder<LARGEST>;

  /// k: results kept; max_run: the longest run ever passed to push_run (sizes the buffer to 2k + max_run).
  /// All memory is allocated here (OutOfMemory names the bytes): push_run and finalize never allocate, so they are
  /// safe inside a parallel region, even under a lock.
  TopKBuffer(int64_t k, int64_t max_run) : k_(k), cap_(2 * k + max_run) {
    resize_or_throw(vals_, cap_, "top-k collector values");
    resize_or_throw(ids_, cap_, "top-k collector ids");
    resize_or_throw(work_, (cap_ * static_cast<int64_t>(sizeof(T) > 4 ? sizeof(T) : 4) + 7) / 8,
                    "top-k collector workspace");
  }

  /// Forget everything collected so far (keeps the allocation).
  void reset() {
    n_ = 0;
    thr_ = worst();
  }

  int64_t size() const { return std::min(n_, k_); }

  /// Offer x[0..n) with indices first_id + i, skipping index `skip` (-1: none). n <= max_run; unless ANY_ORDER,
  /// indices must exceed every index offered before.
  void push_run(const T* x, int64_t n, int64_t first_id, int64_t skip) {
    int64_t i = 0;
    const T thr = thr_;
#if defined(__SSE2__)
    if constexpr (sizeof(T) == 4) {
      // 16 values per step: 4 packed compares, one movemask; most steps reject everything.
      const __m128 t = _mm_set1_ps(static_cast<float>(thr));
      for (; i + 16 <= n; i += 16) {
        const float* p = reinterpret_cast<const float*>(x + i);
        __m128 m0, m1, m2, m3;
        if (LARGEST && !ANY_ORDER) {
          m0 = _mm_cmpgt_ps(_mm_loadu_ps(p), t), m1 = _mm_cmpgt_ps(_mm_loadu_ps(p + 4), t);
          m2 = _mm_cmpgt_ps(_mm_loadu_ps(p + 8), t), m3 = _mm_cmpgt_ps(_mm_loadu_ps(p + 12), t);
        } else if (!ANY_ORDER) {
          m0 = _mm_cmplt_ps(_mm_loadu_ps(p), t), m1 = _mm_cmplt_ps(_mm_loadu_ps(p + 4), t);
          m2 = _mm_cmplt_ps(_mm_loadu_ps(p + 8), t), m3 = _mm_cmplt_ps(_mm_loadu_ps(p + 12), t);
        } else if (LARGEST) {
          m0 = _mm_cmpge_ps(_mm_loadu_ps(p), t), m1 = _mm_cmpge_ps(_mm_loadu_ps(p + 4), t);
          m2 = _mm_cmpge_ps(_mm_loadu_ps(p + 8), t), m3 = _mm_cmpge_ps(_mm_loadu_ps(p + 12), t);
        } else {
          m0 = _mm_cmple_ps(_mm_loadu_ps(p), t), m1 = _mm_cmple_ps(_mm_loadu_ps(p + 4), t);
          m2 = _mm_cmple_ps(_mm_loadu_ps(p + 8), t), m3 = _mm_cmple_ps(_mm_loadu_ps(p + 12), t);
        }
        unsigned mask = static_cast<unsigned>(_mm_movemask_ps(m0)) | (_mm_movemask_ps(m1) << 4) |
                        (_mm_movemask_ps(m2) << 8) | (_mm_movemask_ps(m3) << 12);
        while (mask) {  // only the lanes that beat the threshold
          const int64_t b = i + __builtin_ctz(mask);
          mask &= mask - 1;
          if (first_id + b != skip) {
            vals_[n_] = x[b];
            ids_[n_] = first_id + b;
            ++n_;
          }
        }
      }
    }
#endif
    for (; i < n; ++i) append(x[i], thr, first_id + i, skip);
    if (n_ >= 2 * k_) cut();
  }

  /// Write the kept pairs best first into out_vals[0..size()) and out_ids[0..size()).
  template <typename VOut, typename IOut>
  void finalize(VOut* out_vals, IOut* out_ids) {
    if (n_ > k_) cut();
    int32_t* order_ = reinterpret_cast<int32_t*>(work_.data());  // n_ <= k entries
    for (int64_t m = 0; m < n_; ++m) order_[m] = static_cast<int32_t>(m);
    const T* v = vals_.data();
    const int64_t* id = ids_.data();
    if constexpr (ANY_ORDER) {
      std::sort(order_, order_ + n_,
                [v, id](int32_t a, int32_t b) { return Order::before(v[a], id[a], v[b], id[b]); });
    } else {
      // The buffer is in increasing index order (appends follow the scan, cuts compact stably), so sorting by
      // (value, buffer position) gives the (value, smaller index) order (std::stable_sort would allocate).
      std::sort(order_, order_ + n_, [v](int32_t a, int32_t b) { return Order::before(v[a], a, v[b], b); });
    }
    for (int64_t m = 0; m < n_; ++m) {
      out_vals[m] = static_cast<VOut>(vals_[order_[m]]);
      out_ids[m] = static_cast<IOut>(ids_[order_[m]]);
    }
  }

 private:
  static T worst() { return LARGEST ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity(); }

  /// Whether v may enter against threshold thr: strictly better, or (ANY_ORDER) at least as good.
  static bool admits(T v, T thr) {
    if constexpr (ANY_ORDER) return !Order::value_before(thr, v);
    return Order::value_before(v, thr);
  }

  void append(T v, T thr, int64_t id, int64_t skip) {
    // Before the first cut the threshold is the worst value: every candidate enters (inputs are finite).
    if (admits(v, thr) && id != skip) {
      vals_[n_] = v;
      ids_[n_] = id;
      ++n_;
    }
  }

  /// Keep the k best: find the k-th best value t on a copy of the values (a float nth_element, cheap), then compact
  /// in place, stably: every value better than t, and of those equal to t the smallest indices up to k (in index
  /// order these are simply the first ones; with ANY_ORDER the cut-off index is selected explicitly).
  void cut() {
    T* scratch_ = reinterpret_cast<T*>(work_.data());  // n_ <= cap_ values
    std::copy(vals_.begin(), vals_.begin() + n_, scratch_);
    std::nth_element(scratch_, scratch_ + (k_ - 1), scratch_ + n_, [](T a, T b) { return Order::value_before(a, b); });
    const T t = scratch_[k_ - 1];
    int64_t better = 0, equal = 0;
    for (int64_t m = 0; m < n_; ++m) {
      better += Order::value_before(vals_[m], t);
      equal += vals_[m] == t;
    }
    int64_t equal_left = k_ - better;
    int64_t max_equal_id = std::numeric_limits<int64_t>::max();
    if (ANY_ORDER && equal > equal_left) {
      int32_t* eq_ids = reinterpret_cast<int32_t*>(work_.data());  // ids < 2^31 (validated); the values are done
      int64_t n_eq = 0;
      for (int64_t m = 0; m < n_; ++m)
        if (vals_[m] == t) eq_ids[n_eq++] = static_cast<int32_t>(ids_[m]);
      std::nth_element(eq_ids, eq_ids + (equal_left - 1), eq_ids + n_eq);
      max_equal_id = eq_ids[equal_left - 1];
    }
    int64_t w = 0;
    for (int64_t m = 0; m < n_; ++m) {
      const T v = vals_[m];
      const bool eq = v == t && equal_left > 0 && ids_[m] <= max_equal_id;
      const bool keep = Order::value_before(v, t) || eq;
      equal_left -= eq;
      vals_[w] = v;
      ids_[w] = ids_[m];
      w += keep;
    }
    n_ = w;  // == k
    thr_ = t;
  }

  int64_t k_, cap_;
  int64_t n_ = 0;
  T thr_ = worst();
  std::vector<T> vals_;
  std::vector<int64_t> ids_;
  std::vector<uint64_t> work_;  ///< cut's copy of the values, its tied ids, finalize's order (int32)
};

}  // namespace icfrr
