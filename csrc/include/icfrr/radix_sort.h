// Stable LSD radix sort of (key, payload) pairs by unsigned key, ascending, and the order-preserving maps from
// float/double to unsigned integers. Stability is what gives ties "the earlier element first" (DESIGN §2 step 5).
// Host/device: plain pointers and loops only, so the CUDA drivers run the very same code as the CPU kernel.
#pragma once
#include <cstdint>
#include <cstring>

#include "order.h"

namespace icfrr {

ICFRR_HD uint32_t float_bits(float v) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(v);
#else
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
#endif
}

ICFRR_HD uint64_t double_bits(double v) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(v));
#else
  uint64_t u;
  std::memcpy(&u, &v, 8);
  return u;
#endif
}

/// Map a float/double to an unsigned integer of the same width whose ascending order is the value's descending
/// order (-0.0 and +0.0 map to the same key, as they compare equal). NaN never reaches here (validated).
ICFRR_HD uint32_t descending_key(float v) {
  if (v == 0.0f) v = 0.0f;
  uint32_t u = float_bits(v);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // ascending-order bits
  return ~u;
}
ICFRR_HD uint64_t descending_key(double v) {
  if (v == 0.0) v = 0.0;
  uint64_t u = double_bits(v);
  u = (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
  return ~u;
}

/// Stable sort of keys[0..n) ascending, carrying payload along; tmp_keys/tmp_payload are scratch of size >= n.
/// 8-bit digits, all histograms in one pass; a pass whose digit is the same for every key is skipped.
template <typename K, typename P>
ICFRR_HD void radix_sort_pairs(K* keys, P* payload, int64_t n, K* tmp_keys, P* tmp_payload) {
  constexpr int kPasses = sizeof(K);
  if (n <= 1) return;
  uint32_t hist[kPasses][256];
  for (int p = 0; p < kPasses; ++p)
    for (int b = 0; b < 256; ++b) hist[p][b] = 0;
  for (int64_t i = 0; i < n; ++i) {
    const K k = keys[i];
    for (int p = 0; p < kPasses; ++p) hist[p][(k >> (8 * p)) & 0xFF]++;
  }
  K* src_k = keys;
  P* src_p = payload;
  K* dst_k = tmp_keys;
  P* dst_p = tmp_payload;
  for (int p = 0; p < kPasses; ++p) {
    uint32_t* h = hist[p];
    if (h[(src_k[0] >> (8 * p)) & 0xFF] == static_cast<uint32_t>(n)) continue;  // uniform digit
    uint32_t sum = 0;
    for (int b = 0; b < 256; ++b) {
      const uint32_t c = h[b];
      h[b] = sum;
      sum += c;
    }
    for (int64_t i = 0; i < n; ++i) {
      const K k = src_k[i];
      const uint32_t d = h[(k >> (8 * p)) & 0xFF]++;
      dst_k[d] = k;
      dst_p[d] = src_p[i];
    }
    K* tk = src_k; src_k = dst_k; dst_k = tk;
    P* tp = src_p; src_p = dst_p; dst_p = tp;
  }
  if (src_k != keys) {
    for (int64_t i = 0; i < n; ++i) {
      keys[i] = src_k[i];
      payload[i] = src_p[i];
    }
  }
}

}  // namespace icfrr
