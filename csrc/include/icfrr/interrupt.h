// Cooperative cancellation for long kernels (Ctrl-C). The C++ core is torch- and Python-free: the binding passes a
// poll function (it briefly takes the GIL and asks Python for pending signals). Only the calling thread polls, at
// most every few milliseconds; the other threads read one atomic flag.
#pragma once
#include <atomic>
#include <chrono>

namespace icfrr {

/// Returns true when the computation should stop. Called only from the thread that launched the kernel.
using InterruptPoll = bool (*)();

class Interrupter {
 public:
  explicit Interrupter(InterruptPoll poll) : poll_(poll), last_(std::chrono::steady_clock::now()) {}

  /// Poll (rate-limited) when on the launching thread; returns true once an interrupt has been seen.
  bool should_stop(bool is_launching_thread) {
    if (stop_.load(std::memory_order_relaxed)) return true;
    if (!poll_ || !is_launching_thread) return false;
    auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(20)) return false;
    last_ = now;
    if (poll_()) stop_.store(true, std::memory_order_relaxed);
    return stop_.load(std::memory_order_relaxed);
  }

  bool interrupted() const { return stop_.load(std::memory_order_relaxed); }

  /// Stop every thread at its next poll (an error on one thread; not a user interrupt, see parallel_rows).
  void cancel() { stop_.store(true, std::memory_order_relaxed); }

 private:
  InterruptPoll poll_;
  std::chrono::steady_clock::time_point last_;
  std::atomic<bool> stop_{false};
};

}  // namespace icfrr
