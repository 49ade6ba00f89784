// Metric definitions against hand-computed values.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "eval/evaluate.h"
#include "eval/fake_quant.h"
#include "eval/metrics.h"
#include "eval/svg_chart.h"
#include "io/error.h"

namespace lq::eval {
namespace {

TEST(Metrics, TokenNllAndPerplexity) {
  const float uniform[4] = {0, 0, 0, 0};
  EXPECT_NEAR(token_nll(uniform, 4, 1), std::log(4.0), 1e-12);
  // softmax(log 1, log 3) = (1/4, 3/4): NLL of token 0 is ln 4, of token 1 is ln(4/3); shift-invariant.
  const float two[2] = {float(std::log(1.0)) + 7, float(std::log(3.0)) + 7};
  EXPECT_NEAR(token_nll(two, 2, 0), std::log(4.0), 1e-6);
  EXPECT_NEAR(token_nll(two, 2, 1), std::log(4.0 / 3.0), 1e-6);
  EXPECT_NEAR(perplexity(2 * std::log(4.0), 2), 4.0, 1e-12);
  EXPECT_THROW(perplexity(1.0, 0), Error);
  EXPECT_THROW(token_nll(uniform, 4, 4), Error);  // target outside the scored columns
}

TEST(Metrics, KlDivergence) {
  const float p[2] = {0, 0};  // (1/2, 1/2)
  const float q[2] = {float(std::log(0.25)), float(std::log(0.75))};
  // 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3)
  EXPECT_NEAR(kl_divergence(p, q, 2), 0.5 * std::log(4.0 / 3.0), 1e-7);
  const float q_shifted[2] = {q[0] + 3, q[1] + 3};
  EXPECT_NEAR(kl_divergence(p, q_shifted, 2), 0.5 * std::log(4.0 / 3.0), 1e-6);
  EXPECT_EQ(kl_divergence(q, q, 2), 0.0);
  // Only the first n columns are a distribution: column 2 is ignored.
  const float p3[3] = {0, 0, 100}, q3[3] = {0, 0, -100};
  EXPECT_EQ(kl_divergence(p3, q3, 2), 0.0);
}

TEST(Metrics, Percentile) {
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 0.5), 2.5);
  EXPECT_NEAR(percentile({1, 2, 3, 4}, 0.99), 3.97, 1e-12);  // numpy: 3.97
  EXPECT_DOUBLE_EQ(percentile({5}, 0.99), 5.0);
  EXPECT_DOUBLE_EQ(percentile({1, 2}, 1.0), 2.0);
  EXPECT_THROW(percentile({}, 0.5), Error);
}

TEST(Metrics, Levenshtein) {
  EXPECT_EQ(levenshtein_distance(U"kitten", U"sitting"), 3);
  EXPECT_EQ(levenshtein_distance(U"", U"abc"), 3);
  EXPECT_NEAR(levenshtein_similarity("kitten", "sitting"), 1.0 - 3.0 / 7.0, 1e-12);
  EXPECT_DOUBLE_EQ(levenshtein_similarity("", ""), 1.0);
  EXPECT_DOUBLE_EQ(levenshtein_similarity("", "abc"), 0.0);
  EXPECT_DOUBLE_EQ(levenshtein_similarity("same", "same"), 1.0);
  // Characters, not bytes: "é" is one substitution among 5 characters (bytes would say 2 of 6).
  EXPECT_DOUBLE_EQ(levenshtein_similarity("h\xc3\xa9llo", "hello"), 0.8);
}

TEST(Metrics, WordJaccard) {
  EXPECT_DOUBLE_EQ(word_jaccard("the cat sat", "the dog sat down"), 2.0 / 5.0);
  EXPECT_DOUBLE_EQ(word_jaccard("a b", "b  a\n"), 1.0);  // sets, any whitespace
  EXPECT_DOUBLE_EQ(word_jaccard("", ""), 1.0);
  EXPECT_DOUBLE_EQ(word_jaccard("x", ""), 0.0);
}

TEST(Metrics, CosineRelativeErrorPsnr) {
  const float a[2] = {1, 0}, b[2] = {1, 1}, z[2] = {0, 0};
  EXPECT_NEAR(cosine_similarity(a, b, 2), 1 / std::sqrt(2.0), 1e-12);
  EXPECT_DOUBLE_EQ(cosine_similarity(z, z, 2), 1.0);
  EXPECT_DOUBLE_EQ(cosine_similarity(a, z, 2), 0.0);
  const float r[2] = {3, 4}, t[2] = {3, 5};
  EXPECT_DOUBLE_EQ(relative_error(r, t, 2), 0.2);
  EXPECT_DOUBLE_EQ(relative_error(r, r, 2), 0.0);
  EXPECT_TRUE(std::isinf(relative_error(z, a, 2)));
  const float ref[2] = {0, 1}, test[2] = {0, 0.9f};
  // MSE = 0.01 / 2 -> 10 log10(1 / 0.005) = 23.0103 dB
  EXPECT_NEAR(psnr_db(ref, test, 2, 1.0), 10 * std::log10(1 / 0.005), 1e-5);
  EXPECT_TRUE(std::isinf(psnr_db(ref, ref, 2, 1.0)));
  const float x[4] = {-2, 5, 0, 1};
  EXPECT_DOUBLE_EQ(data_range(x, 4), 7.0);
}

TEST(Eval, TextWindows) {
  std::vector<int32_t> ids(10);
  for (int i = 0; i < 10; ++i) ids[size_t(i)] = i;
  auto w = text_windows(ids, 4, 0);
  ASSERT_EQ(w.size(), 2u);  // tail [8, 9] dropped
  EXPECT_EQ(w[1], (std::vector<int32_t>{4, 5, 6, 7}));
  EXPECT_EQ(text_windows(ids, 4, 5).size(), 1u);  // whole windows only, at least one
  EXPECT_EQ(text_windows({1, 2, 3}, 4, 0).size(), 1u);  // shorter than a window: one window
  EXPECT_TRUE(text_windows({1}, 4, 0).empty());
}

TEST(Eval, FakeQuantSpec) {
  const quant::QuantParams p = parse_fake_quant("int4_asym:64", "t");
  EXPECT_EQ(p.scheme, quant::Scheme::Int4Asym);
  EXPECT_EQ(p.group, 64);
  EXPECT_EQ(parse_fake_quant("nvfp4", "t").scheme, quant::Scheme::NvFp4);
  EXPECT_THROW(parse_fake_quant("int3", "t"), Error);
  EXPECT_THROW(parse_fake_quant("int4_sym:x", "t"), Error);
}

TEST(SvgChart, TicksAndDocument) {
  const std::vector<double> t = nice_ticks(0, 1, 5), want = {0, 0.2, 0.4, 0.6, 0.8, 1};
  ASSERT_EQ(t.size(), want.size());
  for (size_t i = 0; i < t.size(); ++i) EXPECT_NEAR(t[i], want[i], 1e-12);
  EXPECT_EQ(nice_ticks(3, 27, 5), (std::vector<double>{5, 10, 15, 20, 25}));
  const std::string svg = line_chart_svg({"Title <x>", "layer", "err", true, {}, 400, 300},
                                         {{"q", {0, 1, 2}, {1e-3, 1e-2, 1e-1}}, {"zero", {0, 1}, {0, 0}}});
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("Title &lt;x&gt;"), std::string::npos);  // escaped
  EXPECT_NE(svg.find(">q</text>"), std::string::npos);
  EXPECT_EQ(svg.find("(log scale)"), std::string::npos);  // a zero value forces a linear axis
  const std::string logsvg = line_chart_svg({"t", "x", "y", true, {}, 400, 300}, {{"q", {0, 1}, {1e-3, 1e-1}}});
  EXPECT_NE(logsvg.find("(log scale)"), std::string::npos);
  EXPECT_NE(logsvg.find(">1e-3<"), std::string::npos);
}

}  // namespace
}  // namespace lq::eval
