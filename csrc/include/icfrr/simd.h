// Run-time choice of SIMD paths. Instruction sets are detected at run time (cpuid through __builtin_cpu_supports,
// once), never assumed at compile time (no -march=native): ISA-specific code lives in its own translation unit or
// carries __attribute__((target(...))) and is called only when the CPU has the instructions and the chosen level
// allows them. Levels, each including the ones below it:
//   kScalar      portable C++ (any CPU);
//   kAVX2        AVX2 + FMA (+ POPCNT) paths;
//   kAVX512      AVX-512 F/BW/VL/DQ micro-kernels (the k-NN fp32 tiles);
//   kAVX512BF16  AVX512_BF16 dot products (vdpbf16ps) for knn_topk's precision="bf16".
// The level defaults to the best this CPU supports; `set_simd_level` forces a lower one (tests run every level the
// CPU has; `set_simd_enabled(false)` is kScalar). Every vectorised path gives the scalar path's results bit for bit.
#pragma once
#include <atomic>

namespace icfrr {

enum class SimdLevel : int { kScalar = 0, kAVX2 = 1, kAVX512 = 2, kAVX512BF16 = 3 };

/// The best level this CPU (and OS: the AVX-512 checks include the saved-register-state test) supports.
inline SimdLevel cpu_simd_level() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const SimdLevel level = [] {
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("popcnt")))
      return SimdLevel::kScalar;
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")))
      return SimdLevel::kAVX2;
    if (!__builtin_cpu_supports("avx512bf16")) return SimdLevel::kAVX512;
    return SimdLevel::kAVX512BF16;
  }();
  return level;
#else
  return SimdLevel::kScalar;
#endif
}

inline std::atomic<int>& simd_level_flag() {
  static std::atomic<int> level{static_cast<int>(cpu_simd_level())};
  return level;
}

/// The level in use.
inline SimdLevel simd_level() { return static_cast<SimdLevel>(simd_level_flag().load(std::memory_order_relaxed)); }

/// Use `level`; false (and no change) when this CPU does not support it.
inline bool set_simd_level(SimdLevel level) {
  if (static_cast<int>(level) < 0 || static_cast<int>(level) > static_cast<int>(cpu_simd_level())) return false;
  simd_level_flag().store(static_cast<int>(level));
  return true;
}

/// true: the best level this CPU supports; false: kScalar.
inline void set_simd_enabled(bool on) { set_simd_level(on ? cpu_simd_level() : SimdLevel::kScalar); }

inline bool simd_at_least(SimdLevel level) { return static_cast<int>(simd_level()) >= static_cast<int>(level); }

/// True when AVX2 (+ FMA, POPCNT) paths may run: allowed by the level, which the CPU supports.
inline bool use_avx2() { return simd_at_least(SimdLevel::kAVX2); }

}  // namespace icfrr
