// CPU driver of dense_topk (see include/icfrr/dense_topk.h): rows in parallel, each by threshold selection.
//
// Per row of C values, top k: (1) estimate a threshold from a sample of 512 values (32 runs of 16), generous enough
// that at least k values pass it with high probability; (2) one branchless pass collects the (value, column) pairs
// that pass, in column order; (3) a stable radix sort of those by value gives the exact top k with ties to the
// smaller column (RankOrder's rule). If fewer than k
// pass (an unlucky estimate), the row is redone with every column as a candidate, so the result is exact always:
// the true top k all rank at or before the k-th best value, hence pass any threshold that >= k values pass.
// Cost ~ C (filter) + 4 c (c ~ 2k candidates, 8-bit radix passes) per row, no heap.
#include "icfrr/dense_topk.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "icfrr/order.h"
#include "icfrr/parallel.h"
#include "icfrr/radix_sort.h"
#include "icfrr/simd.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace icfrr {
namespace {

template <typename T>
struct RowScratch {
  std::vector<T> sample;
  std::vector<T> cand_v;                 // candidate values, in column order
  std::vector<int32_t> cand_i;           // their columns (C < 2^31, validated)
  std::vector<uint32_t> keys, tmp_keys;  // radix keys (32-bit, or the high half for double)
  std::vector<int32_t> tmp_i;
};

/// Scalar filter: (value, column) of every x[c] that does not rank after thr, in column order; returns the count.
template <typename T, bool LARGEST>
int64_t filter_scalar(const T* x, int64_t C, T thr, T* cv, int32_t* ci) {
  int64_t n = 0;
  for (int64_t c = 0; c < C; ++c) {
    const T v = x[c];
    cv[n] = v;
    ci[n] = static_cast<int32_t>(c);
    n += static_cast<int64_t>(!RankOrder<LARGEST>::value_before(thr, v));
  }
  return n;
}

#if defined(__x86_64__)
/// Lane permutations for a left-packing "compress" with AVX2: entry m lists the set lanes of mask m first.
struct CompressTable {
  alignas(32) int32_t perm[256][8];
  CompressTable() {
    for (int m = 0; m < 256; ++m) {
      int w = 0;
      for (int lane = 0; lane < 8; ++lane)
        if (m & (1 << lane)) perm[m][w++] = lane;
      for (; w < 8; ++w) perm[m][w] = 0;
    }
  }
};

/// AVX2 filter for float32, identical output to filter_scalar: 8 compares, a permute and a full-width store per
/// step (the stores past the count are overwritten by the next step; buffers hold C + 8 entries).
template <bool LARGEST>
__attribute__((target("avx2,popcnt"))) int64_t filter_avx2(const float* x, int64_t C, float thr, float* cv,
                                                          int32_t* ci) {
  static const CompressTable table;
  const __m256 t = _mm256_set1_ps(thr);
  const __m256i step = _mm256_set1_epi32(8);
  __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int64_t n = 0, c = 0;
  for (; c + 8 <= C; c += 8) {
    const __m256 v = _mm256_loadu_ps(x + c);
    const int m = _mm256_movemask_ps(_mm256_cmp_ps(v, t, LARGEST ? _CMP_GE_OQ : _CMP_LE_OQ));
    const __m256i p = _mm256_load_si256(reinterpret_cast<const __m256i*>(table.perm[m]));
    _mm256_storeu_ps(cv + n, _mm256_permutevar8x32_ps(v, p));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(ci + n), _mm256_permutevar8x32_epi32(idx, p));
    n += __builtin_popcount(static_cast<unsigned>(m));
    idx = _mm256_add_epi32(idx, step);
  }
  const int64_t tail = filter_scalar<float, LARGEST>(x + c, C - c, thr, cv + n, ci + n);
  for (int64_t e = n; e < n + tail; ++e) ci[e] += static_cast<int32_t>(c);  // tail columns start at c
  return n + tail;
}
#endif

template <bool LARGEST>
int64_t filter(const float* x, int64_t C, float thr, float* cv, int32_t* ci) {
#if defined(__x86_64__)
  if (use_avx2()) return filter_avx2<LARGEST>(x, C, thr, cv, ci);
#endif
  return filter_scalar<float, LARGEST>(x, C, thr, cv, ci);
}
template <bool LARGEST>
int64_t filter(const double* x, int64_t C, double thr, double* cv, int32_t* ci) {
  return filter_scalar<double, LARGEST>(x, C, thr, cv, ci);
}

/// Remove column `skip` from the candidates (at most one entry; keeps the order).
template <typename T>
int64_t drop_column(T* cv, int32_t* ci, int64_t n, int64_t skip) {
  if (skip < 0) return n;
  int64_t w = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (ci[t] == skip) continue;
    cv[w] = cv[t];
    ci[w++] = ci[t];
  }
  return w;
}

/// Radix key whose ascending order is RankOrder<LARGEST>'s order of values (ties are left to stability).
template <bool LARGEST>
inline uint32_t rank_key(float v) {
  return LARGEST ? descending_key(v) : ~descending_key(v);
}
template <bool LARGEST>
inline uint64_t rank_key(double v) {
  return LARGEST ? descending_key(v) : ~descending_key(v);
}

template <typename T, bool LARGEST>
void select_row(const T* x, int64_t C, int64_t k, int64_t skip, RowScratch<T>& s, T* out_v, int64_t* out_i) {
  using Order = RankOrder<LARGEST>;
  // (1) threshold from a sample (deterministic), unless the row is short.
  bool use_threshold = C > 4 * k + 64 && C >= 1024;
  T thr = T(0);
  if (use_threshold) {
    // 32 contiguous chunks of 16 values spread over the row: 32-64 cache lines instead of one line per sampled
    // value (a strided sample touched nearly every line of the row once more, at memory latency)
    constexpr int64_t kChunks = 32, kChunk = 16;
    const int64_t m = kChunks * kChunk;  // C > 4k + 64 >= 68 here, and C >= m is ensured below
    s.sample.resize(m);
    const int64_t step = (C - kChunk) / (kChunks - 1);
    for (int64_t c = 0; c < kChunks; ++c)
      for (int64_t t = 0; t < kChunk; ++t) s.sample[c * kChunk + t] = x[c * step + t];
    const double expected = static_cast<double>(k) * m / C;  // sample ranks expected above the k-th best
    const int64_t r = static_cast<int64_t>(expected + 3.0 * std::sqrt(expected) + 4.0);
    if (r >= m) {
      use_threshold = false;
    } else {
      std::nth_element(s.sample.begin(), s.sample.begin() + r, s.sample.end(),
                       [](T a, T b) { return Order::value_before(a, b); });
      thr = s.sample[r];
    }
  }
  // (2) branchless collection, in column order, of the candidates passing the threshold (all columns without one).
  s.cand_v.resize(C + 8);
  s.cand_i.resize(C + 8);
  T* cv = s.cand_v.data();
  int32_t* ci = s.cand_i.data();
  int64_t n = 0;
  if (use_threshold) n = drop_column(cv, ci, filter<LARGEST>(x, C, thr, cv, ci), skip);
  if (n < k) {  // no threshold, or too few passed it: every column is a candidate
    n = 0;
    for (int64_t c = 0; c < C; ++c) {
      if (c == skip) continue;
      cv[n] = x[c];
      ci[n++] = static_cast<int32_t>(c);
    }
  }
  // (3) stable radix sort of the candidates by value: they are in column order, so ties go to the smaller column.
  s.keys.resize(n);
  s.tmp_keys.resize(n);
  s.tmp_i.resize(n);
  if (sizeof(T) == 4) {
    for (int64_t t = 0; t < n; ++t) s.keys[t] = static_cast<uint32_t>(rank_key<LARGEST>(cv[t]));
    radix_sort_pairs<uint32_t, int32_t, 8>(s.keys.data(), ci, n, s.tmp_keys.data(), s.tmp_i.data());
    for (int64_t t = 0; t < k; ++t) {
      out_i[t] = ci[t];
      out_v[t] = x[ci[t]];
    }
  } else {
    sort_by_u64_key(ci, n, s.keys.data(), s.tmp_keys.data(), s.tmp_i.data(),
                    [x](int32_t c) { return static_cast<uint64_t>(rank_key<LARGEST>(x[c])); });
    for (int64_t t = 0; t < k; ++t) {
      out_i[t] = ci[t];
      out_v[t] = x[ci[t]];
    }
  }
}

template <typename T, bool LARGEST>
bool run(const DenseTopKArgs& a, InterruptPoll poll) {
  const T* x = static_cast<const T*>(a.x);
  T* out_v = static_cast<T*>(a.out_values);
  const int nt = a.num_threads < 1 ? 1 : a.num_threads;
  std::vector<RowScratch<T>> scratch(nt);
  return parallel_rows(a.R, nt, static_cast<double>(a.C), poll, [&](int64_t r, int tid) {
    const int64_t skip = a.exclude_self ? r + a.row_offset : -1;
    select_row<T, LARGEST>(x + r * a.x_stride, a.C, a.k, skip, scratch[tid], out_v + r * a.k,
                           a.out_indices + r * a.k);
  });
}

}  // namespace

bool dense_topk_cpu(const DenseTopKArgs& a, InterruptPoll poll) {
  if (a.x_is_double) return a.largest ? run<double, true>(a, poll) : run<double, false>(a, poll);
  return a.largest ? run<float, true>(a, poll) : run<float, false>(a, poll);
}

}  // namespace icfrr
