// CPU driver of the fused ICFRR kernel: OpenMP over queries (dynamic schedule), one scratch buffer per thread
// allocated before the parallel region (alloc_worker_buffers: fewer threads when memory is short, OutOfMemory with
// the size when not even one fits), the per-query algorithm from the shared host/device core
// (include/icfrr/icfrr_rerank_core.h), or at full depth with few votes per iteration against G the touched-set
// algorithm (include/icfrr/icfrr_rerank_full.h). Each query polls Ctrl-C before every iteration and checks the graph
// rows of its voters the first time any thread reads them (include/icfrr/graph_check.h).
#include "icfrr/icfrr_rerank.h"

#include <memory>
#include <vector>

#include "icfrr/cpu_rerank_driver.h"
#include "icfrr/icfrr_rerank_full.h"

namespace icfrr {
namespace {

template <typename T, typename Acc>
bool run(const RerankArgs& a, InterruptPoll poll) {
  const int64_t kq = a.k_q < a.depth ? a.k_q : a.depth;
  const double cost = static_cast<double>(a.G) + static_cast<double>(a.iters) * kq * a.K_g;
  return run_rerank_queries<T, DenseRows, Acc>(a, poll, cost, "icfrr_rerank");
}

/// Full depth, touched-set algorithm: every worker's scratch (O(G) each) is allocated before the parallel region;
/// the same hooks (graph-row checks, Ctrl-C) as run().
template <typename T, typename Acc>
bool run_full(const RerankArgs& a, InterruptPoll poll) {
  if (a.Q < 1) return true;
  const int64_t kq = a.k_q < a.depth ? a.k_q : a.depth;
  const double cost = static_cast<double>(a.G) + static_cast<double>(a.iters) * kq * a.K_g;
  const int workers = parallel_threads(a.Q, a.num_threads, cost);
  GraphRowChecker checker(a.neighbors, a.nbr_stride, a.G, a.K_g);
  std::vector<std::unique_ptr<FullDepthScratch<Acc>>> scratch;
  const auto marks = alloc_worker_buffers(workers, checker.marker_bytes(), "icfrr_rerank (full depth)");
  const int nt = static_cast<int>(marks.size());
  try {
    for (int t = 0; t < nt; ++t) scratch.emplace_back(new FullDepthScratch<Acc>(a, kq));
  } catch (const std::bad_alloc&) {
    // at least the O(G) arrays of one worker (accumulators, positions, initial order, keys, radix scratch)
    if (scratch.empty()) throw OutOfMemory(a.G * (static_cast<int64_t>(sizeof(Acc)) + 40), "icfrr_rerank (full depth) scratch");
  }
  const int used = static_cast<int>(scratch.size());
  for (int t = 0; t < used; ++t) {
    uint8_t* m = reinterpret_cast<uint8_t*>(marks[t].get());
    for (int64_t j = 0; j < checker.marker_bytes(); ++j) m[j] = 0;
  }
  Interrupter interrupter(poll);
  const bool done = parallel_rows(a.Q, used, cost, interrupter, [&](int64_t q, int tid) {
    rerank_query_full<T, Acc>(a, q, *scratch[tid],
                              CpuQueryHooks{&checker, reinterpret_cast<uint8_t*>(marks[tid].get()), &interrupter,
                                            tid == 0});
  });
  if (!done) return false;
  if (checker.bad_row() >= 0) throw std::invalid_argument(checker.describe(checker.bad_row()));
  return true;
}

template <typename Acc>
bool dispatch_dtype(const RerankArgs& a, InterruptPoll poll) {
  const int64_t kq = a.k_q < a.depth ? a.k_q : a.depth;
  if (a.depth == a.G && full_depth_use_touched(a, kq)) {
    if (a.scores_is_double) return run_full<double, Acc>(a, poll);
    return run_full<float, Acc>(a, poll);
  }
  if (a.scores_is_double) return run<double, Acc>(a, poll);
  return run<float, Acc>(a, poll);
}

}  // namespace

bool icfrr_rerank_cpu(const RerankArgs& a, InterruptPoll poll) {
  const int64_t kq = a.k_q < a.depth ? a.k_q : a.depth;
  return with_vote_packing(kq, a.K_g, [&](auto acc) { return dispatch_dtype<decltype(acc)>(a, poll); });
}

}  // namespace icfrr
