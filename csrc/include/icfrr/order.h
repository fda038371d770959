// Ranking order shared by every kernel: one comparator type fixes the direction (largest or smallest first)
// and the tie rule (the smaller index wins), so callers never spell either out (docs/design.md §2, §3.1).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define ICFRR_HD __host__ __device__ __forceinline__
#else
#define ICFRR_HD inline
#endif

namespace icfrr {

/// Order on (value, index) pairs: LARGEST=true ranks larger values first; equal values rank the smaller index first.
template <bool LARGEST>
struct RankOrder {
  /// True when (va, ia) ranks strictly before (vb, ib).
  template <typename T>
  ICFRR_HD static bool before(T va, int64_t ia, T vb, int64_t ib) {
    if (va != vb) return LARGEST ? (va > vb) : (va < vb);
    return ia < ib;
  }
  /// True when value a ranks strictly before value b, ignoring indices.
  template <typename T>
  ICFRR_HD static bool value_before(T a, T b) {
    return LARGEST ? (a > b) : (a < b);
  }
};

}  // namespace icfrr
