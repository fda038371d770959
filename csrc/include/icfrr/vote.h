// The arithmetic of one ICFRR vote (docs/design.md §2 steps 2-4), shared by the CPU kernel and the CUDA drivers so that
// every backend rounds identically:
//   votes are packed integers  acc_j = c_j << SHIFT | R_j  (one add per update: (1 << SHIFT) + r),
//   delta_j = (c_j * (G - 1) - R_j) / ((G - 1) * K_q')   -- exact integers, one correctly rounded division,
//   key     = base + beta * delta_j                        -- one multiply, one add (compiled without FMA fusion).
// delta equals mean over the voters of alpha(r) = 1 - r / (G - 1), the paper's rank weight.
#pragma once
#include <cstdint>

#include "order.h"

namespace icfrr {

/// Packed vote accumulator: count in the high bits, rank sum in the low SHIFT bits.
template <typename Acc>
struct VotePacking;

/// 32-bit words: count < 2^8, rank sum < 2^24 (fits K_q' <= 255 with K_q' * (K_g - 1) < 2^24, e.g. 250 x 256).
template <>
struct VotePacking<uint32_t> {
  static constexpr int kShift = 24;
  static constexpr uint64_t kMaxCount = (1ull << 8) - 1;
  static constexpr uint64_t kMaxRankSum = (1ull << 24) - 1;
};

/// 64-bit words: count < 2^24, rank sum < 2^40.
template <>
struct VotePacking<uint64_t> {
  static constexpr int kShift = 40;
  static constexpr uint64_t kMaxCount = (1ull << 24) - 1;
  static constexpr uint64_t kMaxRankSum = (1ull << 40) - 1;
};

/// True when the packed word of type Acc can hold K_q' votes of ranks < K_g without overflow. This bounds the votes
/// only because a voter votes at most once per item: graph rows hold distinct ids, which the CPU driver checks for
/// every row it reads (graph_check.h) and the other paths check up front (icfrr_fast.ops._check_graph_rows).
template <typename Acc>
ICFRR_HD bool vote_packing_fits(int64_t kq, int64_t k_g) {
  return static_cast<uint64_t>(kq) <= VotePacking<Acc>::kMaxCount &&
         static_cast<uint64_t>(kq) * static_cast<uint64_t>(k_g - 1) <= VotePacking<Acc>::kMaxRankSum;
}

template <typename Acc>
ICFRR_HD Acc vote_increment(int64_t rank) {
  return (static_cast<Acc>(1) << VotePacking<Acc>::kShift) + static_cast<Acc>(rank);
}

template <typename Acc>
ICFRR_HD int64_t vote_count(Acc acc) {
  return static_cast<int64_t>(acc >> VotePacking<Acc>::kShift);
}

template <typename Acc>
ICFRR_HD int64_t vote_rank_sum(Acc acc) {
  return static_cast<int64_t>(acc & ((static_cast<Acc>(1) << VotePacking<Acc>::kShift) - 1));
}

/// delta = (c (G-1) - R) / ((G-1) K_q'), from exact integers (< 2^53), one rounding.
ICFRR_HD double vote_delta(int64_t count, int64_t rank_sum, int64_t G, int64_t kq) {
  const int64_t num = count * (G - 1) - rank_sum;
  const int64_t den = (G - 1) * kq;
  return static_cast<double>(num) / static_cast<double>(den);
}

/// New key of a voted item: base + beta * delta (base: slot value or accumulated score, docs/design.md §2 step 4).
ICFRR_HD double vote_key(double base, double beta, double delta) {
  const double boost = beta * delta;
  return base + boost;
}

}  // namespace icfrr
