// Top-K collector: a bounded heap that keeps the K best (value, index) pairs under a RankOrder.
// Producing scores (a dense row, a similarity tile) is separate from collecting them, so dense matrices, fused
// similarity tiles and graph construction share this one selection routine (STYLE Part 2 §3).
// Invariant: when candidates arrive in increasing index order, a value equal to the current worst can never enter
// (the worst already has the smaller index), so the fast filter is a strict comparison with the threshold.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "order.h"

namespace icfrr {

template <typename T, bool LARGEST>
class TopKCollector {
 public:
  using Order = RankOrder<LARGEST>;

  explicit TopKCollector(int64_t k) : k_(k) {
    vals_.reserve(k);
    ids_.reserve(k);
  }

  /// Forget everything collected so far (keeps the allocation).
  void reset() {
    vals_.clear();
    ids_.clear();
  }

  int64_t size() const { return static_cast<int64_t>(vals_.size()); }
  bool full() const { return size() == k_; }

  /// Value a candidate must rank strictly before to enter once the heap is full (the current worst).
  T threshold() const {
    if (!full()) return LARGEST ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
    return vals_[0];
  }

  /// Offer one candidate. Candidates may arrive in any index order.
  void push(T v, int64_t id) {
    if (!full()) {
      vals_.push_back(v);
      ids_.push_back(id);
      sift_up(size() - 1);
      return;
    }
    if (!Order::before(v, id, vals_[0], ids_[0])) return;
    vals_[0] = v;
    ids_[0] = id;
    sift_down(0);
  }

  /// Offer a contiguous run x[0..n) with indices first_id + i, skipping index `skip` (-1: none). Indices must be
  /// larger than every index offered before (scan order), which makes the block filter a strict comparison.
  void push_run(const T* x, int64_t n, int64_t first_id, int64_t skip) {
    int64_t i = 0;
    while (i < n && !full()) {
      if (first_id + i != skip) push(x[i], first_id + i);
      ++i;
    }
    constexpr int64_t B = 16;
    for (; i + B <= n; i += B) {
      const T thr = vals_[0];
      bool any = false;
      for (int64_t b = 0; b < B; ++b) any |= Order::value_before(x[i + b], thr);
      if (!any) continue;
      for (int64_t b = 0; b < B; ++b) {
        if (first_id + i + b == skip) continue;
        if (Order::value_before(x[i + b], vals_[0])) replace_worst(x[i + b], first_id + i + b);
      }
    }
    for (; i < n; ++i) {
      if (first_id + i == skip) continue;
      if (Order::value_before(x[i], vals_[0])) replace_worst(x[i], first_id + i);
    }
  }

  /// Write the collected pairs best first into out_vals[0..size()) and out_ids[0..size()); empties the heap.
  template <typename VOut, typename IOut>
  void finalize(VOut* out_vals, IOut* out_ids) {
    const int64_t n = size();
    for (int64_t m = n - 1; m >= 0; --m) {  // pop the worst into the last free slot
      out_vals[m] = static_cast<VOut>(vals_[0]);
      out_ids[m] = static_cast<IOut>(ids_[0]);
      vals_[0] = vals_[m];
      ids_[0] = ids_[m];
      vals_.pop_back();
      ids_.pop_back();
      if (!vals_.empty()) sift_down(0);
    }
  }

 private:
  // Max-heap on "worse": the root is the worst kept pair.
  bool worse(int64_t a, int64_t b) const { return Order::before(vals_[b], ids_[b], vals_[a], ids_[a]); }

  void replace_worst(T v, int64_t id) {
    vals_[0] = v;
    ids_[0] = id;
    sift_down(0);
  }

  void sift_up(int64_t i) {
    while (i > 0) {
      int64_t p = (i - 1) / 2;
      if (!worse(i, p)) break;
      std::swap(vals_[i], vals_[p]);
      std::swap(ids_[i], ids_[p]);
      i = p;
    }
  }

  void sift_down(int64_t i) {
    const int64_t n = size();
    for (;;) {
      int64_t l = 2 * i + 1, r = l + 1, w = i;
      if (l < n && worse(l, w)) w = l;
      if (r < n && worse(r, w)) w = r;
      if (w == i) return;
      std::swap(vals_[i], vals_[w]);
      std::swap(ids_[i], ids_[w]);
      i = w;
    }
  }

  int64_t k_;
  std::vector<T> vals_;
  std::vector<int64_t> ids_;
};

}  // namespace icfrr
