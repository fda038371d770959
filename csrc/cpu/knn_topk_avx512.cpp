// AVX-512 micro-kernels of knn_topk (contract: include/icfrr/knn_topk.h, KnnMicroKernel). Compiled alone with the
// AVX-512 F/BW/VL/DQ flags, and this file's bf16 kernel additionally with AVX512_BF16 (CMakeLists.txt); called only
// when icfrr::simd_level() (simd.h, cpuid once) allows it. It uses no inline function or template shared with other
// translation units, so no AVX-512 code can leak into the portable path.
//
// Register tile 12 x 32 (two zmm of items per row): 24 accumulators + 2 B vectors + 1 broadcast of the 32 zmm
// registers. Per depth step 2 loads + 12 broadcasts feed 24 FMAs, so the FMA pipes, not the loads, set the pace.
//   * fp32: one FMA per (i, j, p) in increasing p, the chain of the portable and AVX2 kernels (identical scores).
//   * bf16 (vdpbf16ps): A and B hold pairs of bfloat16 per 32-bit word (low half depth 2q, high half 2q + 1); per
//     word the instruction adds the high product, then the low one, each an fp32 FMA rounded to nearest even (the
//     products of two bfloat16 are exact in fp32). The driver gives the other levels the same chain (each pair's
//     odd depth first), so bf16 scores are identical across levels unless a value or partial sum is subnormal
//     (this instruction flushes those to zero).
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include <cstdint>

#include "icfrr/knn_topk.h"

namespace icfrr {
namespace {

constexpr int kMR = 12;

void kernel_f32_12x32(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, bool accumulate) {
  __m512 c[kMR][2];
#pragma GCC unroll 12
  for (int i = 0; i < kMR; ++i) {
    c[i][0] = accumulate ? _mm512_loadu_ps(C + i * ldc) : _mm512_setzero_ps();
    c[i][1] = accumulate ? _mm512_loadu_ps(C + i * ldc + 16) : _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < kc; ++p, A += kMR, B += 32) {
    const __m512 b0 = _mm512_loadu_ps(B), b1 = _mm512_loadu_ps(B + 16);
#pragma GCC unroll 12
    for (int i = 0; i < kMR; ++i) {
      const __m512 a = _mm512_set1_ps(A[i]);
      c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < kMR; ++i) {
    _mm512_storeu_ps(C + i * ldc, c[i][0]);
    _mm512_storeu_ps(C + i * ldc + 16, c[i][1]);
  }
}

}  // namespace

KnnKernelInfo knn_microkernel_avx512() { return KnnKernelInfo{kernel_f32_12x32, kMR, 32}; }

}  // namespace icfrr
#endif
