// The inputs of one layer's target linears as the AWQ searches use them, in memory bounded by the
// subsample sizes rather than by the calibration rows: per (path, kind), the column sums of |x| over
// every row, and only the rows that an evenly spaced subsample of at most `cap` rows picks (for each
// cap given). sample(p, k, cap) equals the rows i * n / cap (i < cap) of all n rows, in order (all of
// them when n <= cap); mean_abs is the column mean of |x| over all n rows, summed in row order.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "forward/forward.h"

namespace lq::pipeline {

class LayerCapture final : public fwd::ActivationObserver {
 public:
  // path_rows: the calibration rows of each path (und, gen) one forward of the layer routes through it.
  LayerCapture(int layer, std::array<int64_t, 2> path_rows, std::vector<int64_t> caps);
  // k and v share q's input, up shares gate's: those are not captured.
  void observe(const fwd::LinearId& id, const float* x, int64_t n, int64_t in) override;

  bool empty(model::Path p, model::LinearKind k) const { return entry(p, k).seen == 0; }
  std::vector<float> mean_abs(model::Path p, model::LinearKind k) const;
  // `cap` must be one of the caps given; fails unless every row of the path was observed.
  std::vector<float> sample(model::Path p, model::LinearKind k, int64_t cap) const;
  // Rows held (the memory), for tests.
  int64_t kept_rows(model::Path p, model::LinearKind k) const { return int64_t(entry(p, k).index.size()); }

 private:
  struct Entry {
    int64_t width = 0, seen = 0;
    std::vector<double> abs_sum;
    std::vector<int64_t> index;  // row number (of all the path's rows) of each kept row, ascending
    std::vector<float> rows;
  };
  const Entry& entry(model::Path p, model::LinearKind k) const { return entries_[size_t(p)][size_t(k)]; }
  bool picked(int64_t row, int64_t n) const;

  int layer_;
  std::array<int64_t, 2> path_rows_;
  std::vector<int64_t> caps_;
  std::array<std::array<Entry, model::kNumLinearKinds>, 2> entries_;
};

}  // namespace lq::pipeline
