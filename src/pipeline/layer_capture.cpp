#include "pipeline/layer_capture.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "io/error.h"

namespace lq::pipeline {

using model::LinearKind;
using model::Path;

LayerCapture::LayerCapture(int layer, std::array<int64_t, 2> path_rows, std::vector<int64_t> caps)
    : layer_(layer), path_rows_(path_rows), caps_(std::move(caps)) {
  for (int64_t c : caps_)
    if (c <= 0) fail("awq capture", "subsample size " + std::to_string(c) + " must be positive");
}

void LayerCapture::observe(const fwd::LinearId& id, const float* x, int64_t n, int64_t in) {
  if (id.layer != layer_ || id.kind == LinearKind::K || id.kind == LinearKind::V || id.kind == LinearKind::Up) return;
  Entry& e = entries_[size_t(id.path)][size_t(id.kind)];
  const int64_t total = path_rows_[size_t(id.path)];
  if (e.seen == 0) {
    e.width = in;
    e.abs_sum.assign(size_t(in), 0.0);
  }
  if (e.width != in) fail("awq capture", "input width of a linear changed within a layer");
  for (int64_t r = 0; r < n; ++r) {
    const float* row = x + r * in;
    for (int64_t c = 0; c < in; ++c) e.abs_sum[size_t(c)] += std::fabs(row[c]);
    const int64_t g = e.seen++;
    if (g >= total)
      fail("awq capture", "layer " + std::to_string(layer_) + " routed more rows through the " + model::path_name(id.path) +
                              " path than the calibration holds (" + std::to_string(total) + ")");
    if (picked(g, total)) {
      e.index.push_back(g);
      e.rows.insert(e.rows.end(), row, row + in);
    }
  }
}

// Row g of n is kept when some cap's subsample (rows i * n / cap, i < cap) picks it.
bool LayerCapture::picked(int64_t g, int64_t n) const {
  for (int64_t cap : caps_) {
    if (n <= cap) return true;
    const int64_t i = (g * cap + n - 1) / n;  // the smallest i with i * n >= g * cap
    if (i < cap && i * n / cap == g) return true;
  }
  return false;
}

std::vector<float> LayerCapture::mean_abs(Path p, LinearKind k) const {
  const Entry& e = entry(p, k);
  std::vector<float> out(e.abs_sum.size());
  for (size_t c = 0; c < out.size(); ++c) out[c] = float(e.abs_sum[c] / double(std::max<int64_t>(e.seen, 1)));
  return out;
}

std::vector<float> LayerCapture::sample(Path p, LinearKind k, int64_t cap) const {
  if (std::find(caps_.begin(), caps_.end(), cap) == caps_.end())
    fail("awq capture", "subsample of " + std::to_string(cap) + " rows was not asked for at construction");
  const Entry& e = entry(p, k);
  const int64_t n = e.seen;
  if (n != path_rows_[size_t(p)])
    fail("awq capture", "layer " + std::to_string(layer_) + " saw " + std::to_string(n) + " of the " + std::to_string(path_rows_[size_t(p)]) +
                            " calibration rows of the " + model::path_name(p) + " path");
  if (n <= cap) return e.rows;
  std::vector<float> out(size_t(cap * e.width));
  for (int64_t i = 0; i < cap; ++i) {
    const int64_t r = i * n / cap;
    const size_t at = size_t(std::lower_bound(e.index.begin(), e.index.end(), r) - e.index.begin());
    std::memcpy(&out[size_t(i * e.width)], &e.rows[at * size_t(e.width)], sizeof(float) * size_t(e.width));
  }
  return out;
}

}  // namespace lq::pipeline
