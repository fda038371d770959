// Fused similarity + top-k (docs/design.md §3, "fused top-K"): for each row x_i of X (Q, D), the k best rows of Y (G, D)
// by inner product, cosine or Euclidean distance, computed tile by tile with a register-blocked micro-kernel and
// selected in the same pass; no Q x G buffer exists (memory O((Q + G) D + Q k + one tile per thread)).
// Oracle: icfrr_fast.reference.knn_topk   Test: tests/test_knn_topk.py   Bench: benchmarks/bench_knn_topk.py
// Invariants: ties -> smaller index; with exclude_self row i never returns item i + row_offset; int64 ids; every
// score s(i, j) is one fixed sequence of FMAs over d = 0..D-1 (precision bf16: over the bfloat16-rounded inputs,
// each pair of depths (2q, 2q + 1) taken odd first, the order of the AVX512_BF16 dot-product instruction), so it is
// bit-identical whatever the tile, thread count, batch or SIMD level (portable, AVX2, AVX-512, AVX-512 BF16; chosen
// by icfrr::simd_level(), simd.h) that computes it. The one exception: the bf16 instruction flushes subnormal values
// and partial sums (|v| < 2^-126) to zero, the other levels keep them.
#pragma once
#include <cstdint>

#include "interrupt.h"

namespace icfrr {

/// Metric of knn_topk. Scores: kIP = x.y; kCosine = x.y * ((1/|x|) * (1/|y|)) (0 for a zero vector); kL2Sq =
/// d2 = (|x|^2 + |y|^2) - 2 x.y clamped at 0 (norms summed in float64, rounded once); kL2 selects on the same d2 and
/// returns sqrt(d2) (the Euclidean distance).
enum class KnnMetric : int { kIP = 0, kCosine = 1, kL2 = 2, kL2Sq = 3 };

/// Arithmetic of the dot products. kFP32: inputs as given (float32; float64 inputs use float64 throughout).
/// kBF16: inputs rounded to bfloat16 (round to nearest even), products accumulated in float32.
enum class KnnPrecision : int { kFP32 = 0, kBF16 = 1 };

/// Output of knn_topk: for every row, the k best (value, index) pairs, best first, or (dense mode) all G values.
struct KnnTopKArgs {
  const void* x = nullptr;   ///< (Q, D) float32 or float64 (is_double), row stride x_stride, unit column stride
  int64_t x_stride = 0;
  const void* y = nullptr;   ///< (G, D), same dtype as x, row stride y_stride, unit column stride
  int64_t y_stride = 0;
  bool is_double = false;
  int64_t Q = 0, G = 0, D = 0;
  int64_t k = 0;             ///< 1 <= k <= G (- 1 with exclude_self); ignored in dense mode
  KnnMetric metric = KnnMetric::kIP;
  bool largest = true;       ///< true: largest scores first (ip/cosine); false: smallest first (l2)
  bool exclude_self = false; ///< skip item i + row_offset in row i
  int64_t row_offset = 0;
  KnnPrecision precision = KnnPrecision::kFP32;
  bool dense = false;        ///< write all scores: out_values is (Q, G), out_indices unused (k, largest ignored)
  void* out_values = nullptr;      ///< (Q, k) (or (Q, G) when dense), dtype of x; caller-owned
  int64_t* out_indices = nullptr;  ///< (Q, k) int64; caller-owned
  int num_threads = 1;
};

/// Run knn_topk on the CPU (OpenMP over blocks of rows, and over gallery chunks when there are few rows). The
/// micro-kernel is the best that icfrr::simd_level() allows (same results; see knn_topk_kernel_name).
/// Returns false when interrupted (outputs are then incomplete and must be discarded).
bool knn_topk_cpu(const KnnTopKArgs& args, InterruptPoll poll);

/// Allow (true, the default) or forbid the symmetric graph build (x is y with exclude_self: each pair of row blocks
/// computed once, half the FLOPs). Results are identical either way; tests run both.
void knn_topk_set_symmetric(bool enabled);
bool knn_topk_symmetric_enabled();

/// Rows per block the symmetric build would use for a float32 (G, D) gallery graph with k neighbours, or 0 when it
/// would not run (switched off, too few blocks, or its per-row collectors would exceed ~1 GiB). Callers that batch
/// rows use it to decide whether to pass the whole gallery in one call instead.
int64_t knn_topk_symmetric_rows(int64_t G, int64_t D, int64_t k, int num_threads);

// ------------------------------------------------------------------------------------------------------------------
// Micro-kernels (one translation unit per ISA, compiled with that ISA's flags; the driver never inlines them).
// ------------------------------------------------------------------------------------------------------------------

/// C (MR x NR, row stride ldc) = (accumulate ? C : 0) + A^T B over p in [0, kc), one FMA per (i, j, p) in increasing
/// p. A: packed panel (kc, MR) float32, A[p * MR + i]; B: packed panel (kc, NR) float32, B[p * NR + j].
using KnnMicroKernel = void (*)(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, bool accumulate);

/// A micro-kernel and its register tile.
struct KnnKernelInfo {
  KnnMicroKernel fn = nullptr;
  int64_t mr = 0, nr = 0;
};

KnnKernelInfo knn_microkernel_avx2();         ///< 6 x 16 AVX2 + FMA (knn_topk_avx2.cpp)
KnnKernelInfo knn_microkernel_avx512();       ///< 12 x 32 AVX-512F (knn_topk_avx512.cpp)
/// 12 x 32 AVX512_BF16 (knn_topk_avx512bf16.cpp): kc counts depth PAIRS; A and B words are two bfloat16 each.
KnnKernelInfo knn_microkernel_avx512_bf16();

/// The micro-kernel float32 inputs of this precision would use now, e.g. "avx512 12x32" or "avx512_bf16 12x32"
/// (float64 inputs always use "scalar 4x16").
const char* knn_topk_kernel_name(KnnPrecision precision);

}  // namespace icfrr
