// CPU driver of dense_topk (see include/icfrr/dense_topk.h): rows in parallel, each by threshold selection.
//
// Per row of C values, top k: (1) estimate a threshold from a sample of 512 values (32 runs of 16), generous enough
// that at least k values pass it with high probability; (2) one branchless pass collects the (value, column) pairs
// that pass, in column order; (3) a stable sort of those by value (radix by a coarse key, exact inside runs) gives
// the exact top k with ties to the smaller column (RankOrder's rule). If fewer than k
// pass (an unlucky estimate), the row is redone with every column as a candidate, so the result is exact always:
// the true top k all rank at or before the k-th best value, hence pass any threshold that >= k values pass.
// Cost ~ C (filter) + 2 c (c ~ 2k candidates, two 8-bit radix passes) per row, no heap. Per-thread buffers are
// reserved at their largest size before the parallel region (OutOfMemory with the size, never an abort inside it).
#include "icfrr/dense_topk.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "icfrr/order.h"
#include "icfrr/parallel.h"
#include "icfrr/radix_sort.h"
#include "icfrr/scratch.h"
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

/// A sample value that at least r + 1 of the m sample values do not rank after (RankOrder<LARGEST>), near the
/// r-th best: the values, scaled to the sample's range, go into 512 buckets (best first), and the threshold is the
/// worst value of the bucket where the running count reaches r + 1. One pass without data-dependent branches
/// (std::nth_element's partitions mispredict about every other comparison, and cost 3x more here).
template <typename T, bool LARGEST>
T sample_threshold(T* v, int64_t m, int64_t r) {
  constexpr int kBuckets = 512;
  const double sign = LARGEST ? 1.0 : -1.0;  // w = sign * v: larger is better
  double lo = __builtin_huge_val(), hi = -__builtin_huge_val();
  for (int64_t i = 0; i < m; ++i) {
    const double w = sign * static_cast<double>(v[i]);
    lo = w < lo ? w : lo;
    hi = w > hi ? w : hi;
  }
  const double scale = (kBuckets - 1) / (hi - lo);
  if (!(hi > lo) || !(scale > 0.0) || !(scale < __builtin_huge_val())) {  // all equal, or an unscalable range
    std::nth_element(v, v + r, v + m, [](T a, T b) { return RankOrder<LARGEST>::value_before(a, b); });
    return v[r];
  }
  uint32_t count[kBuckets] = {};
  double worst[kBuckets];
  for (int b = 0; b < kBuckets; ++b) worst[b] = __builtin_huge_val();
  for (int64_t i = 0; i < m; ++i) {
    const double w = sign * static_cast<double>(v[i]);
    const double f = (hi - w) * scale;
    const int b = f < kBuckets - 1 ? static_cast<int>(f) : kBuckets - 1;
    count[b]++;
    worst[b] = w < worst[b] ? w : worst[b];
  }
  int64_t run = 0;
  for (int b = 0; b < kBuckets; ++b) {
    run += count[b];
    if (run > r) return static_cast<T>(sign * worst[b]);
  }
  return static_cast<T>(sign * lo);  // not reached: run ends at m > r
}

/// The sample of a row: 32 contiguous chunks of 16 values spread over it, 32-64 cache lines instead of one line per
/// sampled value (a strided sample touched nearly every line of the row once more, at memory latency).
constexpr int64_t kChunks = 32, kChunk = 16;

inline int64_t sample_step(int64_t C) { return (C - kChunk) / (kChunks - 1); }

/// Ask for the sample lines of a row that this thread is likely to select next: its loads then find them in cache.
template <typename T>
void prefetch_sample(const T* x, int64_t C) {
  const int64_t step = sample_step(C);
  for (int64_t c = 0; c < kChunks; ++c) {
    __builtin_prefetch(x + c * step);
    __builtin_prefetch(x + c * step + kChunk - 1);
  }
}

template <typename T, bool LARGEST>
void select_row(const T* x, int64_t C, int64_t k, int64_t skip, const T* next_row, RowScratch<T>& s, T* out_v,
                int64_t* out_i) {
  // (1) threshold from a sample (deterministic), unless the row is short.
  bool use_threshold = C > 4 * k + 64 && C >= 1024;
  T thr = T(0);
  if (use_threshold) {
    const int64_t m = kChunks * kChunk;  // <= C (C >= 1024 here)
    s.sample.resize(m);
    const int64_t step = sample_step(C);
    for (int64_t c = 0; c < kChunks; ++c)
      for (int64_t t = 0; t < kChunk; ++t) s.sample[c * kChunk + t] = x[c * step + t];
    if (next_row != nullptr) prefetch_sample(next_row, C);
    const double expected = static_cast<double>(k) * m / C;  // sample ranks expected above the k-th best
    const int64_t r = static_cast<int64_t>(expected + 3.0 * std::sqrt(expected) + 4.0);
    if (r >= m) use_threshold = false;
    else thr = sample_threshold<T, LARGEST>(s.sample.data(), m, r);
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
  // (3) stable sort of the candidates by value, best first: they are in column order, so ties go to the smaller
  //     column. A 16-bit coarse key scaled to the candidates' range (2 radix passes of 8 bits), exact inside runs.
  const double sign = LARGEST ? 1.0 : -1.0;
  double kmin = __builtin_huge_val(), kmax = -__builtin_huge_val();
  for (int64_t t = 0; t < n; ++t) {
    const double v = sign * static_cast<double>(cv[t]);
    kmin = v < kmin ? v : kmin;
    kmax = v > kmax ? v : kmax;
  }
  s.keys.resize(n);
  s.tmp_keys.resize(n);
  s.tmp_i.resize(n);
  sort_desc_by_double<16, 8>(ci, n, s.keys.data(), s.tmp_keys.data(), s.tmp_i.data(),
                             [x, sign](int32_t c) { return sign * static_cast<double>(x[c]); }, kmin, kmax);
  for (int64_t t = 0; t < k; ++t) {
    out_i[t] = ci[t];
    out_v[t] = x[ci[t]];
  }
}

template <typename T, bool LARGEST>
bool run(const DenseTopKArgs& a, InterruptPoll poll) {
  const T* x = static_cast<const T*>(a.x);
  T* out_v = static_cast<T*>(a.out_values);
  const int nt = parallel_threads(a.R, a.num_threads, static_cast<double>(a.C));
  // Every buffer at its largest size before the parallel region: select_row's resizes then never allocate.
  std::vector<RowScratch<T>> scratch(nt);
  for (RowScratch<T>& s : scratch) {
    try {
      s.sample.reserve(kChunks * kChunk);
      s.cand_v.reserve(a.C + 8);
      s.cand_i.reserve(a.C + 8);
      s.keys.reserve(a.C + 8);
      s.tmp_keys.reserve(a.C + 8);
      s.tmp_i.reserve(a.C + 8);
    } catch (const std::bad_alloc&) {
      throw OutOfMemory(nt * (a.C + 8) * static_cast<int64_t>(sizeof(T) + 16), "dense_topk's per-thread row scratch");
    }
  }
  return parallel_rows(a.R, nt, static_cast<double>(a.C), poll, [&](int64_t r, int tid) {
    const int64_t skip = a.exclude_self ? r + a.row_offset : -1;
    // rows go to threads one at a time, in turn: this thread's next row is about nt rows on
    const T* next_row = r + nt < a.R ? x + (r + nt) * a.x_stride : nullptr;
    select_row<T, LARGEST>(x + r * a.x_stride, a.C, a.k, skip, next_row, scratch[tid], out_v + r * a.k,
                           a.out_indices + r * a.k);
  });
}

}  // namespace

bool dense_topk_cpu(const DenseTopKArgs& a, InterruptPoll poll) {
  if (a.x_is_double) return a.largest ? run<double, true>(a, poll) : run<double, false>(a, poll);
  return a.largest ? run<float, true>(a, poll) : run<float, false>(a, poll);
}

}  // namespace icfrr
