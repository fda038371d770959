// Stable LSD radix sort of (key, payload) pairs by unsigned key, ascending, and the order-preserving maps from
// float/double to unsigned integers. Stability is what gives ties "the earlier element first" (DESIGN §2 step 5).
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

namespace icfrr {

/// Map a float/double to an unsigned integer of the same width whose ascending order is the value's descending
/// order (-0.0 and +0.0 map to the same key, as they compare equal).
inline uint32_t descending_key(float v) {
  if (v == 0.0f) v = 0.0f;
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // ascending-order bits
  return ~u;
}
inline uint64_t descending_key(double v) {
  if (v == 0.0) v = 0.0;
  uint64_t u;
  std::memcpy(&u, &v, 8);
  u = (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
  return ~u;
}

/// Stable sort of keys[0..n) ascending, carrying payload along. tmp_keys/tmp_payload are scratch of size >= n.
/// 8-bit digits; a pass whose digit is the same for every key is skipped.
template <typename K, typename P>
void radix_sort_pairs(K* keys, P* payload, int64_t n, std::vector<K>& tmp_keys, std::vector<P>& tmp_payload) {
  static_assert(std::is_unsigned<K>::value, "radix keys must be unsigned");
  constexpr int kPasses = sizeof(K);
  if (n <= 1) return;
  if (static_cast<int64_t>(tmp_keys.size()) < n) tmp_keys.resize(n);
  if (static_cast<int64_t>(tmp_payload.size()) < n) tmp_payload.resize(n);
  uint32_t hist[kPasses][256];
  std::memset(hist, 0, sizeof(hist));
  for (int64_t i = 0; i < n; ++i) {
    K k = keys[i];
    for (int p = 0; p < kPasses; ++p) hist[p][(k >> (8 * p)) & 0xFF]++;
  }
  K* src_k = keys;
  P* src_p = payload;
  K* dst_k = tmp_keys.data();
  P* dst_p = tmp_payload.data();
  for (int p = 0; p < kPasses; ++p) {
    uint32_t* h = hist[p];
    if (h[(src_k[0] >> (8 * p)) & 0xFF] == static_cast<uint32_t>(n)) continue;  // uniform digit
    uint32_t sum = 0;
    for (int b = 0; b < 256; ++b) {
      uint32_t c = h[b];
      h[b] = sum;
      sum += c;
    }
    for (int64_t i = 0; i < n; ++i) {
      K k = src_k[i];
      uint32_t d = h[(k >> (8 * p)) & 0xFF]++;
      dst_k[d] = k;
      dst_p[d] = src_p[i];
    }
    std::swap(src_k, dst_k);
    std::swap(src_p, dst_p);
  }
  if (src_k != keys) {
    std::memcpy(keys, src_k, n * sizeof(K));
    std::memcpy(payload, src_p, n * sizeof(P));
  }
}

}  // namespace icfrr
