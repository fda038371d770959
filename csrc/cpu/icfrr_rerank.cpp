// CPU driver of the fused ICFRR kernel: OpenMP over queries (dynamic schedule), one scratch buffer per thread
// allocated before the parallel region (alloc_worker_buffers: fewer threads when memory is short, OutOfMemory with
// the size when not even one fits), the per-query algorithm from the shared host/device core
// (include/icfrr/icfrr_rerank_core.h). Each query polls Ctrl-C before every iteration and checks the graph rows of
// its voters the first time any thread reads them (include/icfrr/graph_check.h).
#include "icfrr/icfrr_rerank.h"

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "icfrr/graph_check.h"
#include "icfrr/icfrr_rerank_core.h"
#include "icfrr/parallel.h"
#include "icfrr/scratch.h"

namespace icfrr {
namespace {

/// The CPU driver's hooks into rerank_query: graph-row checks of the voters, and Ctrl-C.
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

template <typename T, typename Acc>
bool run(const RerankArgs& a, InterruptPoll poll) {
  const int64_t kq = a.k_q < a.depth ? a.k_q : a.depth;
  const double cost = static_cast<double>(a.G) + static_cast<double>(a.iters) * kq * a.K_g;
  GraphRowChecker checker(a.neighbors, a.nbr_stride, a.G, a.K_g);
  const int64_t bytes = rerank_scratch_bytes<Acc>(a.G, a.depth);
  const int64_t marks_at = (bytes + 7) / 8 * 8;
  const auto buffers = alloc_worker_buffers(parallel_threads(a.Q, a.num_threads, cost),
                                            marks_at + checker.marker_bytes(), "icfrr_rerank");
  const int nt = static_cast<int>(buffers.size());
  std::vector<RerankScratch<Acc>> scratch(nt);
  std::vector<uint8_t*> marks(nt);
  for (int t = 0; t < nt; ++t) {
    scratch[t] = rerank_scratch_carve<Acc>(buffers[t].get(), a.G, a.depth);
    marks[t] = reinterpret_cast<uint8_t*>(buffers[t].get()) + marks_at;
    for (int64_t j = 0; j < checker.marker_bytes(); ++j) marks[t][j] = 0;
  }
  Interrupter interrupter(poll);
  const bool done = parallel_rows(a.Q, nt, cost, interrupter, [&](int64_t q, int tid) {
    rerank_query<T, Acc>(a, q, scratch[tid], CpuQueryHooks{&checker, marks[tid], &interrupter, tid == 0});
  });
  if (!done) return false;
  if (checker.bad_row() >= 0) throw std::invalid_argument(checker.describe(checker.bad_row()));
  return true;
}

template <typename Acc>
bool dispatch_dtype(const RerankArgs& a, InterruptPoll poll) {
  if (a.scores_is_double) return run<double, Acc>(a, poll);
  return run<float, Acc>(a, poll);
}

}  // namespace

bool icfrr_rerank_cpu(const RerankArgs& a, InterruptPoll poll) {
  const int64_t kq = a.k_q < a.depth ? a.k_q : a.depth;
  // Capacity of the packed votes: an item gets at most one vote per voter (distinct ids per row, checked above),
  // so K_q' voters of ranks < K_g must fit the packing's count and rank-sum fields.
  if (vote_packing_fits<uint32_t>(kq, a.K_g)) return dispatch_dtype<uint32_t>(a, poll);
  if (vote_packing_fits<uint64_t>(kq, a.K_g)) return dispatch_dtype<uint64_t>(a, poll);
  throw std::invalid_argument("min(k_q, depth) = " + std::to_string(kq) + " voters with k_g = " +
                              std::to_string(a.K_g) + " neighbours exceed the 64-bit vote packing");
}

}  // namespace icfrr
