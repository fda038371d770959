// AVX-512F micro-kernel of knn_topk (contract: include/icfrr/knn_topk.h, KnnMicroKernel). Compiled alone with
// -mavx512f (CMakeLists.txt) and called only after __builtin_cpu_supports("avx512f"); it uses no inline function or
// template shared with other translation units, so no AVX-512 code can leak into the other paths.
// Register tile 12 x 32: 24 accumulators + 2 B vectors + 1 broadcast = 27 of the 32 zmm registers; per depth step
// 2 loads + 12 broadcasts feed 24 FMAs (12 cycles on 2 FMA pipes). Same FMA chain per score as every other path.
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include <cstdint>

#include "icfrr/knn_topk.h"

namespace icfrr {
namespace {

constexpr int kMR = 12;

void kernel_12x32(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, bool accumulate) {
  __m512 c0[kMR], c1[kMR];
#pragma GCC unroll 12
  for (int i = 0; i < kMR; ++i) {
    c0[i] = accumulate ? _mm512_loadu_ps(C + i * ldc) : _mm512_setzero_ps();
    c1[i] = accumulate ? _mm512_loadu_ps(C + i * ldc + 16) : _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < kc; ++p, A += kMR, B += 32) {
    const __m512 b0 = _mm512_loadu_ps(B), b1 = _mm512_loadu_ps(B + 16);
#pragma GCC unroll 12
    for (int i = 0; i < kMR; ++i) {
      const __m512 a = _mm512_set1_ps(A[i]);
      c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < kMR; ++i) {
    _mm512_storeu_ps(C + i * ldc, c0[i]);
    _mm512_storeu_ps(C + i * ldc + 16, c1[i]);
  }
}

}  // namespace

KnnKernelInfo knn_microkernel_avx512() { return KnnKernelInfo{kernel_12x32, kMR, 32}; }

}  // namespace icfrr
#endif
