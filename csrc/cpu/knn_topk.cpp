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
// portable and AVX2 kernels and any blocking or thread count give bit-identical scores (tests check it).
#include "icfrr/knn_topk.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
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

template <typename T>
struct Kernel {
  void (*fn)(int64_t, const T*, const T*, T*, int64_t, bool);
  int64_t mr, nr;
};

Kernel<float> select_kernel() {
#if defined(__x86_64__) || defined(_M_X64)
  static const bool has_fma = __builtin_cpu_supports("fma");
  if (use_avx2() && has_fma) {
    const KnnKernelInfo k = knn_microkernel_avx2();
    return {k.fn, k.mr, k.nr};
  }
#endif
  return {portable_kernel_f32, kPortableMR, kPortableNR};
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

/// Pack rows [r0, r0 + rows) of a (., D) matrix into panels of `w` rows: panel t holds rows r0 + t*w .. as (D, w)
/// column blocks, zero-padded past the last row. dst has ceil(rows / w) * w * D elements.
template <typename T>
void pack_rows(const T* src, int64_t stride, int64_t r0, int64_t rows, int64_t D, int64_t w, bool bf16, T* dst) {
  const int64_t panels = (rows + w - 1) / w;
  for (int64_t t = 0; t < panels; ++t) {
    T* out = dst + t * w * D;
    for (int64_t c = 0; c < w; ++c) {
      const int64_t r = t * w + c;
      if (r < rows) {
        const T* row = src + (r0 + r) * stride;
        if constexpr (std::is_same<T, float>::value) {
          if (bf16) {
            for (int64_t d = 0; d < D; ++d) out[d * w + c] = round_to_bf16(row[d]);
            continue;
          }
        }
        for (int64_t d = 0; d < D; ++d) out[d * w + c] = row[d];
      } else {
        for (int64_t d = 0; d < D; ++d) out[d * w + c] = T(0);
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
// The fused loop.
// ---------------------------------------------------------------------------------------------------------------
template <typename T, bool LARGEST>
bool run(const KnnTopKArgs& a, const Kernel<T>& kern, InterruptPoll poll) {
  const T* X = static_cast<const T*>(a.x);
  const T* Y = static_cast<const T*>(a.y);
  const int64_t Q = a.Q, G = a.G, D = a.D, mr = kern.mr, nr = kern.nr;
  const int nt = a.num_threads < 1 ? 1 : a.num_threads;
  const bool bf16 = a.precision == KnnPrecision::kBF16;
  const Blocking blk = choose_blocking<T>(Q, D, mr, nr, nt);

  // Metric factors (O(Q + G)).
  std::vector<T> fx, fy;
  row_factors(X, a.x_stride, Q, D, a.metric, bf16, nt, fx);
  row_factors(Y, a.y_stride, G, D, a.metric, bf16, nt, fy);

  // Y packed once: panel t = items [t NR, (t + 1) NR) as (D, NR).
  const int64_t panels = (G + nr - 1) / nr;
  AlignedBuffer<T> ypack;
  ypack.resize(panels * nr * D);
  {
    T* dst = ypack.data();
    const int64_t per = std::max<int64_t>(1, 4096 / std::max<int64_t>(D, 1));  // panels per packing task
    const int64_t tasks = (panels + per - 1) / per;
    if (!parallel_rows(tasks, nt, static_cast<double>(per * nr * D), poll, [&](int64_t t, int) {
          const int64_t p0 = t * per, p1 = std::min(panels, p0 + per);
          const int64_t r0 = p0 * nr, rows = std::min(G, p1 * nr) - r0;
          pack_rows(Y, a.y_stride, r0, rows, D, nr, bf16, dst + p0 * nr * D);
        }))
      return false;
  }

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
    s.apack.resize(mc_pad * D);
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
    pack_rows(X, a.x_stride, q0, rows, D, mr, bf16, s.apack.data());
    if (!a.dense)
      for (int64_t r = 0; r < rows; ++r) s.heaps[r].reset();
    const int64_t t0 = chunk * tiles_per_chunk, t1 = std::min(ntiles, t0 + tiles_per_chunk);
    T* C = s.c.data();
    const int64_t ldc = blk.nc;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t j0 = t * blk.nc, cols = std::min(blk.nc, G - j0);
      const int64_t cpanels = (cols + nr - 1) / nr;
      const T* ytile = ypack.data() + (j0 / nr) * nr * D;
      for (int64_t p0 = 0; p0 < D; p0 += blk.kc) {
        const int64_t kc = std::min(blk.kc, D - p0);
        for (int64_t jp = 0; jp < cpanels; ++jp) {
          const T* bp = ytile + jp * nr * D + p0 * nr;
          // The B micro-panel comes from DRAM on its first use (packed Y exceeds the caches) and the micro-kernel
          // reads it at one line per few cycles: prefetch the next one into L2 while this one is in use, a slice
          // before each of the rpanels calls.
          const char* next = reinterpret_cast<const char*>(jp + 1 < cpanels ? bp + nr * D : bp + kc * nr);
          const int64_t lines = (kc * nr * static_cast<int64_t>(sizeof(T)) + 63) / 64;
          const int64_t per_call = (lines + rpanels - 1) / rpanels;
          for (int64_t ip = 0; ip < rpanels; ++ip) {
            for (int64_t l = ip * per_call; l < std::min(lines, (ip + 1) * per_call); ++l)
              __builtin_prefetch(next + 64 * l, 0, 2);
            kern.fn(kc, s.apack.data() + ip * mr * D + p0 * mr, bp, C + ip * mr * ldc + jp * nr, ldc, p0 > 0);
          }
        }
      }
      // Epilogue: dot products -> scores, then selection (or dense store).
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = q0 + r;
        const T* dots = C + r * ldc;
        const T* sc = dots;
        T* buf = a.dense ? out_v + i * G + j0 : s.row.data();
        if (a.metric == KnnMetric::kCosine) {
          const T fi = fx[i];
          for (int64_t j = 0; j < cols; ++j) buf[j] = (dots[j] * fi) * fy[j0 + j];
          sc = buf;
        } else if (a.metric == KnnMetric::kL2 || a.metric == KnnMetric::kL2Sq) {
          const T ni = fx[i];
          for (int64_t j = 0; j < cols; ++j) {
            const T d2 = (ni + fy[j0 + j]) - T(2) * dots[j];
            buf[j] = d2 > T(0) ? d2 : T(0);
          }
          if (a.dense && a.metric == KnnMetric::kL2)
            for (int64_t j = 0; j < cols; ++j) buf[j] = std::sqrt(buf[j]);
          sc = buf;
        } else if (a.dense) {
          std::memcpy(buf, dots, static_cast<size_t>(cols) * sizeof(T));
        }
        if (a.dense) continue;
        const int64_t skip = a.exclude_self ? i + a.row_offset : -1;
        s.heaps[r].push_run(sc, cols, j0, skip);
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

template <typename T>
bool dispatch_order(const KnnTopKArgs& a, const Kernel<T>& kern, InterruptPoll poll) {
  // Dense mode ignores the order; run it through one instantiation.
  if (a.dense || a.largest) return run<T, true>(a, kern, poll);
  return run<T, false>(a, kern, poll);
}

}  // namespace

bool knn_topk_cpu(const KnnTopKArgs& a, InterruptPoll poll) {
  if (a.is_double) {
    // float64: the portable kernel (float64 FMA chains); no SIMD kernel is specialised for it.
    Kernel<double> kern{portable_kernel<double, kPortableMR, kPortableNR>, kPortableMR, kPortableNR};
    return dispatch_order<double>(a, kern, poll);
  }
  return dispatch_order<float>(a, select_kernel(), poll);
}

}  // namespace icfrr
