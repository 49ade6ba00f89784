// AWQ building blocks: scale candidates, the scaled fake-quantizer, the grid search (identity is a
// candidate) and the clip search, checked against direct definitions.
#include <gtest/gtest.h>

#include "test_random.h"

#include <cmath>
#include <random>

#include "quant/awq.h"
#include "quant/qtensor.h"

namespace lq::quant {
namespace {

std::vector<float> randn(int64_t n, uint32_t seed, float std = 1.0f) { return lq::test::gaussian(size_t(n), std, seed); }

TEST(AwqScales, NormalisedToGeometricMidpointAndMatchDefinition) {
  const std::vector<float> xm = {0.5f, 2.0f, 8.0f}, wm = {1.0f, 0.25f, 0.5f};
  const std::vector<float> s = awq_scales(xm, wm, 0.5, true);
  std::vector<double> raw(3);
  for (int c = 0; c < 3; ++c) raw[c] = std::pow(xm[c], 0.5) / std::pow(wm[c], 0.5);
  const double lo = *std::min_element(raw.begin(), raw.end()), hi = *std::max_element(raw.begin(), raw.end());
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(s[c], raw[c] / std::sqrt(lo * hi), 1e-6);
  // llm-awq form: x_mean^alpha only.
  const std::vector<float> s1 = awq_scales(xm, wm, 1.0, false);
  EXPECT_NEAR(s1[2] / s1[0], 16.0, 1e-4);
}

TEST(AwqFakeQuantizeScaled, EqualsQuantizeOfScaledWeightDividedBack) {
  const int64_t out = 8, in = 64;
  const std::vector<float> w = randn(out * in, 1);
  std::vector<float> s(in);
  for (int64_t c = 0; c < in; ++c) s[c] = 0.5f + float(c % 7) * 0.3f;
  QuantParams p;
  p.group = 32;
  std::vector<float> got(out * in), ws(out * in), ref(out * in);
  fake_quantize_scaled(w.data(), out, in, p, s, got.data());
  for (int64_t i = 0; i < out * in; ++i) ws[i] = w[i] * s[i % in];
  const std::vector<float> deq = quantize(ws.data(), out, in, p).dequantize();
  for (int64_t i = 0; i < out * in; ++i) ASSERT_EQ(got[i], deq[i] / s[i % in]) << i;
}

TEST(AwqSearch, IdentityIsACandidateAndNeverBeaten) {
  // A loss that every non-identity candidate makes worse: the identity must be returned.
  const std::vector<float> xm = {1, 2, 3, 4}, wm = {1, 1, 1, 1};
  auto loss = [](const std::vector<float>& s) {
    double l = 0;
    for (float v : s) l += (v - 1.0) * (v - 1.0);
    return l;
  };
  const ScaleSearch r = search_scales(xm, wm, 20, true, loss);
  EXPECT_TRUE(r.identity);
  EXPECT_EQ(r.loss, 0.0);
  // Real quantization loss: the result is never worse than the identity's.
  const int64_t out = 16, in = 64;
  std::vector<float> w = randn(out * in, 2), x = randn(32 * in, 3);
  for (int64_t r2 = 0; r2 < 32; ++r2) x[r2 * in + 5] *= 30.0f;  // an outlier channel
  QuantParams p;
  p.group = 32;
  std::vector<float> xmean(in, 0.0f);
  for (int64_t i = 0; i < 32 * in; ++i) xmean[i % in] += std::fabs(x[i]) / 32;
  auto qloss = [&](const std::vector<float>& s) {
    std::vector<float> wq(out * in);
    fake_quantize_scaled(w.data(), out, in, p, s, wq.data());
    double l = 0;
    for (int64_t t = 0; t < 32; ++t)
      for (int64_t o = 0; o < out; ++o) {
        double d = 0;
        for (int64_t c = 0; c < in; ++c) d += double(x[t * in + c]) * (w[o * in + c] - wq[o * in + c]);
        l += d * d;
      }
    return l;
  };
  const ScaleSearch q = search_scales(xmean, weight_channel_mean({w.data()}, {out}, in, 32), 20, true, qloss);
  EXPECT_LE(q.loss, q.identity_loss);
  EXPECT_FALSE(q.identity) << "an outlier channel should make some scaling pay off";
  EXPECT_DOUBLE_EQ(q.loss, qloss(q.s));
}

TEST(AwqClip, PerGroupChoiceNeverWorseThanNoClip) {
  const int64_t out = 8, in = 128, n = 16;
  std::vector<float> w = randn(out * in, 4), x = randn(n * in, 5);
  w[3] = 9.0f;  // an outlier weight: clipping its group should help the others
  QuantParams p;
  p.group = 64;
  const std::vector<float> ratios = search_clip(w.data(), out, in, p, x.data(), n);
  ASSERT_EQ(ratios.size(), size_t(out * in / 64));
  std::vector<float> ones(ratios.size(), 1.0f), a(out * in), b(out * in);
  fake_quantize(w.data(), out, in, p, a.data(), ratios.data());
  fake_quantize(w.data(), out, in, p, b.data(), ones.data());
  for (int64_t o = 0; o < out; ++o)
    for (int64_t g = 0; g < 2; ++g) {
      double ea = 0, eb = 0;
      for (int64_t t = 0; t < n; ++t) {
        double da = 0, db = 0;
        for (int64_t c = g * 64; c < (g + 1) * 64; ++c) {
          da += double(x[t * in + c]) * (w[o * in + c] - a[o * in + c]);
          db += double(x[t * in + c]) * (w[o * in + c] - b[o * in + c]);
        }
        ea += da * da;
        eb += db * db;
      }
      EXPECT_LE(ea, eb * (1 + 1e-9)) << "row " << o << " group " << g;
      const float r = ratios[o * 2 + g];
      EXPECT_TRUE(r <= 1.0f && r >= 0.549f);
    }
}

}  // namespace
}  // namespace lq::quant
