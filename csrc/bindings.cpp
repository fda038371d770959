// pybind11 module icfrr_fast._C: raw pointers and sizes in, nothing validated here (icfrr_fast/ops.py validates
// every argument before calling). Kernels run with the GIL released; Ctrl-C is honoured through a poll that briefly
// re-takes the GIL on the calling thread. The module does not link libtorch. C++ exceptions become Python ones by
// pybind11's standard translation: icfrr::OutOfMemory (a std::bad_alloc) -> MemoryError with its message,
// std::invalid_argument -> ValueError.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "icfrr/dense_topk.h"
#include "icfrr/icfrr_candidates.h"
#include "icfrr/icfrr_rerank.h"
#include "icfrr/icfrr_rerank_full.h"
#include "icfrr/knn_topk.h"
#include "icfrr/simd.h"
#ifdef ICFRR_WITH_CUDA
#include <stdexcept>
#include <string>

#include "cuda/icfrr_rerank_cuda.h"
#endif

namespace py = pybind11;

namespace {

bool poll_python_signals() {
  py::gil_scoped_acquire gil;
  return PyErr_CheckSignals() != 0;
}

template <typename F>
void run_interruptible(F&& kernel) {
  bool ok;
  {
    py::gil_scoped_release release;
    ok = kernel(&poll_python_signals);
  }
  if (!ok) {
    if (PyErr_Occurred()) throw py::error_already_set();
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw py::error_already_set();
  }
}

template <typename T>
T* as_ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

/// RerankArgs from the integer pointers and sizes that both the CPU and the CUDA bindings receive.
icfrr::RerankArgs rerank_args(uintptr_t scores, bool scores_is_double, int64_t score_stride, bool largest,
                              uintptr_t neighbors, int64_t nbr_stride, int64_t Q, int64_t G, int64_t K_g, int64_t k_q,
                              double beta, int64_t iters, bool paper, int64_t depth, int64_t k, bool early_stop,
                              uintptr_t out_values, uintptr_t out_indices, uintptr_t out_history) {
  icfrr::RerankArgs a;
  a.scores = as_ptr<const void>(scores);
  a.scores_is_double = scores_is_double;
  a.score_stride = score_stride;
  a.largest = largest;
  a.neighbors = as_ptr<const int32_t>(neighbors);
  a.nbr_stride = nbr_stride;
  a.Q = Q;
  a.G = G;
  a.N = G;
  a.K_g = K_g;
  a.k_q = k_q;
  a.beta = beta;
  a.iters = iters;
  a.paper = paper;
  a.depth = depth;
  a.k = k;
  a.early_stop = early_stop;
  a.out_values = as_ptr<void>(out_values);
  a.out_indices = as_ptr<int64_t>(out_indices);
  a.out_history = as_ptr<int64_t>(out_history);
  return a;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "icfrr_fast native kernels (raw pointers; validated by icfrr_fast.ops)";

  m.def(
      "icfrr_rerank",
      [](uintptr_t scores, bool scores_is_double, int64_t score_stride, bool largest, uintptr_t neighbors,
         int64_t nbr_stride, int64_t Q, int64_t G, int64_t K_g, int64_t k_q, double beta, int64_t iters, bool paper,
         int64_t depth, int64_t k, bool early_stop, uintptr_t out_values, uintptr_t out_indices,
         uintptr_t out_history, int num_threads, bool values_is_double) {
        icfrr::RerankArgs a = rerank_args(scores, scores_is_double, score_stride, largest, neighbors, nbr_stride, Q, G,
                                          K_g, k_q, beta, iters, paper, depth, k, early_stop, out_values,
                                          out_indices, out_history);
        a.num_threads = num_threads;
        a.values_is_double = values_is_double;
        run_interruptible([&](icfrr::InterruptPoll poll) { return icfrr::icfrr_rerank_cpu(a, poll); });
      },
      py::arg("scores"), py::arg("scores_is_double"), py::arg("score_stride"), py::arg("largest"),
      py::arg("neighbors"), py::arg("nbr_stride"), py::arg("Q"), py::arg("G"), py::arg("K_g"), py::arg("k_q"),
      py::arg("beta"), py::arg("iters"), py::arg("paper"), py::arg("depth"), py::arg("k"), py::arg("early_stop"),
      py::arg("out_values"), py::arg("out_indices"), py::arg("out_history"), py::arg("num_threads"),
      py::arg("values_is_double") = false);

  m.def(
      "icfrr_candidates",
      [](uintptr_t scores, bool scores_is_double, int64_t score_stride, bool largest, uintptr_t ids, bool ids_is_int64,
         int64_t ids_stride, uintptr_t neighbors, int64_t nbr_stride, int64_t Q, int64_t L, int64_t N,
         int64_t gallery_size, int64_t K_g, int64_t k_q, double beta, int64_t iters, bool paper, int64_t k,
         bool early_stop, uintptr_t out_values, bool values_is_double, uintptr_t out_indices, uintptr_t out_history,
         int num_threads) {
        icfrr::RerankArgs a = rerank_args(scores, scores_is_double, score_stride, largest, neighbors, nbr_stride, Q,
                                          gallery_size, K_g, k_q, beta, iters, paper, L, k, early_stop, out_values,
                                          out_indices, out_history);
        a.N = N;
        a.ids = as_ptr<const void>(ids);
        a.ids_is_int64 = ids_is_int64;
        a.ids_stride = ids_stride;
        a.values_is_double = values_is_double;
        a.num_threads = num_threads;
        run_interruptible([&](icfrr::InterruptPoll poll) { return icfrr::icfrr_candidates_cpu(a, poll); });
      },
      py::arg("scores"), py::arg("scores_is_double"), py::arg("score_stride"), py::arg("largest"), py::arg("ids"),
      py::arg("ids_is_int64"), py::arg("ids_stride"), py::arg("neighbors"), py::arg("nbr_stride"), py::arg("Q"),
      py::arg("L"), py::arg("N"), py::arg("gallery_size"), py::arg("K_g"), py::arg("k_q"), py::arg("beta"),
      py::arg("iters"), py::arg("paper"), py::arg("k"), py::arg("early_stop"), py::arg("out_values"),
      py::arg("values_is_double"), py::arg("out_indices"), py::arg("out_history"), py::arg("num_threads"));

  m.def(
      "dense_topk",
      [](uintptr_t x, bool x_is_double, int64_t x_stride, int64_t R, int64_t C, int64_t k, bool largest,
         bool exclude_self, int64_t row_offset, uintptr_t out_values, uintptr_t out_indices, int num_threads) {
        icfrr::DenseTopKArgs a;
        a.x = as_ptr<const void>(x);
        a.x_is_double = x_is_double;
        a.x_stride = x_stride;
        a.R = R;
        a.C = C;
        a.k = k;
        a.largest = largest;
        a.exclude_self = exclude_self;
        a.row_offset = row_offset;
        a.out_values = as_ptr<void>(out_values);
        a.out_indices = as_ptr<int64_t>(out_indices);
        a.num_threads = num_threads;
        run_interruptible([&](icfrr::InterruptPoll poll) { return icfrr::dense_topk_cpu(a, poll); });
      },
      py::arg("x"), py::arg("x_is_double"), py::arg("x_stride"), py::arg("R"), py::arg("C"), py::arg("k"),
      py::arg("largest"), py::arg("exclude_self"), py::arg("row_offset"), py::arg("out_values"),
      py::arg("out_indices"), py::arg("num_threads"));

  m.def(
      "knn_topk",
      [](uintptr_t x, int64_t x_stride, uintptr_t y, int64_t y_stride, bool is_double, int64_t Q, int64_t G,
         int64_t D, int64_t k, int metric, bool largest, bool exclude_self, int64_t row_offset, int precision,
         bool dense, uintptr_t out_values, uintptr_t out_indices, int num_threads) {
        icfrr::KnnTopKArgs a;
        a.x = as_ptr<const void>(x);
        a.x_stride = x_stride;
        a.y = as_ptr<const void>(y);
        a.y_stride = y_stride;
        a.is_double = is_double;
        a.Q = Q;
        a.G = G;
        a.D = D;
        a.k = k;
        a.metric = static_cast<icfrr::KnnMetric>(metric);
        a.largest = largest;
        a.exclude_self = exclude_self;
        a.row_offset = row_offset;
        a.precision = static_cast<icfrr::KnnPrecision>(precision);
        a.dense = dense;
        a.out_values = as_ptr<void>(out_values);
        a.out_indices = as_ptr<int64_t>(out_indices);
        a.num_threads = num_threads;
        run_interruptible([&](icfrr::InterruptPoll poll) { return icfrr::knn_topk_cpu(a, poll); });
      },
      py::arg("x"), py::arg("x_stride"), py::arg("y"), py::arg("y_stride"), py::arg("is_double"), py::arg("Q"),
      py::arg("G"), py::arg("D"), py::arg("k"), py::arg("metric"), py::arg("largest"), py::arg("exclude_self"),
      py::arg("row_offset"), py::arg("precision"), py::arg("dense"), py::arg("out_values"),
      py::arg("out_indices"), py::arg("num_threads"));

  m.def("knn_topk_set_symmetric", &icfrr::knn_topk_set_symmetric, py::arg("enabled"),
        "Allow (True) or forbid (False) knn_topk's symmetric graph build; results are identical either way.");
  m.def("knn_topk_symmetric_enabled", &icfrr::knn_topk_symmetric_enabled);
  m.def("knn_topk_symmetric_rows", &icfrr::knn_topk_symmetric_rows, py::arg("G"), py::arg("D"), py::arg("k"),
        py::arg("num_threads"));
  m.def("set_simd_enabled", &icfrr::set_simd_enabled, py::arg("enabled"),
        "Best SIMD level this CPU supports (True) or the scalar paths (False); results are identical either way.");
  m.def("simd_enabled", []() { return icfrr::simd_level() != icfrr::SimdLevel::kScalar; });
  m.def("set_full_depth_path", &icfrr::set_full_depth_path, py::arg("path"),
        "Full-depth icfrr_rerank on CPU: 0 = chosen by size, 1 = touched-set algorithm, 2 = merge kernel; results "
        "are identical either way.");
  m.def("full_depth_path", []() { return icfrr::full_depth_path_flag().load(); });
  m.def(
      "set_simd_level", [](int level) { return icfrr::set_simd_level(static_cast<icfrr::SimdLevel>(level)); },
      py::arg("level"), "Use SIMD level 0..3 (scalar, avx2, avx512, avx512_bf16); False if this CPU lacks it.");
  m.def("simd_level", []() { return static_cast<int>(icfrr::simd_level()); });
  m.def("cpu_simd_level", []() { return static_cast<int>(icfrr::cpu_simd_level()); });
  m.def("cpu_flags", []() {
    py::dict flags;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    flags["avx2"] = static_cast<bool>(__builtin_cpu_supports("avx2"));
    flags["fma"] = static_cast<bool>(__builtin_cpu_supports("fma"));
    flags["popcnt"] = static_cast<bool>(__builtin_cpu_supports("popcnt"));
    flags["avx512f"] = static_cast<bool>(__builtin_cpu_supports("avx512f"));
    flags["avx512bw"] = static_cast<bool>(__builtin_cpu_supports("avx512bw"));
    flags["avx512vl"] = static_cast<bool>(__builtin_cpu_supports("avx512vl"));
    flags["avx512dq"] = static_cast<bool>(__builtin_cpu_supports("avx512dq"));
    flags["avx512bf16"] = static_cast<bool>(__builtin_cpu_supports("avx512bf16"));
    flags["avx512vnni"] = static_cast<bool>(__builtin_cpu_supports("avx512vnni"));
#endif
    return flags;
  });
  m.def("cpu_has_avx2", []() { return icfrr::cpu_simd_level() != icfrr::SimdLevel::kScalar; });
  m.def(
      "knn_topk_kernel_name",
      [](int precision) { return std::string(icfrr::knn_topk_kernel_name(static_cast<icfrr::KnnPrecision>(precision))); },
      py::arg("precision"), "The micro-kernel knn_topk uses now for float32 inputs of this precision (0 fp32, 1 bf16).");

#ifdef ICFRR_WITH_CUDA
  m.attr("has_cuda") = true;
  // ---- CUDA drivers: device pointers and the stream as integers; validated by icfrr_fast/ops.py ----
  m.def(
      "icfrr_rerank_cuda_scratch_bytes",
      [](int64_t G, int64_t K_g, int64_t k_q, int64_t depth) {
        const icfrr::RerankArgs a =
            rerank_args(0, false, 0, true, 0, 0, 0, G, K_g, k_q, 0.0, 0, false, depth, 1, false, 0, 0, 0);
        return icfrr::icfrr_rerank_cuda_scratch_bytes(a);
      },
      py::arg("G"), py::arg("K_g"), py::arg("k_q"), py::arg("depth"),
      "Bytes of device scratch per worker thread of icfrr_rerank_cuda.");
  m.def(
      "icfrr_rerank_cuda",
      [](uintptr_t scores, bool scores_is_double, int64_t score_stride, bool largest, uintptr_t neighbors,
         int64_t nbr_stride, int64_t Q, int64_t G, int64_t K_g, int64_t k_q, double beta, int64_t iters, bool paper,
         int64_t depth, int64_t k, bool early_stop, uintptr_t out_values, uintptr_t out_indices,
         uintptr_t out_history, uintptr_t scratch, int64_t workers, uintptr_t stream, bool values_is_double) {
        icfrr::RerankArgs a = rerank_args(scores, scores_is_double, score_stride, largest, neighbors, nbr_stride, Q, G,
                                          K_g, k_q, beta, iters, paper, depth, k, early_stop, out_values,
                                          out_indices, out_history);
        a.values_is_double = values_is_double;
        int err;
        {
          py::gil_scoped_release release;  // the launch is asynchronous; nothing here touches Python
          err = icfrr::icfrr_rerank_cuda(a, as_ptr<void>(scratch), workers, stream);
        }
        if (err != 0) throw std::runtime_error(std::string("icfrr_rerank_cuda launch failed: ") +
                                               icfrr::icfrr_cuda_error_string(err));
      },
      py::arg("scores"), py::arg("scores_is_double"), py::arg("score_stride"), py::arg("largest"),
      py::arg("neighbors"), py::arg("nbr_stride"), py::arg("Q"), py::arg("G"), py::arg("K_g"), py::arg("k_q"),
      py::arg("beta"), py::arg("iters"), py::arg("paper"), py::arg("depth"), py::arg("k"), py::arg("early_stop"),
      py::arg("out_values"), py::arg("out_indices"), py::arg("out_history"), py::arg("scratch"), py::arg("workers"),
      py::arg("stream"), py::arg("values_is_double") = false,
      "Launch ICFRR on a CUDA stream (device pointers); scratch: workers * icfrr_rerank_cuda_scratch_bytes bytes.");
  // ---- end CUDA drivers ----
#else
  m.attr("has_cuda") = false;
#endif
}
