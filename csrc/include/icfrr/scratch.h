// Memory of the CPU drivers: every allocation that can be large reports its size when it fails, and per-worker
// scratch is allocated before a parallel region, never inside it (an exception cannot leave an OpenMP region: it
// would call std::terminate and abort the process). The bindings turn OutOfMemory into Python's MemoryError.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <vector>

namespace icfrr {

/// std::bad_alloc that says what was being allocated and how many bytes were asked for.
class OutOfMemory : public std::bad_alloc {
 public:
  OutOfMemory(int64_t bytes, const std::string& what)
      : bytes_(bytes),
        msg_("out of memory: " + what + " needs " + std::to_string(bytes) + " bytes (" +
             std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB)") {}
  const char* what() const noexcept override { return msg_.c_str(); }
  int64_t bytes() const { return bytes_; }

 private:
  int64_t bytes_;
  std::string msg_;
};

/// Physical memory of the machine in bytes (0 when unknown).
inline int64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
}

/// An uninitialised, 8-byte aligned buffer of `bytes` bytes; throws OutOfMemory naming `what` when it fails.
inline std::unique_ptr<uint64_t[]> alloc_bytes(int64_t bytes, const std::string& what) {
  const int64_t words = (bytes + 7) / 8;
  uint64_t* p = new (std::nothrow) uint64_t[static_cast<size_t>(words < 1 ? 1 : words)];
  if (!p) throw OutOfMemory(bytes, what);
  return std::unique_ptr<uint64_t[]>(p);
}

/// v.resize(n), throwing OutOfMemory (with the bytes) instead of a bare std::bad_alloc.
template <typename V>
void resize_or_throw(V& v, int64_t n, const char* what) {
  try {
    v.resize(static_cast<size_t>(n));
  } catch (const std::bad_alloc&) {
    throw OutOfMemory(n * static_cast<int64_t>(sizeof(typename V::value_type)), what);
  }
}

/// Per-worker scratch buffers of `bytes` each, allocated before a parallel region. At most `workers` of them, and
/// fewer when together they would exceed a quarter of the machine's memory or when an allocation fails: the
/// caller then runs with fewer threads (results never depend on the thread count). Throws OutOfMemory when not even
/// one buffer can be allocated.
inline std::vector<std::unique_ptr<uint64_t[]>> alloc_worker_buffers(int workers, int64_t bytes,
                                                                     const std::string& what) {
  const int64_t budget = physical_memory_bytes() / 4;
  std::vector<std::unique_ptr<uint64_t[]>> buffers;
  buffers.push_back(alloc_bytes(bytes, what + " (scratch of one worker thread)"));
  for (int w = 1; w < workers && (budget == 0 || (w + 1) * bytes <= budget); ++w) {
    uint64_t* p = new (std::nothrow) uint64_t[static_cast<size_t>((bytes + 7) / 8)];
    if (!p) break;  // fewer threads, same results
    buffers.emplace_back(p);
  }
  return buffers;
}

}  // namespace icfrr
