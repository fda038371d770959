// Run-time choice of SIMD paths. Every vectorised kernel also has a plain scalar path with identical results;
// `set_simd_enabled(false)` forces the scalar paths (tests run both, STYLE Part 2 §8). Instruction sets are
// detected at run time, never assumed at compile time (no -march=native): ISA-specific functions carry
// __attribute__((target(...))) and are called only when the CPU has the instructions.
#pragma once
#include <atomic>

namespace icfrr {

inline std::atomic<bool>& simd_enabled_flag() {
  static std::atomic<bool> flag{true};
  return flag;
}

inline void set_simd_enabled(bool on) { simd_enabled_flag().store(on); }

/// True when AVX2 paths may run: allowed by the switch and supported by this CPU. (AVX-512 is not targeted: the
/// project's machines do not expose it to guests, so such a path could never be tested.)
inline bool use_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
  return supported && simd_enabled_flag().load(std::memory_order_relaxed);
#else
  return false;
#endif
}

}  // namespace icfrr
