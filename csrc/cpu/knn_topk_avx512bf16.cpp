// AVX512_BF16 micro-kernel of knn_topk (vdpbf16ps): the bf16 half of knn_topk_avx512.cpp's description; compiled
// alone with the AVX-512 F/BW/VL/DQ + BF16 flags (CMakeLists.txt) and called only when icfrr::simd_level() allows it.
// Register tile 12 x 32 like the fp32 AVX-512 kernel; every word of A and B is a pair of bfloat16 (depths 2q, 2q + 1),
// so one instruction does two depth steps: twice the fp32 kernel's products per instruction.
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "icfrr/knn_topk.h"

namespace icfrr {
namespace {

constexpr int kMR = 12;

/// kc depth pairs; A[p * 12 + i], B[p * 32 + j]: 32-bit words of two bfloat16 (stored as float bit patterns).
void kernel_bf16_12x32(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, bool accumulate) {
  __m512 c[kMR][2];
#pragma GCC unroll 12
  for (int i = 0; i < kMR; ++i) {
    c[i][0] = accumulate ? _mm512_loadu_ps(C + i * ldc) : _mm512_setzero_ps();
    c[i][1] = accumulate ? _mm512_loadu_ps(C + i * ldc + 16) : _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < kc; ++p, A += kMR, B += 32) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_ps(B), b1 = (__m512bh)_mm512_loadu_ps(B + 16);
#pragma GCC unroll 12
    for (int i = 0; i < kMR; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_ps(A[i]);
      c[i][0] = _mm512_dpbf16_ps(c[i][0], a, b0);
      c[i][1] = _mm512_dpbf16_ps(c[i][1], a, b1);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < kMR; ++i) {
    _mm512_storeu_ps(C + i * ldc, c[i][0]);
    _mm512_storeu_ps(C + i * ldc + 16, c[i][1]);
  }
}

}  // namespace

KnnKernelInfo knn_microkernel_avx512_bf16() { return KnnKernelInfo{kernel_bf16_12x32, kMR, 32}; }

}  // namespace icfrr
#endif
