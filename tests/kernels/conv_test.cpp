// Conv2d (both backends) against the double-accumulation reference conv2d_ref on odd shapes: 3x3
// with padding 1, 1x1, the VAE's stride-2 downsample (padding only bottom/right), a kernel larger than
// the frame in one axis after padding, channel counts off every SIMD width; with and without bias,
// overwrite and accumulate. Error budget: |y - ref| <= 1e-5 * sum |x w| per output (f32 products
// summed in some order), checked as a bound on the worst output; plus determinism, the backend rule
// and bad-argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "io/error.h"
#include "kernels/conv.h"
#include "kernels/parallel.h"
#include "test_random.h"

namespace {

using lq::kernels::Conv2d;
using lq::kernels::Conv2dParams;
using lq::kernels::ConvBackend;
namespace kernels = lq::kernels;

struct Shape {
  int64_t cin, cout, h, w;
  int k, stride, pt, pb, pl, pr;
};

Conv2dParams params_of(const Shape& s) {
  Conv2dParams p;
  p.cin = s.cin;
  p.cout = s.cout;
  p.kh = p.kw = s.k;
  p.stride = s.stride;
  p.pad_top = s.pt;
  p.pad_bottom = s.pb;
  p.pad_left = s.pl;
  p.pad_right = s.pr;
  return p;
}

// sum over taps of |x w| for every output (the scale of the rounding error).
std::vector<double> magnitude(const Conv2dParams& p, const std::vector<float>& x, int64_t h, int64_t w,
                              const std::vector<float>& wt) {
  std::vector<float> ax(x.size()), aw(wt.size());
  for (size_t i = 0; i < x.size(); ++i) ax[i] = std::fabs(x[i]);
  for (size_t i = 0; i < wt.size(); ++i) aw[i] = std::fabs(wt[i]);
  std::vector<float> y(size_t(p.out_h(h) * p.out_w(w) * p.cout));
  kernels::conv2d_ref(p, ax.data(), h, w, aw.data(), nullptr, y.data(), false);
  return std::vector<double>(y.begin(), y.end());
}

std::vector<ConvBackend> backends() {
  std::vector<ConvBackend> b{ConvBackend::Gemm};
  if (kernels::dnnl_available()) b.push_back(ConvBackend::Dnnl);
  return b;
}

class ConvTest : public ::testing::TestWithParam<Shape> {};

TEST_P(ConvTest, MatchesReference) {
  const Shape s = GetParam();
  const Conv2dParams p = params_of(s);
  const auto x = lq::test::gaussian(size_t(s.h * s.w * s.cin), 1.0f, 11);
  const auto wt = lq::test::gaussian(size_t(s.cout * s.k * s.k * s.cin), 0.3f, 12);
  const auto bias = lq::test::gaussian(size_t(s.cout), 1.0f, 13);
  const auto prior = lq::test::gaussian(size_t(p.out_h(s.h) * p.out_w(s.w) * s.cout), 1.0f, 14);
  const auto mag = magnitude(p, x, s.h, s.w, wt);
  for (ConvBackend b : backends()) {
    const Conv2d conv(p, wt.data(), bias.data(), b);
    for (bool accumulate : {false, true})
      for (bool add_bias : {true, false}) {
        std::vector<float> ref = prior, got = prior;
        kernels::conv2d_ref(p, x.data(), s.h, s.w, wt.data(), bias.data(), ref.data(), accumulate, add_bias);
        conv.run(x.data(), s.h, s.w, got.data(), accumulate, add_bias);
        double worst = 0;
        for (size_t i = 0; i < ref.size(); ++i)
          worst = std::max(worst, std::fabs(double(got[i]) - ref[i]) / (mag[i] + (accumulate ? std::fabs(prior[i]) : 0) + 1e-30));
        EXPECT_LE(worst, 1e-5) << kernels::conv_backend_name(b) << " accumulate " << accumulate << " bias " << add_bias;
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ConvTest,
                         ::testing::Values(Shape{3, 5, 7, 9, 3, 1, 1, 1, 1, 1},       // 3x3, tiny channels
                                           Shape{13, 17, 6, 5, 3, 1, 1, 1, 1, 1},     // odd channels
                                           Shape{24, 40, 16, 12, 3, 1, 1, 1, 1, 1},   // SIMD-width multiples
                                           Shape{19, 33, 9, 11, 1, 1, 0, 0, 0, 0},    // 1x1
                                           Shape{16, 16, 10, 14, 3, 2, 0, 1, 0, 1},   // VAE downsample
                                           Shape{7, 9, 11, 7, 3, 2, 0, 1, 0, 1},      // odd size, stride 2
                                           Shape{8, 12, 1, 1, 3, 1, 1, 1, 1, 1},      // 1x1 frame, 3x3 filter
                                           Shape{48, 16, 3, 2, 3, 1, 1, 1, 1, 1}));   // latent-sized frame

TEST(Conv, GemmTilesOverManyPixels) {
  // More output pixels than one im2col block holds (K = 9 * 512: 1820-pixel blocks), so tiling is exercised.
  Conv2dParams p;
  p.cin = 512;
  p.cout = 8;
  p.kh = p.kw = 3;
  p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = 1;
  const int64_t h = 50, w = 41;
  const auto x = lq::test::gaussian(size_t(h * w * p.cin), 1.0f, 21);
  const auto wt = lq::test::gaussian(size_t(p.cout * 9 * p.cin), 0.05f, 22);
  std::vector<float> ref(size_t(h * w * p.cout)), got(ref.size());
  kernels::conv2d_ref(p, x.data(), h, w, wt.data(), nullptr, ref.data(), false);
  Conv2d(p, wt.data(), nullptr, ConvBackend::Gemm).run(x.data(), h, w, got.data(), false);
  const auto mag = magnitude(p, x, h, w, wt);
  for (size_t i = 0; i < ref.size(); ++i) ASSERT_LE(std::fabs(got[i] - ref[i]), 1e-5 * mag[i]) << i;
}

TEST(Conv, DeterministicAcrossCalls) {
  Conv2dParams p;
  p.cin = 32;
  p.cout = 24;
  p.kh = p.kw = 3;
  p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = 1;
  const auto x = lq::test::gaussian(size_t(20 * 20 * p.cin), 1.0f, 31);
  const auto wt = lq::test::gaussian(size_t(p.cout * 9 * p.cin), 0.1f, 32);
  for (ConvBackend b : backends()) {
    const Conv2d conv(p, wt.data(), nullptr, b);
    std::vector<float> a(size_t(20 * 20 * p.cout)), c(a.size());
    conv.run(x.data(), 20, 20, a.data(), false);
    conv.run(x.data(), 20, 20, c.data(), false);
    EXPECT_EQ(a, c) << kernels::conv_backend_name(b);
  }
}

TEST(Conv, BackendRule) {
  Conv2dParams p3;
  p3.cin = p3.cout = 32;
  p3.kh = p3.kw = 3;
  Conv2dParams p1 = p3;
  p1.kh = p1.kw = 1;
  Conv2dParams s2 = p3;
  s2.stride = 2;
  EXPECT_EQ(kernels::resolve_conv_backend(ConvBackend::Auto, p3),
            kernels::dnnl_available() ? ConvBackend::Dnnl : ConvBackend::Gemm);
  EXPECT_EQ(kernels::resolve_conv_backend(ConvBackend::Auto, p1), ConvBackend::Gemm);
  EXPECT_EQ(kernels::resolve_conv_backend(ConvBackend::Auto, s2), ConvBackend::Gemm);
  EXPECT_EQ(kernels::resolve_conv_backend(ConvBackend::Gemm, p3), ConvBackend::Gemm);
  Conv2dParams small = p3;
  small.cin = small.cout = 16;  // 256 < kDnnlMinChannelProduct
  EXPECT_EQ(kernels::resolve_conv_backend(ConvBackend::Auto, small), ConvBackend::Gemm);
}

TEST(Conv, BadArguments) {
  Conv2dParams p;
  p.cin = 4;
  p.cout = 4;
  p.kh = p.kw = 3;  // no padding: needs frames of at least 3x3
  const std::vector<float> wt(size_t(4 * 9 * 4), 0.0f), x(2 * 2 * 4, 0.0f);
  std::vector<float> y(16);
  const Conv2d conv(p, wt.data(), nullptr, ConvBackend::Gemm);
  EXPECT_THROW(conv.run(x.data(), 2, 2, y.data(), false), lq::Error);
  Conv2dParams bad = p;
  bad.cin = 0;
  EXPECT_THROW(Conv2d(bad, wt.data(), nullptr), lq::Error);
  EXPECT_THROW(kernels::parse_conv_backend("fast"), lq::Error);
}

}  // namespace
