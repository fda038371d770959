// CPU driver of ICFRR over candidate lists: the shared CPU loop over queries (include/icfrr/cpu_rerank_driver.h:
// scratch before the OpenMP region, Ctrl-C before every iteration, graph-row checks of the voters) around the
// per-query algorithm of the host/device core (include/icfrr/icfrr_rerank_core.h) with the candidate-list order.
#include "icfrr/icfrr_candidates.h"

#include "icfrr/cpu_rerank_driver.h"

namespace icfrr {
namespace {

template <typename T, typename I, typename Acc>
bool run_candidates(const RerankArgs& a, InterruptPoll poll) {
  const int64_t kq = a.k_q < a.depth ? a.k_q : a.depth;
  const double cost = static_cast<double>(a.depth) + static_cast<double>(a.iters) * kq * a.K_g;
  return run_rerank_queries<T, I, Acc>(a, poll, cost, "icfrr_candidates");
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
  return with_vote_packing(kq, a.K_g, [&](auto acc) { return dispatch_scores<decltype(acc)>(a, poll); });
}

}  // namespace icfrr
