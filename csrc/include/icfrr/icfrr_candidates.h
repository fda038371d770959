// ICFRR re-ranking of candidate lists (docs/design.md §2 with the candidates given): per query, the row's real candidates
// sorted by (score desc, id asc), then all T iterations exactly as icfrr_rerank with depth L_q.
// Oracle: icfrr_fast.reference.icfrr_candidates   Test: tests/test_icfrr_candidates.py
// Invariants: O(L + T K_q' K_g) per query, never O(G) or O(N) (scratch of O(N) is allocated once per thread);
// integer votes, float64 keys; results identical for any thread count and to icfrr_rerank on the exact top-L.
#pragma once
#include <cstdint>

#include "icfrr_rerank.h"

namespace icfrr {

/// Run ICFRR over the candidate lists of all queries: `a.ids` (Q, depth) set, `a.scores` (Q, depth), `a.N` rows of
/// `a.neighbors`, `a.G` the gallery size (>= N). OpenMP over queries. Returns false when interrupted.
bool icfrr_candidates_cpu(const RerankArgs& args, InterruptPoll poll);

}  // namespace icfrr
