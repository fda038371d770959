// CPU driver of dense_topk (see include/icfrr/dense_topk.h): one TopKCollector per thread, rows in parallel.
#include "icfrr/dense_topk.h"

#include <omp.h>

#include <vector>

#include "icfrr/parallel.h"
#include "icfrr/topk_select.h"

namespace icfrr {
namespace {

template <typename T, bool LARGEST>
bool run(const DenseTopKArgs& a, InterruptPoll poll) {
  const T* x = static_cast<const T*>(a.x);
  T* out_v = static_cast<T*>(a.out_values);
  const int nt = a.num_threads < 1 ? 1 : a.num_threads;
  std::vector<TopKCollector<T, LARGEST>> heaps;
  heaps.reserve(nt);
  for (int t = 0; t < nt; ++t) heaps.emplace_back(a.k);
  return parallel_rows(a.R, nt, static_cast<double>(a.C), poll, [&](int64_t r, int tid) {
    auto& heap = heaps[tid];
    heap.reset();
    const int64_t skip = a.exclude_self ? r + a.row_offset : -1;
    heap.push_run(x + r * a.x_stride, a.C, 0, skip);
    heap.finalize(out_v + r * a.k, a.out_indices + r * a.k);
  });
}

}  // namespace

bool dense_topk_cpu(const DenseTopKArgs& a, InterruptPoll poll) {
  if (a.x_is_double) return a.largest ? run<double, true>(a, poll) : run<double, false>(a, poll);
  return a.largest ? run<float, true>(a, poll) : run<float, false>(a, poll);
}

}  // namespace icfrr
