// Per-row top-k of a dense matrix by partial selection (no full sort): the gallery graph from a dense G x G
// distance matrix and the candidates from a dense Q x G score matrix.
// Oracle: icfrr_fast.reference.dense_topk   Test: tests/test_dense_topk.py   Bench: benchmarks/bench_icfrr_rerank.py
// Invariants: ties -> smaller index; with exclude_self, row r never returns column r + row_offset; int64 ids.
#pragma once
#include <cstdint>

#include "interrupt.h"

namespace icfrr {

/// Arguments of one dense top-k call. All pointers are borrowed; the caller validated every size.
struct DenseTopKArgs {
  const void* x = nullptr;      ///< (R, C) float32 or float64 (x_is_double), row stride x_stride, unit column stride
  bool x_is_double = false;
  int64_t x_stride = 0;
  int64_t R = 0, C = 0, k = 0;  ///< 1 <= k <= C (- 1 with exclude_self)
  bool largest = true;
  bool exclude_self = false;    ///< skip column r + row_offset in row r
  int64_t row_offset = 0;
  void* out_values = nullptr;   ///< (R, k), same dtype as x
  int64_t* out_indices = nullptr;  ///< (R, k) int64
  int num_threads = 1;
};

bool dense_topk_cpu(const DenseTopKArgs& args, InterruptPoll poll);

}  // namespace icfrr
