// LayerCapture against the plain definitions it replaces: all rows kept, then an evenly spaced
// subsample (rows i * n / cap) and the column mean of |x|. Equal bit for bit, for caps above and below
// the row count, rows arriving in uneven pieces, both paths; memory bounded by the caps.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "io/error.h"
#include "pipeline/layer_capture.h"
#include "test_random.h"

namespace lq::pipeline {
namespace {

using model::LinearKind;
using model::Path;

std::vector<float> reference_subsample(const std::vector<float>& x, int64_t width, int64_t cap) {
  const int64_t n = int64_t(x.size()) / width;
  if (n <= cap) return x;
  std::vector<float> out(size_t(cap * width));
  for (int64_t i = 0; i < cap; ++i) std::memcpy(&out[size_t(i * width)], &x[size_t(i * n / cap * width)], sizeof(float) * size_t(width));
  return out;
}

std::vector<float> reference_mean_abs(const std::vector<float>& x, int64_t width) {
  const int64_t n = int64_t(x.size()) / width;
  std::vector<double> s(static_cast<size_t>(width), 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < width; ++c) s[size_t(c)] += std::fabs(x[size_t(r * width + c)]);
  std::vector<float> out(static_cast<size_t>(width));
  for (int64_t c = 0; c < width; ++c) out[size_t(c)] = float(s[size_t(c)] / double(n));
  return out;
}

TEST(LayerCapture, SubsamplesAndMeansEqualThoseOfEveryRow) {
  const int layer = 3;
  const int64_t und = 1118, gen = 37, width = 24, down_width = 40;
  const std::vector<int64_t> caps = {256, 100};
  LayerCapture cap(layer, {und, gen}, caps);
  const std::vector<float> xu = test::gaussian(size_t(und * width), 1.0f, 11), xg = test::gaussian(size_t(gen * width), 1.0f, 12);
  const std::vector<float> du = test::gaussian(size_t(und * down_width), 2.0f, 13);
  // Uneven pieces, as samples of different lengths arrive; another layer's and K/V/Up rows are ignored.
  int64_t at = 0, piece = 1;
  while (at < und) {
    const int64_t n = std::min(piece, und - at);
    cap.observe({layer, Path::Und, LinearKind::Q}, &xu[size_t(at * width)], n, width);
    cap.observe({layer, Path::Und, LinearKind::K}, &xu[size_t(at * width)], n, width);
    cap.observe({layer + 1, Path::Und, LinearKind::Q}, &xu[size_t(at * width)], n, width);
    cap.observe({layer, Path::Und, LinearKind::Down}, &du[size_t(at * down_width)], n, down_width);
    at += n;
    piece = piece * 3 % 97 + 1;
  }
  cap.observe({layer, Path::Gen, LinearKind::Q}, xg.data(), gen, width);

  for (int64_t c : caps) {
    EXPECT_EQ(cap.sample(Path::Und, LinearKind::Q, c), reference_subsample(xu, width, c)) << c;
    EXPECT_EQ(cap.sample(Path::Und, LinearKind::Down, c), reference_subsample(du, down_width, c)) << c;
    EXPECT_EQ(cap.sample(Path::Gen, LinearKind::Q, c), xg) << c;  // fewer rows than the cap: all of them
  }
  EXPECT_EQ(cap.mean_abs(Path::Und, LinearKind::Q), reference_mean_abs(xu, width));
  EXPECT_EQ(cap.mean_abs(Path::Und, LinearKind::Down), reference_mean_abs(du, down_width));
  EXPECT_EQ(cap.mean_abs(Path::Gen, LinearKind::Q), reference_mean_abs(xg, width));
  // Memory: at most the union of the subsamples, not the 1118 rows.
  EXPECT_LE(cap.kept_rows(Path::Und, LinearKind::Q), 256 + 100);
  EXPECT_GE(cap.kept_rows(Path::Und, LinearKind::Q), 256);
  EXPECT_TRUE(cap.empty(Path::Gen, LinearKind::O));
  EXPECT_TRUE(cap.empty(Path::Und, LinearKind::K));
}

TEST(LayerCapture, RefusesUnknownCapsIncompleteAndExtraRows) {
  LayerCapture cap(0, {10, 0}, {4});
  const std::vector<float> x = test::gaussian(40, 1.0f, 5);
  cap.observe({0, Path::Und, LinearKind::O}, x.data(), 9, 4);
  EXPECT_THROW(cap.sample(Path::Und, LinearKind::O, 4), Error);  // 9 of 10 rows seen
  cap.observe({0, Path::Und, LinearKind::O}, x.data() + 36, 1, 4);
  EXPECT_EQ(cap.sample(Path::Und, LinearKind::O, 4).size(), 16u);
  EXPECT_THROW(cap.sample(Path::Und, LinearKind::O, 5), Error);  // not a cap given
  EXPECT_THROW(cap.observe({0, Path::Und, LinearKind::O}, x.data(), 1, 4), Error);  // an 11th row
  EXPECT_THROW(LayerCapture(0, {1, 1}, {0}), Error);
}

}  // namespace
}  // namespace lq::pipeline
