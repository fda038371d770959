// OpenMP loop over independent rows/queries with a dynamic schedule, a size threshold below which it stays on the
// calling thread, and cooperative interruption. `body(row, thread_id)` must not throw.
#pragma once
#include <omp.h>

#include <cstdint>

#include "interrupt.h"

namespace icfrr {

/// Calls body(i, tid) for i in [0, n) on up to num_threads threads (one thread when n * cost_per_item is small).
/// Returns false when interrupted; rows not yet started are then skipped.
template <typename Body>
bool parallel_rows(int64_t n, int num_threads, double cost_per_item, InterruptPoll poll, Body&& body) {
  Interrupter interrupter(poll);
  const bool parallel = num_threads > 1 && n > 1 && static_cast<double>(n) * cost_per_item > 2e5;
  const int nt = parallel ? num_threads : 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (parallel)
  for (int64_t i = 0; i < n; ++i) {
    const int tid = omp_get_thread_num();
    if (interrupter.should_stop(tid == 0)) continue;
    body(i, tid);
  }
  return !interrupter.interrupted();
}

}  // namespace icfrr
