// CPU driver of knn_topk (contract: include/icfrr/knn_topk.h). Oracle: reference.knn_topk  Test: tests/test_knn_topk.py
//
// Blocking (the classic Goto/BLIS scheme, K. Goto & R. van de Geijn, "Anatomy of high-performance matrix
// multiplication", ACM TOMS 2008; F. Van Zee & R. van de Geijn, "BLIS", ACM TOMS 2015), with the top-k selection
// fused after each tile instead of a store of the product:
//   * Y is packed once into panels of NR items, (D, NR) each, shared read-only by all threads (O(G D) memory);
//   * each work item is a block of MC rows of X (packed into panels of MR rows, (D, MR) each, held in L2) and a
//     chunk of the gallery; for every NC gallery items it computes the (MC, NC) tile with the micro-kernel (depth
//     split into KC blocks so that one B micro-panel stays in L1), turns dot products into scores (metric epilogue)
//     and offers each row to its TopKBuffer, whose strict-threshold SIMD filter rejects most items (topk_buffer.h);
//   * few rows (a small query batch against a big gallery): the gallery is also split into chunks, one heap per
//     (row, chunk), merged at the end, so every thread has work whatever Q is.
// Every score is one FMA chain over d = 0..D-1 (KC blocks continue the same accumulator through C), so the
// portable, AVX2 and AVX-512 kernels and any blocking or thread count give bit-identical scores (tests check it).
// precision = "bf16": the AVX512_BF16 kernel reads pairs of bfloat16 per word (vdpbf16ps: two depths per lane and
// instruction, the odd one first); the other kernels read the same rounded values with each pair swapped (Pack), so
// their FMA chain is the instruction's.
#include "icfrr/knn_topk.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <type_traits>
#include <vector>

#include "icfrr/parallel.h"
#include "icfrr/simd.h"
#include "icfrr/topk_buffer.h"

namespace icfrr {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// Portable micro-kernel (any CPU; std::fma keeps the arithmetic identical to the SIMD kernels).
// ---------------------------------------------------------------------------------------------------------------
constexpr int64_t kPortableMR = 4, kPortableNR = 16;

template <typename T, int64_t MR, int64_t NR>
void portable_kernel(int64_t kc, const T* A, const T* B, T* C, int64_t ldc, bool accumulate) {
  T acc[MR][NR];
  for (int64_t i = 0; i < MR; ++i)
    for (int64_t j = 0; j < NR; ++j) acc[i][j] = accumulate ? C[i * ldc + j] : T(0);
  for (int64_t p = 0; p < kc; ++p, A += MR, B += NR)
    for (int64_t i = 0; i < MR; ++i)
      for (int64_t j = 0; j < NR; ++j) acc[i][j] = std::fma(A[i], B[j], acc[i][j]);
  for (int64_t i = 0; i < MR; ++i)
    for (int64_t j = 0; j < NR; ++j) C[i * ldc + j] = acc[i][j];
}

void portable_kernel_f32(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, bool accumulate) {
  portable_kernel<float, kPortableMR, kPortableNR>(kc, A, B, C, ldc, accumulate);
}

/// How a row's depth is laid out in the packed panels the micro-kernel reads.
///   kPlain:       depth d at position d (fp32, float64);
///   kBF16Swapped: bfloat16-rounded values, each pair of depths swapped (position p holds depth p ^ 1, zero past D):
///                 an fp32 FMA chain over positions is vdpbf16ps's chain (odd depth of each pair first);
///   kBF16Pairs:   one 32-bit word per pair of depths, bfloat16 of depth 2q in the low half, 2q + 1 in the high one.
enum class Pack { kPlain, kBF16Swapped, kBF16Pairs };

template <typename T>
struct Kernel {
  void (*fn)(int64_t, const T*, const T*, T*, int64_t, bool);
  int64_t mr, nr;
  Pack pack;
  const char* name;
};

/// Packed depth (positions per row) of a D-deep row.
int64_t packed_depth(int64_t D, Pack pack) {
  return pack == Pack::kPlain ? D : pack == Pack::kBF16Swapped ? D + (D & 1) : (D + 1) / 2;
}

Kernel<float> select_kernel(KnnPrecision precision) {
  const bool bf16 = precision == KnnPrecision::kBF16;
  const Pack pack = bf16 ? Pack::kBF16Swapped : Pack::kPlain;
#if defined(__x86_64__) || defined(_M_X64)
  if (bf16 && simd_at_least(SimdLevel::kAVX512BF16)) {
    const KnnKernelInfo k = knn_microkernel_avx512_bf16();
    return {k.fn, k.mr, k.nr, Pack::kBF16Pairs, "avx512_bf16 12x32"};
  }
  if (simd_at_least(SimdLevel::kAVX512)) {
    const KnnKernelInfo k = knn_microkernel_avx512();
    return {k.fn, k.mr, k.nr, pack, "avx512 12x32"};
  }
  if (simd_at_least(SimdLevel::kAVX2)) {
    const KnnKernelInfo k = knn_microkernel_avx2();
    return {k.fn, k.mr, k.nr, pack, "avx2 6x16"};
  }
#endif
  return {portable_kernel_f32, kPortableMR, kPortableNR, pack, "scalar 4x16"};
}

// ---------------------------------------------------------------------------------------------------------------
// Aligned scratch (64-byte lines: packed panels start on a cache line).
// ---------------------------------------------------------------------------------------------------------------
template <typename T>
struct AlignedBuffer {
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> ptr;
  int64_t n = 0;

  void resize(int64_t count) {
    if (count <= n) return;
    const int64_t bytes = ((count * static_cast<int64_t>(sizeof(T)) + 63) / 64) * 64;
    T* p = static_cast<T*>(std::aligned_alloc(64, static_cast<size_t>(bytes)));
    if (!p) throw std::bad_alloc();
    ptr.reset(p);
    n = count;
  }
  T* data() { return ptr.get(); }
};

inline float round_to_bf16(float v) {
  // Round to nearest even on the upper 16 bits (inputs are finite: validated by icfrr_fast.ops).
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  std::memcpy(&v, &u, 4);
  return v;
}

/// Position p of a row in the packed layout `pack` (kPlain for float64).
template <typename T>
inline T packed_value(const T* row, int64_t D, Pack pack, int64_t p) {
  if constexpr (std::is_same<T, float>::value) {
    if (pack == Pack::kBF16Swapped) {
      const int64_t d = p ^ 1;
      return d < D ? round_to_bf16(row[d]) : 0.0f;
    }
    if (pack == Pack::kBF16Pairs) {
      uint32_t lo, hi = 0;
      const float vlo = round_to_bf16(row[2 * p]), vhi = 2 * p + 1 < D ? round_to_bf16(row[2 * p + 1]) : 0.0f;
      std::memcpy(&lo, &vlo, 4);
      std::memcpy(&hi, &vhi, 4);
      const uint32_t word = (lo >> 16) | (hi & 0xFFFF0000u);
      float out;
      std::memcpy(&out, &word, 4);
      return out;
    }
  }
  return row[p];
}

/// Pack rows [r0, r0 + rows) of a (., D) matrix into panels of `w` rows: panel t holds rows r0 + t*w .. as (De, w)
/// column blocks (De = packed_depth(D, pack)), zero-padded past the last row. dst has ceil(rows / w) * w * De
/// elements.
template <typename T>
void pack_rows(const T* src, int64_t stride, int64_t r0, int64_t rows, int64_t D, int64_t w, Pack pack, T* dst) {
  const int64_t panels = (rows + w - 1) / w, De = packed_depth(D, pack);
  for (int64_t t = 0; t < panels; ++t) {
    T* out = dst + t * w * De;
    for (int64_t c = 0; c < w; ++c) {
      const int64_t r = t * w + c;
      if (r >= rows) {
        for (int64_t p = 0; p < De; ++p) out[p * w + c] = T(0);
      } else if (pack == Pack::kPlain) {
        const T* row = src + (r0 + r) * stride;
        for (int64_t p = 0; p < De; ++p) out[p * w + c] = row[p];
      } else {
        const T* row = src + (r0 + r) * stride;
        for (int64_t p = 0; p < De; ++p) out[p * w + c] = packed_value(row, D, pack, p);
      }
    }
  }
}

/// Squared norm of a row in float64, sequential (deterministic; bf16 mode: of the rounded values).
template <typename T>
double sq_norm(const T* row, int64_t D, bool bf16) {
  double s = 0;
  for (int64_t d = 0; d < D; ++d) {
    T v = row[d];
    if constexpr (std::is_same<T, float>::value) {
      if (bf16) v = round_to_bf16(v);
    }
    s += static_cast<double>(v) * static_cast<double>(v);
  }
  return s;
}

/// Per-item factors of the metric epilogue: l2/l2sq -> |v|^2, cosine -> 1 / |v| (0 for a zero vector), ip -> unused.
template <typename T>
void row_factors(const T* src, int64_t stride, int64_t n, int64_t D, KnnMetric metric, bool bf16, int nt,
                 std::vector<T>& out) {
  if (metric == KnnMetric::kIP) return;
  out.resize(n);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && n * D > 1000000)
  for (int64_t i = 0; i < n; ++i) {
    const double s = sq_norm(src + i * stride, D, bf16);
    out[i] = metric == KnnMetric::kCosine ? (s > 0 ? static_cast<T>(1.0 / std::sqrt(s)) : T(0)) : static_cast<T>(s);
  }
}

/// Blocking sizes for one call: KC (depth per B micro-panel, L1), MC (rows per block, L2), NC (items per tile).
struct Blocking {
  int64_t kc, mc, nc;
};

template <typename T>
Blocking choose_blocking(int64_t Q, int64_t D, int64_t mr, int64_t nr, int nt) {
  Blocking b;
  // B micro-panel (KC, NR) plus A micro-panel (KC, MR) within ~24 KiB of a 32 KiB L1; equal-sized depth blocks.
  const int64_t kc_max = std::max<int64_t>(16, (24 * 1024) / (static_cast<int64_t>(sizeof(T)) * (mr + nr)));
  const int64_t nkc = (D + kc_max - 1) / kc_max;
  b.kc = (D + nkc - 1) / nkc;
  // A block (MC, D) in about half of a 512 KiB L2, at most 32 panels.
  int64_t mc = (256 * 1024) / (static_cast<int64_t>(sizeof(T)) * std::max<int64_t>(D, 1));
  mc = std::max<int64_t>(mr, std::min<int64_t>(mc, 32 * mr));
  mc = (mc / mr) * mr;
  // Few rows: smaller blocks so that every thread gets whole blocks (the gallery split handles the rest).
  const int64_t per_thread = (Q + nt - 1) / nt;
  if (per_thread < mc) mc = std::max<int64_t>(mr, ((per_thread + mr - 1) / mr) * mr);
  b.mc = mc;
  b.nc = 16 * nr;
  return b;
}

// ---------------------------------------------------------------------------------------------------------------
// Shared pieces: packing Y, one tile of dot products, the metric epilogue.
// ---------------------------------------------------------------------------------------------------------------

/// Pack rows [0, n) of src into NR-wide panels (De, NR) each, in parallel. dst: ceil(n / nr) * nr * De elements.
template <typename T>
bool pack_all(const T* src, int64_t stride, int64_t n, int64_t D, int64_t nr, Pack pack, int nt, InterruptPoll poll,
              T* dst) {
  const int64_t panels = (n + nr - 1) / nr, De = packed_depth(D, pack);
  const int64_t per = std::max<int64_t>(1, 4096 / std::max<int64_t>(D, 1));  // panels per packing task
  const int64_t tasks = (panels + per - 1) / per;
  return parallel_rows(tasks, nt, static_cast<double>(per * nr * D), poll, [&](int64_t t, int) {
    const int64_t p0 = t * per, p1 = std::min(panels, p0 + per);
    const int64_t r0 = p0 * nr, rows = std::min(n, p1 * nr) - r0;
    pack_rows(src, stride, r0, rows, D, nr, pack, dst + p0 * nr * De);
  });
}

/// C (rpanels MR rows, cpanels NR columns; row stride ldc) = packed A rows . packed B items, D positions deep (the
/// packed depth) in KC blocks. apack: rpanels panels of (D, MR); bpack: cpanels consecutive panels of (D, NR).
template <typename T>
void tile_dots(const Kernel<T>& kern, const T* apack, int64_t rpanels, const T* bpack, int64_t cpanels, int64_t D,
               int64_t kc_block, T* C, int64_t ldc) {
  const int64_t mr = kern.mr, nr = kern.nr;
  for (int64_t p0 = 0; p0 < D; p0 += kc_block) {
    const int64_t kc = std::min(kc_block, D - p0);
    for (int64_t jp = 0; jp < cpanels; ++jp) {
      const T* bp = bpack + jp * nr * D + p0 * nr;
      // The B micro-panel comes from DRAM on its first use (packed Y exceeds the caches) and the micro-kernel reads
      // it at one line per few cycles: prefetch the next one into L2 while this one is in use, a slice before each
      // of the rpanels calls.
      const char* next = reinterpret_cast<const char*>(jp + 1 < cpanels ? bp + nr * D : bp + kc * nr);
      const int64_t lines = (kc * nr * static_cast<int64_t>(sizeof(T)) + 63) / 64;
      const int64_t per_call = (lines + rpanels - 1) / rpanels;
      for (int64_t ip = 0; ip < rpanels; ++ip) {
        for (int64_t l = ip * per_call; l < std::min(lines, (ip + 1) * per_call); ++l)
          __builtin_prefetch(next + 64 * l, 0, 2);
        kern.fn(kc, apack + ip * mr * D + p0 * mr, bp, C + ip * mr * ldc + jp * nr, ldc, p0 > 0);
      }
    }
  }
}

/// Scores of one row from its dot products with items j0 .. j0 + n - 1: ip -> the dots themselves (returned as is,
/// unless `copy`); cosine -> dot * (f_i * f_j); l2/l2sq -> max(0, (n_i + n_j) - 2 dot), square-rooted when `sqrt_l2`
/// and the metric is l2. Every formula is symmetric in (i, j). Returns the scores (dots or buf).
template <typename T>
const T* row_scores(KnnMetric metric, const T* dots, T fi, const T* fj, int64_t n, T* buf, bool copy, bool sqrt_l2) {
  if (metric == KnnMetric::kCosine) {
    for (int64_t j = 0; j < n; ++j) buf[j] = dots[j] * (fi * fj[j]);
    return buf;
  }
  if (metric == KnnMetric::kL2 || metric == KnnMetric::kL2Sq) {
    for (int64_t j = 0; j < n; ++j) {
      const T d2 = (fi + fj[j]) - T(2) * dots[j];
      buf[j] = d2 > T(0) ? d2 : T(0);
    }
    if (sqrt_l2 && metric == KnnMetric::kL2)
      for (int64_t j = 0; j < n; ++j) buf[j] = std::sqrt(buf[j]);
    return buf;
  }
  if (copy) {
    std::memcpy(buf, dots, static_cast<size_t>(n) * sizeof(T));
    return buf;
  }
  return dots;
}

// ---------------------------------------------------------------------------------------------------------------
// The fused loop: blocks of rows of X against the gallery, tile by tile.
// ---------------------------------------------------------------------------------------------------------------
template <typename T, bool LARGEST>
bool run(const KnnTopKArgs& a, const Kernel<T>& kern, InterruptPoll poll) {
  const T* X = static_cast<const T*>(a.x);
  const T* Y = static_cast<const T*>(a.y);
  const int64_t Q = a.Q, G = a.G, D = a.D, mr = kern.mr, nr = kern.nr;
  const int nt = a.num_threads < 1 ? 1 : a.num_threads;
  const bool bf16 = a.precision == KnnPrecision::kBF16;
  const int64_t De = packed_depth(D, kern.pack);
  const Blocking blk = choose_blocking<T>(Q, De, mr, nr, nt);

  // Metric factors (O(Q + G)).
  std::vector<T> fx, fy;
  row_factors(X, a.x_stride, Q, D, a.metric, bf16, nt, fx);
  row_factors(Y, a.y_stride, G, D, a.metric, bf16, nt, fy);

  // Y packed once: panel t = items [t NR, (t + 1) NR) as (D, NR).
  AlignedBuffer<T> ypack;
  ypack.resize(((G + nr - 1) / nr) * nr * De);
  if (!pack_all(Y, a.y_stride, G, D, nr, kern.pack, nt, poll, ypack.data())) return false;

  // Work items: (row block, gallery chunk). Chunks are whole NC tiles.
  const int64_t nblocks = (Q + blk.mc - 1) / blk.mc;
  const int64_t ntiles = (G + blk.nc - 1) / blk.nc;
  int64_t nchunks = 1;
  if (!a.dense && nblocks < 4 * nt) nchunks = std::min<int64_t>(ntiles, (4 * nt + nblocks - 1) / nblocks);
  const int64_t tiles_per_chunk = (ntiles + nchunks - 1) / nchunks;
  nchunks = (ntiles + tiles_per_chunk - 1) / tiles_per_chunk;
  const int64_t k = a.k;

  // Partial results when the gallery is split: (nchunks, Q, k) values and ids, plus counts.
  std::vector<T> part_v;
  std::vector<int64_t> part_i, part_n;
  if (nchunks > 1) {
    part_v.resize(nchunks * Q * k);
    part_i.resize(nchunks * Q * k);
    part_n.resize(nchunks * Q);
  }

  struct Scratch {
    AlignedBuffer<T> apack, c;
    std::vector<T> row;
    std::vector<TopKBuffer<T, LARGEST>> heaps;
  };
  std::vector<Scratch> scratch(nt);
  const int64_t mc_pad = ((blk.mc + mr - 1) / mr) * mr;
  for (auto& s : scratch) {
    s.apack.resize(mc_pad * De);
    s.c.resize(mc_pad * blk.nc);
    s.row.resize(blk.nc);
    if (!a.dense) {
      s.heaps.reserve(blk.mc);
      for (int64_t r = 0; r < blk.mc; ++r) s.heaps.emplace_back(k, blk.nc);
    }
  }

  T* out_v = static_cast<T*>(a.out_values);
  const double cost = static_cast<double>(blk.mc) * static_cast<double>(tiles_per_chunk * blk.nc) * D;
  const bool ok = parallel_rows(nblocks * nchunks, nt, cost, poll, [&](int64_t w, int tid) {
    Scratch& s = scratch[tid];
    const int64_t b = w / nchunks, chunk = w % nchunks;
    const int64_t q0 = b * blk.mc, rows = std::min(blk.mc, Q - q0);
    const int64_t rpanels = (rows + mr - 1) / mr;
    pack_rows(X, a.x_stride, q0, rows, D, mr, kern.pack, s.apack.data());
    if (!a.dense)
      for (int64_t r = 0; r < rows; ++r) s.heaps[r].reset();
    const int64_t t0 = chunk * tiles_per_chunk, t1 = std::min(ntiles, t0 + tiles_per_chunk);
    T* C = s.c.data();
    const int64_t ldc = blk.nc;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t j0 = t * blk.nc, cols = std::min(blk.nc, G - j0);
      tile_dots(kern, s.apack.data(), rpanels, ypack.data() + j0 * De, (cols + nr - 1) / nr, De, blk.kc, C, ldc);
      // Epilogue: dot products -> scores, then selection (or dense store).
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = q0 + r;
        const T fi = a.metric == KnnMetric::kIP ? T(0) : fx[i];
        const T* fj = a.metric == KnnMetric::kIP ? nullptr : fy.data() + j0;
        T* buf = a.dense ? out_v + i * G + j0 : s.row.data();
        const T* sc = row_scores(a.metric, C + r * ldc, fi, fj, cols, buf, a.dense, a.dense);
        if (!a.dense) s.heaps[r].push_run(sc, cols, j0, a.exclude_self ? i + a.row_offset : -1);
      }
    }
    if (a.dense) return;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = q0 + r;
      if (nchunks == 1) {
        s.heaps[r].finalize(out_v + i * k, a.out_indices + i * k);
      } else {
        const int64_t slot = chunk * Q + i;
        part_n[slot] = s.heaps[r].size();
        s.heaps[r].finalize(part_v.data() + slot * k, part_i.data() + slot * k);
      }
    }
  });
  if (!ok) return false;

  if (nchunks > 1) {
    // Merge the chunks' lists: the best k of their union, by (value, smaller index).
    std::vector<std::vector<std::pair<T, int64_t>>> merge_buf(nt);
    const bool merged = parallel_rows(Q, nt, static_cast<double>(nchunks * k) * 8, poll, [&](int64_t i, int tid) {
      auto& m = merge_buf[tid];
      m.clear();
      for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t slot = c * Q + i;
        for (int64_t e = 0; e < part_n[slot]; ++e) m.emplace_back(part_v[slot * k + e], part_i[slot * k + e]);
      }
      auto before = [](const std::pair<T, int64_t>& x, const std::pair<T, int64_t>& y) {
        return RankOrder<LARGEST>::before(x.first, x.second, y.first, y.second);
      };
      std::nth_element(m.begin(), m.begin() + (k - 1), m.end(), before);
      std::sort(m.begin(), m.begin() + k, before);
      for (int64_t e = 0; e < k; ++e) {
        out_v[i * k + e] = m[e].first;
        a.out_indices[i * k + e] = m[e].second;
      }
    });
    if (!merged) return false;
  }
  if (a.metric == KnnMetric::kL2 && !a.dense) {
    // Selection ran on d2; report distances (sqrt is monotone, so the order stands).
    for (int64_t n = 0; n < Q * k; ++n) out_v[n] = std::sqrt(out_v[n]);
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Symmetric graph build (x is y, self excluded): each unordered pair of row blocks I <= J is computed once and its
// tile offered to the rows of I (by rows) and to the rows of J (by columns): half the FLOPs of the plain loop.
// Work item I computes J = I, I + 1, ... like the plain loop computes its row block against the gallery, so block I
// (packed once as MR panels) stays in L2 while the J blocks stream; a row's candidates then arrive from several
// threads, so every row keeps a collector for the whole run, taken under its block's lock (no thread ever holds two
// locks), and the collectors accept any index order (value ties broken by index explicitly). Scores are symmetric
// (tile_dots' FMA chain is commutative in the pair, row_scores' formulas too) and the top-k of a row does not depend
// on the order its candidates arrive in, so the result is bit-identical to the plain loop's whatever the thread
// count or timing.
// ---------------------------------------------------------------------------------------------------------------

/// Whether the symmetric build applies, and the block size it would use (0: it does not).
template <typename T>
int64_t symmetric_block(const KnnTopKArgs& a, int64_t mr, int64_t nr, int nt) {
  if (a.dense || !a.exclude_self || a.row_offset != 0 || a.x != a.y || a.x_stride != a.y_stride || a.Q != a.G)
    return 0;
  // It saves D/2 FMAs per candidate but offers every candidate twice as often per FMA, through collectors that
  // live in DRAM: measured (G = 15,000, k = 256, 2 threads) equal to the plain loop at D = 256, 1.2x faster at
  // D = 384, 1.5x at D = 512, slower at D = 128.
  if (a.D < 384) return 0;
  // Rows per block: a multiple of both MR and NR (so blocks are whole A and B panels). Every block pair offers each
  // of its 2 mb rows one run of mb candidates, so the selection's per-run costs (a collector in DRAM, a lock, a
  // column gather) shrink as 1 / mb against the tile's mb^2 D FMAs: measured (G = 24,000, D = 768, k = 257, one
  // thread, AVX-512) 96 rows 51 GFLOP/s performed, 192 rows 57, 288 rows 61 (bf16: 98, 111, 123); 384 rows no
  // better. So about 288 rows, fewer when that leaves under 3 blocks per thread or the collectors of all rows
  // (2k + mb slots each) would exceed ~1 GiB (the plain loop needs none of this: its collectors live for one block
  // of rows at a time).
  const int64_t unit = std::lcm(mr, nr);
  int64_t mb = std::max<int64_t>(unit, ((288 + unit / 2) / unit) * unit);
  auto collector_bytes = [&](int64_t m) {  // values + ids + the collector's own workspace (topk_buffer.h)
    const double work = std::max<double>(3.0 * sizeof(T), 12.0);
    return static_cast<double>(a.G) * (2 * a.k + m) * (sizeof(T) + sizeof(int64_t) + work);
  };
  while (mb > unit && ((a.G + mb - 1) / mb < 3 * nt || collector_bytes(mb) > static_cast<double>(1ll << 30)))
    mb -= unit;
  if ((a.G + mb - 1) / mb < 3 * nt || collector_bytes(mb) > static_cast<double>(1ll << 30)) return 0;
  return mb;
}

/// Call hit(c) for every c in [0, n) in increasing order whose score s[c] may enter the collector with threshold
/// thr[c] (LARGEST: s[c] >= thr[c]); hit may tighten thr[c] (read again for later rows). thr has 16 slack elements.
template <typename T, bool LARGEST, typename Hit>
void offer_columns(const T* s, const T* thr, int64_t n, Hit&& hit) {
#if defined(ICFRR_TOPK_AVX512)
  if constexpr (std::is_same<T, float>::value) {
    if (simd_at_least(SimdLevel::kAVX512)) {
      for (int64_t c0 = 0; c0 < n; c0 += 16) {
        uint32_t m = topk_avx512::at_least_mask<LARGEST>(s + c0, thr + c0, n - c0);
        while (m) {
          hit(c0 + __builtin_ctz(m));
          m &= m - 1;
        }
      }
      return;
    }
  }
#endif
  for (int64_t c = 0; c < n; ++c)
    if (!RankOrder<LARGEST>::value_before(thr[c], s[c])) hit(c);
}

template <typename T, bool LARGEST>
bool run_symmetric(const KnnTopKArgs& a, const Kernel<T>& kern, int64_t mb, InterruptPoll poll) {
  const T* X = static_cast<const T*>(a.x);
  const int64_t G = a.G, D = a.D, k = a.k, mr = kern.mr, nr = kern.nr;
  const int nt = a.num_threads < 1 ? 1 : a.num_threads;
  const bool bf16 = a.precision == KnnPrecision::kBF16;
  const int64_t De = packed_depth(D, kern.pack);
  const Blocking blk = choose_blocking<T>(G, De, mr, nr, nt);
  const int64_t nb = (G + mb - 1) / mb;

  std::vector<T> f;
  row_factors(X, a.x_stride, G, D, a.metric, bf16, nt, f);
  // All rows packed twice, as NR panels (the B side) and as MR panels (the A side), so a tile packs nothing.
  AlignedBuffer<T> ypack, xpack;
  ypack.resize(((G + nr - 1) / nr) * nr * De);
  xpack.resize(((G + mr - 1) / mr) * mr * De);
  if (!pack_all(X, a.x_stride, G, D, nr, kern.pack, nt, poll, ypack.data())) return false;
  if (!pack_all(X, a.x_stride, G, D, mr, kern.pack, nt, poll, xpack.data())) return false;

  std::vector<TopKBuffer<T, LARGEST, true>> rows;
  rows.reserve(G);
  for (int64_t i = 0; i < G; ++i) rows.emplace_back(k, mb);
  for (auto& r : rows) r.reset();
  std::vector<omp_lock_t> locks(nb);
  for (auto& l : locks) omp_init_lock(&l);

  struct Scratch {
    AlignedBuffer<T> c;
    std::vector<T> thr;
  };
  std::vector<Scratch> scratch(nt);
  for (auto& s : scratch) {
    s.c.resize(mb * mb);
    s.thr.resize(mb + 16);
  }
  const bool ip = a.metric == KnnMetric::kIP;
  // Work item w = block I = w: the largest share (I = 0 pairs with every block) first, for the dynamic schedule.
  const double cost = static_cast<double>(mb) * G * D / 2;
  const bool ok = parallel_rows(nb, nt, cost, poll, [&](int64_t I, int tid) {
    Scratch& s = scratch[tid];
    T* C = s.c.data();
    const int64_t i0 = I * mb, ri = std::min(mb, G - i0);
    for (int64_t J = I; J < nb; ++J) {
      const int64_t j0 = J * mb, rj = std::min(mb, G - j0);
      tile_dots(kern, xpack.data() + i0 * De, (ri + mr - 1) / mr, ypack.data() + j0 * De, (rj + nr - 1) / nr, De,
                blk.kc, C, mb);
      omp_set_lock(&locks[I]);
      for (int64_t r = 0; r < ri; ++r) {  // rows of block I: items of J; the scores replace the dots in C
        T* row = C + r * mb;
        const T* sc = row_scores(a.metric, row, ip ? T(0) : f[i0 + r], ip ? nullptr : f.data() + j0, rj, row, false,
                                 false);
        rows[i0 + r].push_run(sc, rj, j0, i0 + r);
      }
      omp_unset_lock(&locks[I]);
      if (I == J) continue;
      // Rows of block J: items of I, i.e. column c of the score tile for row j0 + c (every formula is symmetric in
      // the pair, so C holds their scores too). Scanned row by row against the J rows' thresholds: only the rare
      // candidates that can enter touch a collector (no column gathers, no run per J row).
      omp_set_lock(&locks[J]);
      T* thr = s.thr.data();
      for (int64_t c = 0; c < rj; ++c) thr[c] = rows[j0 + c].threshold();
      for (int64_t r = 0; r < ri; ++r)
        offer_columns<T, LARGEST>(C + r * mb, thr, rj, [&](int64_t c) {
          rows[j0 + c].push_one(C[r * mb + c], i0 + r);
          thr[c] = rows[j0 + c].threshold();
        });
      omp_unset_lock(&locks[J]);
    }
  });
  for (auto& l : locks) omp_destroy_lock(&l);
  if (!ok) return false;

  T* out_v = static_cast<T*>(a.out_values);
  const bool done = parallel_rows(G, nt, static_cast<double>(4 * k), poll, [&](int64_t i, int) {
    rows[i].finalize(out_v + i * k, a.out_indices + i * k);
  });
  if (!done) return false;
  if (a.metric == KnnMetric::kL2)
    for (int64_t m = 0; m < G * k; ++m) out_v[m] = std::sqrt(out_v[m]);
  return true;
}

template <typename T>
bool dispatch_order(const KnnTopKArgs& a, const Kernel<T>& kern, InterruptPoll poll) {
  const int nt = a.num_threads < 1 ? 1 : a.num_threads;
  if (const int64_t mb = symmetric_block<T>(a, kern.mr, kern.nr, nt); mb > 0 && knn_topk_symmetric_enabled()) {
    return a.largest ? run_symmetric<T, true>(a, kern, mb, poll) : run_symmetric<T, false>(a, kern, mb, poll);
  }
  // Dense mode ignores the order; run it through one instantiation.
  if (a.dense || a.largest) return run<T, true>(a, kern, poll);
  return run<T, false>(a, kern, poll);
}

std::atomic<bool>& symmetric_flag() {
  static std::atomic<bool> flag{true};
  return flag;
}

}  // namespace

int64_t knn_topk_symmetric_rows(int64_t G, int64_t D, int64_t k, int num_threads) {
  KnnTopKArgs a;
  a.x = a.y = &a;  // any one pointer: only the shape matters here
  a.Q = a.G = G;
  a.D = D;
  a.k = k;
  a.exclude_self = true;
  const Kernel<float> kern = select_kernel(KnnPrecision::kFP32);
  return knn_topk_symmetric_enabled() ? symmetric_block<float>(a, kern.mr, kern.nr, std::max(1, num_threads)) : 0;
}

void knn_topk_set_symmetric(bool enabled) { symmetric_flag().store(enabled); }
bool knn_topk_symmetric_enabled() { return symmetric_flag().load(std::memory_order_relaxed); }

bool knn_topk_cpu(const KnnTopKArgs& a, InterruptPoll poll) {
  if (a.is_double) {
    // float64: the portable kernel (float64 FMA chains); no SIMD kernel is specialised for it.
    Kernel<double> kern{portable_kernel<double, kPortableMR, kPortableNR>, kPortableMR, kPortableNR, Pack::kPlain,
                        "scalar 4x16"};
    return dispatch_order<double>(a, kern, poll);
  }
  return dispatch_order<float>(a, select_kernel(a.precision), poll);
}

const char* knn_topk_kernel_name(KnnPrecision precision) { return select_kernel(precision).name; }

}  // namespace icfrr
