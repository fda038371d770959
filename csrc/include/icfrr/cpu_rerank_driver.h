// The CPU drivers' shared loop over queries for the ICFRR core (icfrr_rerank.cpp for dense scores,
// icfrr_candidates.cpp for candidate lists): per-worker scratch allocated before the OpenMP region
// (alloc_worker_buffers: fewer threads when memory is short, OutOfMemory with the size when not even one fits),
// Ctrl-C polled before every iteration, and each voter's graph row checked (distinct ids, not the item itself) the
// first time any thread reads it (graph_check.h); a bad row is reported after the region.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "graph_check.h"
#include "icfrr_rerank_core.h"
#include "interrupt.h"
#include "parallel.h"
#include "scratch.h"

namespace icfrr {

/// The CPU driver's hooks into rerank_query / rerank_query_full: graph-row checks of the voters, and Ctrl-C.
struct CpuQueryHooks {
  GraphRowChecker* checker;
  uint8_t* marks;
  Interrupter* interrupter;
  bool launching_thread;
  void voters(const int32_t* order, int64_t kq) {
    for (int64_t p = 0; p < kq; ++p) checker->check(order[p], marks);
  }
  bool stop() { return interrupter->should_stop(launching_thread); }
};

/// Run rerank_query<T, I, Acc> over the a.Q queries. `cost`: work per query (for the thread count); `what` names
/// the op in out-of-memory messages. Returns false when interrupted.
template <typename T, typename I, typename Acc>
bool run_rerank_queries(const RerankArgs& a, InterruptPoll poll, double cost, const char* what) {
  GraphRowChecker checker(a.neighbors, a.nbr_stride, a.N, a.K_g);
  const int64_t bytes = rerank_scratch_bytes<Acc>(a);
  const int64_t marks_at = (bytes + 7) / 8 * 8;
  const auto buffers = alloc_worker_buffers(parallel_threads(a.Q, a.num_threads, cost),
                                            marks_at + checker.marker_bytes(), what);
  const int nt = static_cast<int>(buffers.size());
  std::vector<RerankScratch<Acc>> scratch(nt);
  std::vector<uint8_t*> marks(nt);
  for (int t = 0; t < nt; ++t) {
    scratch[t] = rerank_scratch_carve<Acc>(buffers[t].get(), a);
    marks[t] = reinterpret_cast<uint8_t*>(buffers[t].get()) + marks_at;
    for (int64_t j = 0; j < checker.marker_bytes(); ++j) marks[t][j] = 0;
  }
  Interrupter interrupter(poll);
  const bool done = parallel_rows(a.Q, nt, cost, interrupter, [&](int64_t q, int tid) {
    rerank_query<T, I, Acc>(a, q, scratch[tid], CpuQueryHooks{&checker, marks[tid], &interrupter, tid == 0});
  });
  if (!done) return false;
  if (checker.bad_row() >= 0) throw std::invalid_argument(checker.describe(checker.bad_row()));
  return true;
}

/// Capacity of the packed votes, a checked invariant: an item gets at most one vote per voter (distinct ids per
/// row, checked by the hooks), so K_q' voters of ranks < K_g must fit the packing's count and rank-sum fields.
/// Calls run.template operator()<Acc>() with the narrowest packing that fits.
template <typename Run>
bool with_vote_packing(int64_t kq, int64_t K_g, Run&& run) {
  if (vote_packing_fits<uint32_t>(kq, K_g)) return run(uint32_t{});
  if (vote_packing_fits<uint64_t>(kq, K_g)) return run(uint64_t{});
  throw std::invalid_argument("min(k_q, depth) = " + std::to_string(kq) + " voters with k_g = " +
                              std::to_string(K_g) + " neighbours exceed the 64-bit vote packing");
}

}  // namespace icfrr
