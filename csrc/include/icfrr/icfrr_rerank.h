// Fused ICFRR re-ranking (docs/design.md §2): for each query, the initial stable descending order of its scores, then all
// T iterations of integer vote accumulation + stable merge of the boosted items into the unboosted order.
// Oracle: icfrr_fast.reference.icfrr_rerank   Test: tests/test_icfrr_rerank.py   Bench: benchmarks/bench_icfrr_rerank.py
// Invariants: integer votes, float64 keys, ties keep the current order; results identical for any thread count.
#pragma once
#include <cstdint>

#include "interrupt.h"

namespace icfrr {

/// Arguments of one re-ranking call. All pointers are borrowed; the caller validated every size.
struct RerankArgs {
  const void* scores = nullptr;   ///< (Q, G) float32 or float64 (scores_is_double), row stride score_stride;
                                  ///< with `ids`: (Q, depth) scores of the candidates
  bool scores_is_double = false;
  int64_t score_stride = 0;       ///< elements between consecutive query rows
  bool largest = true;            ///< false: scores are distances (negated internally, exactly)
  const int32_t* neighbors = nullptr;  ///< (N, >= K_g) int32, row stride nbr_stride; n_i(r) = neighbors[i*stride + r]
                                       ///< in [0, N - 1], or -1 (a neighbour that gets no vote) with `ids`
  int64_t nbr_stride = 0;
  int64_t Q = 0, G = 0, K_g = 0;  ///< G: gallery size of the rank weight alpha(r) = 1 - r / (G - 1)
  int64_t N = 0;                  ///< rows of `neighbors` = size of the id space (dense scores: N = G)
  /// Candidate lists (icfrr_candidates): (Q, depth) int32/int64 ids into [0, N - 1], distinct per row, in any
  /// order, padding -1 as a row's suffix. Null: dense (Q, G) scores, candidates = the top-depth of each row.
  const void* ids = nullptr;
  bool ids_is_int64 = false;
  int64_t ids_stride = 0;
  int64_t k_q = 0;                ///< voters per iteration, before clipping to L
  double beta = 0.5;
  int64_t iters = 0;              ///< T >= 0
  bool paper = false;             ///< false: semantics "reference" (slot values), true: "paper" (accumulated scores)
  int64_t depth = 0;              ///< L in [1, G]: candidates = top-L of the initial order (with ids: row length)
  int64_t k = 0;                  ///< outputs per query, in [1, L]
  bool early_stop = false;        ///< stop when the voter set is unchanged by an iteration
  void* out_values = nullptr;     ///< (Q, k) float32, or float64 when values_is_double: final keys (negated back
                                  ///< when !largest); beyond a row's L_q candidates -inf (largest) / +inf
  bool values_is_double = false;
  int64_t* out_indices = nullptr; ///< (Q, k) int64: gallery ids, best first; -1 beyond a row's L_q candidates
  int64_t* out_history = nullptr; ///< (Q, T + 1, k) int64 or null: order after each iteration, [0] = initial
  int num_threads = 1;
};

/// Run ICFRR for all queries (OpenMP over queries, dynamic schedule). Returns false when interrupted (outputs are
/// then incomplete and must be discarded); polls `poll` inside each query's iterations too, so one long query stops
/// promptly. Throws OutOfMemory (scratch allocated before the parallel region, its size in the message) and
/// std::invalid_argument when a voter's graph row holds a duplicate id or the row's own id (checked once per row
/// and call, see graph_check.h).
bool icfrr_rerank_cpu(const RerankArgs& args, InterruptPoll poll);

}  // namespace icfrr
