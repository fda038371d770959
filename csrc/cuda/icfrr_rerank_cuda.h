// CUDA driver of the fused ICFRR kernel over the shared host/device core (include/icfrr/icfrr_rerank_core.h): the
// same `rerank_query` the CPU driver runs, one query per GPU thread. Correctness first: the Triton kernels
// (icfrr_fast/triton/) are the fast GPU path; this driver is the fallback where Triton is missing, and the path for
// candidate depths beyond what the Triton kernel holds on chip.
// Oracle: icfrr_fast.reference.icfrr_rerank   Test: tests/test_triton_icfrr_rerank.py (dispatch), tests/test_icfrr_rerank.py (core)
// Invariants: bit-identical to the CPU kernel (same code; compiled with --fmad=false); no libtorch; every pointer in
// RerankArgs and `scratch` is a device pointer; nothing here validates arguments (icfrr_fast/ops.py does).
#pragma once
#include <cstdint>

#include "icfrr/icfrr_rerank.h"

namespace icfrr {

/// Bytes of device scratch one worker thread needs for these arguments (a multiple of 8).
int64_t icfrr_rerank_cuda_scratch_bytes(const RerankArgs& a);

/// Launch the re-ranking of all a.Q queries on `stream` (a cudaStream_t passed as an integer; 0 = legacy default).
///
/// @param a        arguments as for the CPU kernel; scores, neighbors, out_* are device pointers (num_threads unused).
/// @param scratch  device buffer of workers * icfrr_rerank_cuda_scratch_bytes(a) bytes, 8-byte aligned, owned by the
///                 caller and untouched by anyone else until the stream reaches the end of this launch.
/// @param workers  worker threads (>= 1): worker w handles queries w, w + workers, ...
/// @param stream   CUDA stream handle.
/// @return 0 on success, else the cudaError_t of the launch (the kernel itself runs asynchronously).
int icfrr_rerank_cuda(const RerankArgs& a, void* scratch, int64_t workers, uintptr_t stream);

/// Human-readable name of a cudaError_t returned above.
const char* icfrr_cuda_error_string(int err);

}  // namespace icfrr
