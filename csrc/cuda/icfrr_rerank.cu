// CUDA driver of the fused ICFRR kernel (contract: icfrr_rerank_cuda.h). Each worker thread carves its own scratch
// once (acc = 0, pos = -1, ...) and then runs the shared per-query core for queries w, w + workers, ... . The core
// leaves the scratch invariants as it found them, exactly as on the CPU, so queries need no re-initialisation.
#include <cuda_runtime.h>

#include "icfrr/icfrr_rerank_core.h"
#include "icfrr_rerank_cuda.h"

namespace icfrr {
namespace {

constexpr int kThreadsPerBlock = 32;  // one warp per block: workers are independent, divergence is total anyway

template <typename T, typename Acc>
__global__ void rerank_kernel(RerankArgs a, char* scratch, int64_t bytes_per_worker, int64_t workers) {
  const int64_t w = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // int64 before any multiply
  if (w >= workers || w >= a.Q) return;
  const RerankScratch<Acc> s = rerank_scratch_carve<Acc>(scratch + w * bytes_per_worker, a);
  for (int64_t q = w; q < a.Q; q += workers) rerank_query<T, DenseRows, Acc>(a, q, s);
}

template <typename Acc>
int launch(const RerankArgs& a, void* scratch, int64_t workers, cudaStream_t stream) {
  const int64_t bytes = rerank_scratch_bytes<Acc>(a);
  const int64_t blocks = (workers + kThreadsPerBlock - 1) / kThreadsPerBlock;
  char* buf = static_cast<char*>(scratch);
  if (a.scores_is_double)
    rerank_kernel<double, Acc><<<static_cast<unsigned>(blocks), kThreadsPerBlock, 0, stream>>>(a, buf, bytes, workers);
  else
    rerank_kernel<float, Acc><<<static_cast<unsigned>(blocks), kThreadsPerBlock, 0, stream>>>(a, buf, bytes, workers);
  return static_cast<int>(cudaGetLastError());
}

bool narrow_votes(const RerankArgs& a) {
  const int64_t kq = a.k_q < a.depth ? a.k_q : a.depth;
  return vote_packing_fits<uint32_t>(kq, a.K_g);  // the CPU driver's choice, so both round identically
}

}  // namespace

int64_t icfrr_rerank_cuda_scratch_bytes(const RerankArgs& a) {
  return narrow_votes(a) ? rerank_scratch_bytes<uint32_t>(a) : rerank_scratch_bytes<uint64_t>(a);
}

int icfrr_rerank_cuda(const RerankArgs& a, void* scratch, int64_t workers, uintptr_t stream) {
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  return narrow_votes(a) ? launch<uint32_t>(a, scratch, workers, s) : launch<uint64_t>(a, scratch, workers, s);
}

const char* icfrr_cuda_error_string(int err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

}  // namespace icfrr
