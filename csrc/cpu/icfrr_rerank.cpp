// CPU driver of the fused ICFRR kernel: OpenMP over queries (dynamic schedule), one scratch buffer per thread,
// the per-query algorithm from the shared host/device core (include/icfrr/icfrr_rerank_core.h), or at full depth
// with few votes per iteration against G the touched-set algorithm (include/icfrr/icfrr_rerank_full.h).
#include "icfrr/icfrr_rerank.h"

#include <memory>
#include <vector>

#include "icfrr/icfrr_rerank_core.h"
#include "icfrr/icfrr_rerank_full.h"
#include "icfrr/parallel.h"

namespace icfrr {
namespace {

template <typename T, typename Acc>
bool run(const RerankArgs& a, InterruptPoll poll) {
  const int64_t kq = a.k_q < a.depth ? a.k_q : a.depth;
  const int nt = a.num_threads < 1 ? 1 : a.num_threads;
  const int64_t bytes = rerank_scratch_bytes<Acc>(a);
  std::vector<std::unique_ptr<uint64_t[]>> buffers(nt);  // uint64_t: 8-byte alignment
  std::vector<RerankScratch<Acc>> scratch(nt);
  const double cost = static_cast<double>(a.G) + static_cast<double>(a.iters) * kq * a.K_g;
  return parallel_rows(a.Q, nt, cost, poll, [&](int64_t q, int tid) {
    if (!buffers[tid]) {  // first query of this thread: allocate and lay out its scratch
      buffers[tid].reset(new uint64_t[(bytes + 7) / 8]);
      scratch[tid] = rerank_scratch_carve<Acc>(buffers[tid].get(), a);
    }
    rerank_query<T, DenseRows, Acc>(a, q, scratch[tid]);
  });
}

/// Full depth, touched-set algorithm: every worker's scratch (O(G) each) is allocated before the parallel region.
template <typename T, typename Acc>
bool run_full(const RerankArgs& a, InterruptPoll poll) {
  if (a.Q < 1) return true;
  const int64_t kq = a.k_q < a.depth ? a.k_q : a.depth;
  const int nt = a.num_threads < 1 ? 1 : a.num_threads;
  const int workers = static_cast<int>(a.Q < nt ? a.Q : nt);
  std::vector<std::unique_ptr<FullDepthScratch<Acc>>> scratch;
  for (int t = 0; t < workers; ++t) scratch.emplace_back(new FullDepthScratch<Acc>(a, kq));
  const double cost = static_cast<double>(a.G) + static_cast<double>(a.iters) * kq * a.K_g;
  return parallel_rows(a.Q, workers, cost, poll,
                       [&](int64_t q, int tid) { rerank_query_full<T, Acc>(a, q, *scratch[tid]); });
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
  if (vote_packing_fits<uint32_t>(kq, a.K_g)) return dispatch_dtype<uint32_t>(a, poll);
  return dispatch_dtype<uint64_t>(a, poll);
}

}  // namespace icfrr
