// OpenMP loop over independent rows/queries with a dynamic schedule, a size threshold below which it stays on the
// calling thread, and cooperative interruption. An exception thrown by `body(row, thread_id)` (e.g. OutOfMemory)
// never leaves the OpenMP region (that would call std::terminate): the first one is kept, the remaining rows are
// skipped, and it is rethrown on the calling thread after the region.
#pragma once
#include <omp.h>

#include <cstdint>
#include <exception>

#include "interrupt.h"

namespace icfrr {

/// Threads parallel_rows will use for n items of cost_per_item each (1 when the work is small): size per-thread
/// scratch with this before the region.
inline int parallel_threads(int64_t n, int num_threads, double cost_per_item) {
  const bool parallel = num_threads > 1 && n > 1 && static_cast<double>(n) * cost_per_item > 2e5;
  if (!parallel) return 1;
  return n < num_threads ? static_cast<int>(n) : num_threads;
}

/// Calls body(i, tid) for i in [0, n) on up to num_threads threads (one thread when n * cost_per_item is small),
/// tid < parallel_threads(n, num_threads, cost_per_item). Returns false when interrupted (rows not yet started are
/// then skipped); rethrows the first exception a body threw. `interrupter` may also be polled inside a long body
/// (Interrupter::should_stop(tid == 0)).
template <typename Body>
bool parallel_rows(int64_t n, int num_threads, double cost_per_item, Interrupter& interrupter, Body&& body) {
  const int nt = parallel_threads(n, num_threads, cost_per_item);
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1)
  for (int64_t i = 0; i < n; ++i) {
    const int tid = omp_get_thread_num();
    if (interrupter.should_stop(tid == 0)) continue;
    try {
      body(i, tid);
    } catch (...) {
#pragma omp critical(icfrr_parallel_rows_error)
      if (!error) error = std::current_exception();
      interrupter.cancel();
    }
  }
  if (error) std::rethrow_exception(error);
  return !interrupter.interrupted();
}

/// parallel_rows with its own Interrupter polling `poll`.
template <typename Body>
bool parallel_rows(int64_t n, int num_threads, double cost_per_item, InterruptPoll poll, Body&& body) {
  Interrupter interrupter(poll);
  return parallel_rows(n, num_threads, cost_per_item, interrupter, body);
}

}  // namespace icfrr
