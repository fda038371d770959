// Validity of gallery-graph rows, checked by the CPU drivers as the rows are first used (host only).
//
// A row i of the graph must hold distinct ids, none equal to i (entries -1, "no neighbour", are skipped). The vote
// packing's capacity (vote.h: count < 2^8 or 2^24) rests on it: a voter then adds at most one vote per item, so an
// item's count never exceeds K_q'. Checking the whole (G, K_g) graph on every call would cost O(G K_g) even when a
// few queries read a few hundred rows; instead each row is checked the first time any worker reads it as a voter's
// row (a shared bitmap of checked rows, one relaxed atomic OR per row), with a per-worker byte marker per id. A
// row's check costs two passes over its K_g entries, once per call -- at most what applying its votes once costs.
// Rows that nobody reads are not checked: they cannot change a result. Findings are reported after the parallel
// region (the smallest bad row, so the message does not depend on the thread count).
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "scratch.h"

namespace icfrr {

class GraphRowChecker {
 public:
  /// nbr: (rows, >= K) int32 graph, row stride `stride`; ids in [-1, rows - 1] (range checked by the caller).
  GraphRowChecker(const int32_t* nbr, int64_t stride, int64_t rows, int64_t K)
      : nbr_(nbr), stride_(stride), rows_(rows), K_(K), words_((rows + 63) / 64) {
    checked_.reset(new (std::nothrow) std::atomic<uint64_t>[static_cast<size_t>(words_ < 1 ? 1 : words_)]);
    if (!checked_) throw OutOfMemory(words_ * 8, "the graph-row check bitmap");
    for (int64_t w = 0; w < words_; ++w) checked_[w].store(0, std::memory_order_relaxed);
  }

  /// Bytes of the per-worker marker array that check() needs (one byte per id, all zero between checks).
  int64_t marker_bytes() const { return rows_; }

  /// Check row `row` unless some worker already did. marks: this worker's marker array (zero; left zero).
  void check(int32_t row, uint8_t* marks) {
    const uint64_t bit = uint64_t(1) << (row & 63);
    std::atomic<uint64_t>& word = checked_[row >> 6];
    if (word.load(std::memory_order_relaxed) & bit) return;
    word.fetch_or(bit, std::memory_order_relaxed);
    if (!row_is_valid(row, marks)) {
      int64_t cur = bad_row_.load(std::memory_order_relaxed);
      while (row < cur && !bad_row_.compare_exchange_weak(cur, row, std::memory_order_relaxed)) {
      }
    }
  }

  /// The smallest bad row found, or -1.
  int64_t bad_row() const {
    const int64_t r = bad_row_.load(std::memory_order_relaxed);
    return r == kNone ? -1 : r;
  }

  /// What is wrong with row `row` (call after the parallel region, when bad_row() >= 0).
  std::string describe(int64_t row) const {
    const int32_t* ids = nbr_ + row * stride_;
    for (int64_t r = 0; r < K_; ++r) {
      if (ids[r] == row)
        return "gallery graph row " + std::to_string(row) + " lists the item itself (at rank " + std::to_string(r) +
               "); a gallery item must not be its own neighbour";
      for (int64_t s = 0; s < r; ++s)
        if (ids[r] >= 0 && ids[s] == ids[r])
          return "gallery graph row " + std::to_string(row) + " lists item " + std::to_string(ids[r]) +
                 " twice (ranks " + std::to_string(s) + " and " + std::to_string(r) +
                 "); a row's neighbour ids must be distinct";
    }
    return "gallery graph row " + std::to_string(row) + " is invalid";
  }

 private:
  static constexpr int64_t kNone = INT64_MAX;

  bool row_is_valid(int32_t row, uint8_t* marks) const {
    const int32_t* ids = nbr_ + static_cast<int64_t>(row) * stride_;
    bool ok = true;
    for (int64_t r = 0; r < K_; ++r) {
      const int32_t j = ids[r];
      if (j < 0) continue;
      ok &= (j != row) & (marks[j] == 0);
      marks[j] = 1;
    }
    for (int64_t r = 0; r < K_; ++r)
      if (ids[r] >= 0) marks[ids[r]] = 0;
    return ok;
  }

  const int32_t* nbr_;
  int64_t stride_, rows_, K_, words_;
  std::unique_ptr<std::atomic<uint64_t>[]> checked_;
  std::atomic<int64_t> bad_row_{kNone};
};

}  // namespace icfrr
