// Top-K collector for long scans (fused k-NN): candidates that beat a threshold are appended to a buffer (values and
// ids in separate arrays), which is cut back to the K best whenever it holds 2K; the threshold is then the K-th best
// so far. A cut is an nth_element on a copy of the float values plus one stable, branch-free compaction pass, so an
// accepted candidate costs an append and an amortised few float comparisons, instead of a sift-down through
// log2 K levels of (value, index) pairs with unpredictable branches (a bounded heap); the threshold stays
// fixed between cuts, so whole runs are filtered with one SIMD comparison per 4 values.
// Invariant (ANY_ORDER = false, as TopKCollector::push_run): candidates arrive in increasing index order, so a value
// equal to the threshold can never enter (the K items kept at or above it all have smaller indices) and the buffer
// stays in index order; a stale threshold (the K-th best at the last cut) only lets more candidates in, never fewer.
// ANY_ORDER = true (the symmetric graph build offers each row its candidates block by block, in any order): values
// equal to the threshold enter too, and cuts and the final sort break value ties by index explicitly.
// At SIMD level avx512 (simd.h) float buffers filter 16 values per comparison and append the survivors with an
// in-register compress, and a cut finds its threshold by a vectorised three-way quickselect (partition by compress)
// instead of nth_element's mispredicted branches; both choose exactly what the scalar code chooses.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define ICFRR_TOPK_AVX512 1
#define ICFRR_AVX512_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,popcnt"))) inline
#endif

#include "order.h"
#include "scratch.h"
#include "simd.h"

namespace icfrr {

#if defined(ICFRR_TOPK_AVX512)
namespace topk_avx512 {

/// Lanes of v that beat thr: PRED is _CMP_GT_OQ / _CMP_LT_OQ (strictly better) or _CMP_GE_OQ / _CMP_LE_OQ.
template <int PRED>
ICFRR_AVX512_FN __mmask16 passing(__m512 v, __m512 thr) { return _mm512_cmp_ps_mask(v, thr, PRED); }

/// Append the lanes of v (indices id0 .. id0 + 15) set in m to vals / ids (16 elements of slack); returns the count.
ICFRR_AVX512_FN int64_t append_lanes(__m512 v, uint32_t m, int64_t id0, float* vals, int64_t* ids) {
  _mm512_storeu_ps(vals, _mm512_maskz_compress_ps(static_cast<__mmask16>(m), v));
  const __m512i lo = _mm512_add_epi64(_mm512_set1_epi64(id0), _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
  const int lo_count = __builtin_popcount(m & 0xFFu);
  _mm512_storeu_si512(ids, _mm512_maskz_compress_epi64(static_cast<__mmask8>(m), lo));
  _mm512_storeu_si512(ids + lo_count, _mm512_maskz_compress_epi64(static_cast<__mmask8>(m >> 8),
                                                                  _mm512_add_epi64(lo, _mm512_set1_epi64(8))));
  return __builtin_popcount(m);
}

/// Append (x[i], first_id + i) for i in [0, n - n % 16) that pass PRED against thr, skipping index `skip`, to vals /
/// ids (each with 16 writable elements of slack past the appended ones), in index order. Returns how many.
template <int PRED>
ICFRR_AVX512_FN int64_t filter_append(const float* x, int64_t n, float thr, int64_t first_id, int64_t skip,
                                      float* vals, int64_t* ids) {
  const __m512 t = _mm512_set1_ps(thr);
  int64_t w = 0, i = 0;
  // 32 values per test: after the first few tiles nearly every pair of vectors is rejected whole
  for (; i + 32 <= n; i += 32) {
    const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
    uint32_t m = passing<PRED>(v0, t) | (static_cast<uint32_t>(passing<PRED>(v1, t)) << 16);
    if (!m) continue;
    const uint64_t off = static_cast<uint64_t>(skip - (first_id + i));
    if (off < 32) m &= ~(1u << off);
    if (m & 0xFFFFu) w += append_lanes(v0, m & 0xFFFFu, first_id + i, vals + w, ids + w);
    if (m >> 16) w += append_lanes(v1, m >> 16, first_id + i + 16, vals + w, ids + w);
  }
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    uint32_t m = passing<PRED>(v, t);
    const uint64_t off = static_cast<uint64_t>(skip - (first_id + i));
    if (off < 16) m &= ~(1u << off);
    if (m) w += append_lanes(v, m, first_id + i, vals + w, ids + w);
  }
  return w;
}

/// The k-th best (1-based; LARGEST: k-th largest) of a[0, n), by three-way quickselect: each pass splits the current
/// values around a pivot (median of three samples) into better / equal / worse with compressed stores and keeps the
/// side holding rank k. a, b, c: n + 16 floats each, all overwritten.
template <bool LARGEST>
ICFRR_AVX512_FN float kth_best(float* a, int64_t n, int64_t k, float* b, float* c) {
  constexpr int BETTER = LARGEST ? _CMP_GT_OQ : _CMP_LT_OQ;
  while (n > 48) {
    float s0 = a[n / 4], s1 = a[n / 2], s2 = a[(3 * n) / 4];
    if (s0 > s1) std::swap(s0, s1);
    if (s1 > s2) std::swap(s1, s2);
    if (s0 > s1) std::swap(s0, s1);
    const __m512 p = _mm512_set1_ps(s1);
    int64_t nb = 0, nw = 0;
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 valid = static_cast<__mmask16>(n - i >= 16 ? 0xFFFFu : (1u << (n - i)) - 1u);
      const __m512 v = _mm512_maskz_loadu_ps(valid, a + i);
      const __mmask16 better = _mm512_mask_cmp_ps_mask(valid, v, p, BETTER);
      const __mmask16 worse = _mm512_mask_cmp_ps_mask(valid, p, v, BETTER);
      _mm512_storeu_ps(b + nb, _mm512_maskz_compress_ps(better, v));
      _mm512_storeu_ps(c + nw, _mm512_maskz_compress_ps(worse, v));
      nb += __builtin_popcount(better);
      nw += __builtin_popcount(worse);
    }
    const int64_t ne = n - nb - nw;
    if (k <= nb) {
      std::swap(a, b);
      n = nb;
    } else if (k <= nb + ne) {
      return s1;
    } else {
      std::swap(a, c);
      n = nw;
      k -= nb + ne;
    }
  }
  std::nth_element(a, a + (k - 1), a + n, [](float x, float y) { return RankOrder<LARGEST>::value_before(x, y); });
  return a[k - 1];
}

/// Mask of the lanes c < min(16, n) with s[c] at least as good as thr[c] (LARGEST: s[c] >= thr[c]).
template <bool LARGEST>
ICFRR_AVX512_FN uint32_t at_least_mask(const float* s, const float* thr, int64_t n) {
  const __mmask16 valid = static_cast<__mmask16>(n >= 16 ? 0xFFFFu : (1u << n) - 1u);
  return _mm512_mask_cmp_ps_mask(valid, _mm512_maskz_loadu_ps(valid, s), _mm512_maskz_loadu_ps(valid, thr),
                                 LARGEST ? _CMP_GE_OQ : _CMP_LE_OQ);
}

/// Stable in-place compaction of (vals, ids)[0, n): keep the values at least as good as t (LARGEST: v >= t).
/// Returns the count kept. Both arrays have 16 elements of slack.
template <bool LARGEST>
ICFRR_AVX512_FN int64_t keep_at_least(float* vals, int64_t* ids, int64_t n, float t) {
  constexpr int AT_LEAST = LARGEST ? _CMP_GE_OQ : _CMP_LE_OQ;
  const __m512 tv = _mm512_set1_ps(t);
  int64_t w = 0;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 valid = static_cast<__mmask16>(n - i >= 16 ? 0xFFFFu : (1u << (n - i)) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(valid, vals + i);
    const __m512i lo = _mm512_maskz_loadu_epi64(static_cast<__mmask8>(valid), ids + i);
    const __m512i hi = _mm512_maskz_loadu_epi64(static_cast<__mmask8>(valid >> 8), ids + i + 8);
    const uint32_t m = _mm512_mask_cmp_ps_mask(valid, v, tv, AT_LEAST);
    // w <= i: every store lands at or before lanes already loaded
    _mm512_storeu_ps(vals + w, _mm512_maskz_compress_ps(static_cast<__mmask16>(m), v));
    const int lo_count = __builtin_popcount(m & 0xFFu);
    _mm512_storeu_si512(ids + w, _mm512_maskz_compress_epi64(static_cast<__mmask8>(m), lo));
    _mm512_storeu_si512(ids + w + lo_count, _mm512_maskz_compress_epi64(static_cast<__mmask8>(m >> 8), hi));
    w += __builtin_popcount(m);
  }
  return w;
}

}  // namespace topk_avx512
#endif

template <typename T, bool LARGEST, bool ANY_ORDER = false>
class TopKBuffer {
 public:
  using Order = RankOrder<LARGEST>;

  /// k: results kept; max_run: the longest run ever passed to push_run (sizes the buffer to 2k + max_run).
  TopKBuffer(int64_t k, int64_t max_run) : k_(k), cap_(2 * k + max_run) {
    // All memory is allocated here (OutOfMemory names the bytes): push_run, cut and finalize never allocate, so
    // they are safe inside a parallel region, even under a lock. work_ serves, one phase at a time, cut's three
    // value arrays (its copy of the values and the vector selection's two partitions), cut's tied ids, and
    // finalize's sort keys (uint64) followed by its order (int32).
    resize_or_throw(vals_, cap_ + kSlack, "top-k collector values");
    resize_or_throw(ids_, cap_ + kSlack, "top-k collector ids");
    const int64_t cut_bytes = 3 * (cap_ + kSlack) * static_cast<int64_t>(sizeof(T));
    const int64_t finalize_bytes = (cap_ + kSlack) * 12;
    resize_or_throw(work_, ((cut_bytes > finalize_bytes ? cut_bytes : finalize_bytes) + 7) / 8,
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
#if defined(ICFRR_TOPK_AVX512)
    if constexpr (std::is_same<T, float>::value) {
      if (simd_at_least(SimdLevel::kAVX512)) {
        constexpr int PRED = ANY_ORDER ? (LARGEST ? _CMP_GE_OQ : _CMP_LE_OQ) : (LARGEST ? _CMP_GT_OQ : _CMP_LT_OQ);
        n_ += topk_avx512::filter_append<PRED>(x, n, thr, first_id, skip, vals_.data() + n_, ids_.data() + n_);
        i = n - n % 16;
      }
    }
#endif
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

  /// The current threshold: a candidate enters only if strictly better (ANY_ORDER: at least as good).
  T threshold() const { return thr_; }

  /// Offer one candidate (ANY_ORDER collectors, which take candidates in any index order).
  void push_one(T v, int64_t id) {
    static_assert(ANY_ORDER, "push_one: candidates in any order need an ANY_ORDER collector");
    if (!admits(v, thr_)) return;
    vals_[n_] = v;
    ids_[n_] = id;
    if (++n_ >= 2 * k_) cut();
  }

  /// Write the kept pairs best first into out_vals[0..size()) and out_ids[0..size()).
  template <typename VOut, typename IOut>
  void finalize(VOut* out_vals, IOut* out_ids) {
    if (n_ > k_) cut();
    // work_: n_ sort keys (uint64, float path) then the n_ positions in output order
    uint64_t* keys_ = work_.data();
    int32_t* order_ = reinterpret_cast<int32_t*>(work_.data() + n_);
    for (int64_t m = 0; m < n_; ++m) order_[m] = static_cast<int32_t>(m);
    const T* v = vals_.data();
    const int64_t* id = ids_.data();
    if constexpr (ANY_ORDER) {
      std::sort(order_, order_ + n_,
                [v, id](int32_t a, int32_t b) { return Order::before(v[a], id[a], v[b], id[b]); });
    } else if constexpr (std::is_same<T, float>::value) {
      // One 64-bit key per value: its rank order in the high half (-0 read as +0, equal like the comparison says),
      // its position (= index order) in the low half, so a plain sort of distinct integers is the stable sort.
      for (int64_t m = 0; m < n_; ++m) {
        const float f = v[m] + 0.0f;
        uint32_t u;
        std::memcpy(&u, &f, 4);
        u ^= (u >> 31) ? 0xFFFFFFFFu : 0x80000000u;  // ascending float order as unsigned
        if (LARGEST) u = ~u;
        keys_[m] = (static_cast<uint64_t>(u) << 32) | static_cast<uint64_t>(m);
      }
      std::sort(keys_, keys_ + n_);
      for (int64_t m = 0; m < n_; ++m) order_[m] = static_cast<int32_t>(keys_[m] & 0xFFFFFFFFu);
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
    T* scratch_ = reinterpret_cast<T*>(work_.data());  // 3 (n_ + kSlack) <= 3 (cap_ + kSlack) values
    std::copy(vals_.begin(), vals_.begin() + n_, scratch_);
    T t;
    bool vector_path = false;
#if defined(ICFRR_TOPK_AVX512)
    if constexpr (std::is_same<T, float>::value) vector_path = simd_at_least(SimdLevel::kAVX512);
    if constexpr (std::is_same<T, float>::value) {
      if (vector_path) {
        T* s = scratch_;
        t = topk_avx512::kth_best<LARGEST>(s, n_, k_, s + n_ + kSlack, s + 2 * (n_ + kSlack));
      }
    }
#endif
    if (!vector_path) {
      std::nth_element(scratch_, scratch_ + (k_ - 1), scratch_ + n_, [](T a, T b) { return Order::value_before(a, b); });
      t = scratch_[k_ - 1];
    }
    int64_t better = 0, equal = 0;
    for (int64_t m = 0; m < n_; ++m) {
      better += Order::value_before(vals_[m], t);
      equal += vals_[m] == t;
    }
    int64_t equal_left = k_ - better;
#if defined(ICFRR_TOPK_AVX512)
    if constexpr (std::is_same<T, float>::value) {
      if (vector_path && equal <= equal_left) {  // every value equal to t is kept: a plain "at least t" compaction
        n_ = topk_avx512::keep_at_least<LARGEST>(vals_.data(), ids_.data(), n_, t);  // == k
        thr_ = t;
        return;
      }
    }
#endif
    int64_t max_equal_id = std::numeric_limits<int64_t>::max();
    if (ANY_ORDER && equal > equal_left) {
      int64_t* eq_ids = reinterpret_cast<int64_t*>(work_.data());  // the values' copy is no longer needed
      int64_t n_eq = 0;
      for (int64_t m = 0; m < n_; ++m)
        if (vals_[m] == t) eq_ids[n_eq++] = ids_[m];
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

  static constexpr int64_t kSlack = 16;  // writable elements past the capacity (full-vector stores)
  int64_t k_, cap_;
  int64_t n_ = 0;
  T thr_ = worst();
  std::vector<T> vals_;
  std::vector<int64_t> ids_;
  std::vector<uint64_t> work_;  ///< cut's value copies and tied ids, finalize's keys and order (see constructor)
};

}  // namespace icfrr
