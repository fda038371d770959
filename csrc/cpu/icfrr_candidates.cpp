// CPU driver of ICFRR over candidate lists: OpenMP over queries (dynamic schedule), one scratch buffer per thread
// allocated once, the per-query algorithm from the shared host/device core (include/icfrr/icfrr_rerank_core.h) with
// the candidate-list initial order.
#include "icfrr/icfrr_candidates.h"

#include <memory>
#include <vector>

#include "icfrr/icfrr_rerank_core.h"
#include "icfrr/parallel.h"

namespace icfrr {
namespace {

template <typename T, typename I, typename Acc>
bool run_candidates(const RerankArgs& a, InterruptPoll poll) {
  const int64_t kq = a.k_q < a.depth ? a.k_q : a.depth;
  const int nt = a.num_threads < 1 ? 1 : a.num_threads;
  const int64_t bytes = rerank_scratch_bytes<Acc>(a);
  std::vector<std::unique_ptr<uint64_t[]>> buffers(nt);  // uint64_t: 8-byte alignment
  std::vector<RerankScratch<Acc>> scratch(nt);
  const double cost = static_cast<double>(a.depth) + static_cast<double>(a.iters) * kq * a.K_g;
  return parallel_rows(a.Q, nt, cost, poll, [&](int64_t q, int tid) {
    if (!buffers[tid]) {  // first query of this thread: allocate and lay out its scratch (O(N), zeroed once)
      buffers[tid].reset(new uint64_t[(bytes + 7) / 8]);
      scratch[tid] = rerank_scratch_carve<Acc>(buffers[tid].get(), a);
    }
    rerank_query<T, I, Acc>(a, q, scratch[tid]);
  });
}

template <typename T, typename Acc>
bool dispatch_ids(const RerankArgs& a, InterruptPoll poll) {
  if (a.ids_is_int64) return run_candidates<T, int64_t, Acc>(a, poll);
  return run_candidates<T, int32_t, Acc>(a, poll);
}

template <typename Acc>
bool dispatch_scores(const RerankArgs& a, InterruptPoll poll) {
  if (a.scores_is_double) return dispatch_ids<double, Acc>(a, poll);
  return dispatch_ids<float, Acc>(a, poll);
}

}  // namespace

bool icfrr_candidates_cpu(const RerankArgs& a, InterruptPoll poll) {
  const int64_t kq = a.k_q < a.depth ? a.k_q : a.depth;  // the largest K_q' of any row: one packing for all
  if (vote_packing_fits<uint32_t>(kq, a.K_g)) return dispatch_scores<uint32_t>(a, poll);
  return dispatch_scores<uint64_t>(a, poll);
}

}  // namespace icfrr
