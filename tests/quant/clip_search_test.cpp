// search_clip computes its per-(row, group) errors with the GEMM kernel: its choice must be the
// best of the ten ratios under an independent double-precision evaluation, within an explicit budget
// (f32 GEMM sums vs double: a near tie may go either way, by at most 1e-4 of the error).
#include <gtest/gtest.h>

#include "test_random.h"

#include <random>
#include <vector>

#include "quant/awq.h"
#include "quant/quantizer.h"

namespace lq::quant {
namespace {

std::vector<float> randn(int64_t n, uint32_t seed) { return lq::test::gaussian(size_t(n), 1.0f, seed); }

// sum_t (x_t,g . (w - wq)_o,g)^2 in double for row o, group gi.
double group_error(const std::vector<float>& w, const std::vector<float>& wq, const std::vector<float>& x, int64_t n,
                   int64_t in, int64_t g, int64_t o, int64_t gi) {
  double e = 0;
  for (int64_t t = 0; t < n; ++t) {
    double d = 0;
    for (int64_t c = gi * g; c < (gi + 1) * g; ++c) d += double(x[t * in + c]) * (double(w[o * in + c]) - wq[o * in + c]);
    e += d * d;
  }
  return e;
}

TEST(AwqClip, GemmErrorsPickTheBestRatioOfADoubleReference) {
  for (int64_t group : {int64_t(64), int64_t(128)}) {
    const int64_t out = 24, in = 256, n = 48, groups = in / group;  // n >= 32: the GEMM path of kernels::linear
    std::vector<float> w = randn(out * in, 11), x = randn(n * in, 12);
    for (int64_t o = 0; o < out; o += 3) w[o * in + (o % in)] = 8.0f;  // outliers make clipping pay off somewhere
    QuantParams p;
    p.group = int(group);
    const std::vector<float> chosen = search_clip(w.data(), out, in, p, x.data(), n);
    ASSERT_EQ(chosen.size(), size_t(out * groups));
    // Reference: every ratio's quantization, errors in double.
    std::vector<std::vector<float>> wq(10, std::vector<float>(w.size()));
    for (int step = 0; step < 10; ++step) {
      std::vector<float> r(chosen.size(), 1.0f - 0.05f * float(step));
      fake_quantize(w.data(), out, in, p, wq[size_t(step)].data(), r.data());
    }
    int clipped = 0;
    for (int64_t o = 0; o < out; ++o)
      for (int64_t gi = 0; gi < groups; ++gi) {
        double best = INFINITY, got = -1;
        for (int step = 0; step < 10; ++step) {
          const double e = group_error(w, wq[size_t(step)], x, n, in, group, o, gi);
          best = std::min(best, e);
          if (1.0f - 0.05f * float(step) == chosen[size_t(o * groups + gi)]) got = e;
        }
        ASSERT_GE(got, 0) << "ratio " << chosen[size_t(o * groups + gi)] << " is not on the grid";
        EXPECT_LE(got, best * (1 + 1e-4)) << "group " << group << " row " << o << " group index " << gi;
        clipped += chosen[size_t(o * groups + gi)] < 1.0f;
      }
    EXPECT_GT(clipped, 0) << "the outliers should make some group clip";
  }
}

}  // namespace
}  // namespace lq::quant
