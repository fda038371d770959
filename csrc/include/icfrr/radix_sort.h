// Stable LSD radix sort of (key, payload) pairs by unsigned key, ascending, and the order-preserving maps from
// float/double to unsigned integers. Stability is what gives ties "the earlier element first" (docs/design.md §2 step 5).
// Host/device: plain pointers and loops only, so the CUDA drivers run the very same code as the CPU kernel.
#pragma once
#include <cstdint>
#include <cstring>

#include "order.h"

namespace icfrr {

/// Digit width of the radix sorts: 11 bits (3 passes over 32-bit keys, 24 KB of histograms) on the host; 8 bits
/// (4 passes, 4 KB) in device code, where the histograms live in each thread's local memory. Either gives the same
/// stable order.
#if defined(__CUDA_ARCH__)
constexpr int kRadixBits = 8;
#else
constexpr int kRadixBits = 11;
#endif

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
/// ~descending_key(v) is the ascending-order key.
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
/// BITS-bit digits (11: 3 passes for 32-bit keys; 8 suits short arrays, whose cost is the histograms), all
/// histograms in one pass; a pass whose digit is the same for every key is skipped. KEY_BITS: the keys are known
/// to be below 2^KEY_BITS (fewer passes and histograms).
template <typename K, typename P, int BITS = kRadixBits, int KEY_BITS = 8 * static_cast<int>(sizeof(K))>
ICFRR_HD void radix_sort_pairs(K* keys, P* payload, int64_t n, K* tmp_keys, P* tmp_payload) {
  constexpr int kBits = BITS;
  constexpr int kBuckets = 1 << kBits;
  constexpr int kPasses = (KEY_BITS + kBits - 1) / kBits;
  if (n <= 1) return;
  uint32_t hist[kPasses][kBuckets];
  for (int p = 0; p < kPasses; ++p)
    for (int b = 0; b < kBuckets; ++b) hist[p][b] = 0;
  for (int64_t i = 0; i < n; ++i) {
    const K k = keys[i];
    for (int p = 0; p < kPasses; ++p) hist[p][(k >> (kBits * p)) & (kBuckets - 1)]++;
  }
  K* src_k = keys;
  P* src_p = payload;
  K* dst_k = tmp_keys;
  P* dst_p = tmp_payload;
  for (int p = 0; p < kPasses; ++p) {
    uint32_t* h = hist[p];
    const int shift = kBits * p;
    if (h[(src_k[0] >> shift) & (kBuckets - 1)] == static_cast<uint32_t>(n)) continue;  // uniform digit
    uint32_t sum = 0;
    for (int b = 0; b < kBuckets; ++b) {
      const uint32_t c = h[b];
      h[b] = sum;
      sum += c;
    }
    for (int64_t i = 0; i < n; ++i) {
      const K k = src_k[i];
      const uint32_t d = h[(k >> shift) & (kBuckets - 1)]++;
      dst_k[d] = k;
      dst_p[d] = src_p[i];
    }
    K* tk = src_k;
    src_k = dst_k;
    dst_k = tk;
    P* tp = src_p;
    src_p = dst_p;
    dst_p = tp;
  }
  if (src_k != keys) {
    for (int64_t i = 0; i < n; ++i) {
      keys[i] = src_k[i];
      payload[i] = src_p[i];
    }
  }
}

/// Stable sort of items[0..n) by a 64-bit key, ascending, in two steps: a radix sort by the key's high 32 bits,
/// then an insertion sort by the full key inside each run of equal high bits (runs are almost always of length 1).
/// About 2.5x fewer passes than a radix sort over all 64 bits. full_key(item) must be cheap.
/// coarse/tmp_coarse: scratch of size >= n; tmp_items: scratch of size >= n.
template <typename P, typename FullKey>
ICFRR_HD void sort_by_u64_key(P* items, int64_t n, uint32_t* coarse, uint32_t* tmp_coarse, P* tmp_items,
                              FullKey full_key) {
  if (n <= 1) return;
  for (int64_t i = 0; i < n; ++i) coarse[i] = static_cast<uint32_t>(full_key(items[i]) >> 32);
  radix_sort_pairs(coarse, items, n, tmp_coarse, tmp_items);
  int64_t start = 0;
  while (start < n) {
    int64_t end = start + 1;
    while (end < n && coarse[end] == coarse[start]) ++end;
    for (int64_t x = start + 1; x < end; ++x) {  // stable insertion sort of the run by the full key
      const P item = items[x];
      const uint64_t key = full_key(item);
      int64_t y = x;
      while (y > start && full_key(items[y - 1]) > key) {
        items[y] = items[y - 1];
        --y;
      }
      items[y] = item;
    }
    start = end;
  }
}

/// Stable sort of items[0..n) by a double key, descending (ties keep the input order), given the keys' range
/// [kmin, kmax]. A radix sort (BITS-bit digits) by a coarse key c = (kmax - key) * (2^COARSE_BITS - 1) /
/// (kmax - kmin), truncated, then an insertion sort by the exact key inside each run of equal c. c is a monotone
/// function of the key (IEEE subtraction and multiplication round monotonically), so the runs are already in
/// order with respect to each other and the result is exact; runs are almost always of length 1.
/// coarse/tmp_coarse: scratch of size >= n; tmp_items: scratch of size >= n.
template <int COARSE_BITS = 22, int BITS = kRadixBits, typename P, typename KeyOf>
ICFRR_HD void sort_desc_by_double(P* items, int64_t n, uint32_t* coarse, uint32_t* tmp_coarse, P* tmp_items,
                                  KeyOf key_of, double kmin, double kmax) {
  static_assert(COARSE_BITS >= 1 && COARSE_BITS <= 31, "coarse keys are 31 bits at most");
  if (n <= 1) return;
  constexpr double kTop = static_cast<double>((1u << COARSE_BITS) - 1u);
  const double range = kmax - kmin;
  const double scale = kTop / range;
  auto exact = [&key_of](P item) { return descending_key(key_of(item)); };
  if (!(range > 0.0) || !(range < __builtin_huge_val()) || !(scale > 0.0) || !(scale < __builtin_huge_val())) {
    sort_by_u64_key(items, n, coarse, tmp_coarse, tmp_items, exact);  // equal keys, or a range that cannot scale
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const double c = (kmax - key_of(items[i])) * scale;
    coarse[i] = c < kTop ? static_cast<uint32_t>(c) : static_cast<uint32_t>(kTop);
  }
  radix_sort_pairs<uint32_t, P, BITS, COARSE_BITS>(coarse, items, n, tmp_coarse, tmp_items);
  for (int64_t i = 1; i < n; ++i) {  // runs of equal coarse keys (rare): order them by the exact key
    if (coarse[i] != coarse[i - 1]) continue;
    const int64_t start = i - 1;
    int64_t end = i + 1;
    while (end < n && coarse[end] == coarse[start]) ++end;
    if (end - start > 32) {  // a crowded run (keys bunched far from an outlier): exact radix, never quadratic
      sort_by_u64_key(items + start, end - start, coarse + start, tmp_coarse, tmp_items, exact);
    } else {
      for (int64_t x = start + 1; x < end; ++x) {  // stable insertion sort of the run, descending
        const P item = items[x];
        const double key = key_of(item);
        int64_t y = x;
        while (y > start && key_of(items[y - 1]) < key) {
          items[y] = items[y - 1];
          --y;
        }
        items[y] = item;
      }
    }
    i = end;  // coarse[start, end) may now be scratch; the next comparison is coarse[end + 1] vs coarse[end]
  }
}

}  // namespace icfrr
