// Top-K collector for long scans (fused k-NN): candidates that beat a threshold are appended to a buffer, which is
// cut back to the K best by partial selection whenever it holds 2K; the threshold is then the K-th best so far.
// Compared with a bounded heap (topk_select.h) an accepted candidate costs an append plus an amortised share of one
// nth_element (a few comparisons) instead of a sift-down through log2 K levels with unpredictable branches, and the
// threshold stays fixed between cuts, so whole runs are filtered with one SIMD comparison per 4 values.
// Invariant (same as TopKCollector::push_run): candidates arrive in increasing index order, so a value equal to the
// threshold can never enter (the K items already kept at or above it all have smaller indices); a stale threshold
// (the K-th best at the last cut) only lets more candidates in, never fewer.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "order.h"

namespace icfrr {

template <typename T, bool LARGEST>
class TopKBuffer {
 public:
  using Order = RankOrder<LARGEST>;
  struct Entry {
    T v;
    int64_t id;
  };

  /// k: results kept; max_run: the longest run ever passed to push_run (sizes the buffer to 2k + max_run).
  TopKBuffer(int64_t k, int64_t max_run) : k_(k), cap_(2 * k + max_run) { buf_.resize(cap_); }

  /// Forget everything collected so far (keeps the allocation).
  void reset() {
    n_ = 0;
    thr_ = worst();
  }

  int64_t size() const { return std::min(n_, k_); }

  /// Offer x[0..n) with indices first_id + i, skipping index `skip` (-1: none). n <= max_run; indices must exceed
  /// every index offered before.
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
        if (LARGEST) {
          m0 = _mm_cmpgt_ps(_mm_loadu_ps(p), t), m1 = _mm_cmpgt_ps(_mm_loadu_ps(p + 4), t);
          m2 = _mm_cmpgt_ps(_mm_loadu_ps(p + 8), t), m3 = _mm_cmpgt_ps(_mm_loadu_ps(p + 12), t);
        } else {
          m0 = _mm_cmplt_ps(_mm_loadu_ps(p), t), m1 = _mm_cmplt_ps(_mm_loadu_ps(p + 4), t);
          m2 = _mm_cmplt_ps(_mm_loadu_ps(p + 8), t), m3 = _mm_cmplt_ps(_mm_loadu_ps(p + 12), t);
        }
        const int mask = _mm_movemask_ps(_mm_or_ps(_mm_or_ps(m0, m1), _mm_or_ps(m2, m3)));
        if (mask == 0) continue;
        for (int64_t b = i; b < i + 16; ++b) append(x[b], thr, first_id + b, skip);
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
    std::sort(buf_.begin(), buf_.begin() + n_, less);
    for (int64_t m = 0; m < n_; ++m) {
      out_vals[m] = static_cast<VOut>(buf_[m].v);
      out_ids[m] = static_cast<IOut>(buf_[m].id);
    }
  }

 private:
  static bool less(const Entry& a, const Entry& b) { return Order::before(a.v, a.id, b.v, b.id); }

  static T worst() { return LARGEST ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity(); }

  void append(T v, T thr, int64_t id, int64_t skip) {
    // Before the first cut the threshold is the worst value: every candidate enters (inputs are finite).
    if (Order::value_before(v, thr) && id != skip) buf_[n_++] = Entry{v, id};
  }

  void cut() {
    std::nth_element(buf_.begin(), buf_.begin() + (k_ - 1), buf_.begin() + n_, less);
    n_ = k_;
    thr_ = buf_[k_ - 1].v;  // the K-th best so far (nth_element puts it at k - 1, the better ones before it)
  }

  int64_t k_, cap_;
  int64_t n_ = 0;
  T thr_ = worst();
  std::vector<Entry> buf_;
};

}  // namespace icfrr
