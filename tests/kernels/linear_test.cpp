// linear() against the double-accumulation reference linear_ref() with an explicit error budget, on
// odd shapes (every k tail, odd row counts, token counts that leave tile remainders), with and
// without bias, f32 and bf16 weights; plus bit-identical results across thread counts and between
// batched and one-token calls.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "io/error.h"
#include "kernels/linear.h"
#include "num/formats.h"

namespace {

using lq::kernels::DenseMatrix;
using lq::kernels::WeightType;
namespace kernels = lq::kernels;

struct ThreadCountGuard {
  explicit ThreadCountGuard(int n) { kernels::set_num_threads(n); }
  ~ThreadCountGuard() { kernels::set_num_threads(0); }
};

struct Problem {
  int64_t n, in, out;
  WeightType type;
  bool with_bias;
  std::vector<float> x, bias, w_f32;
  std::vector<uint16_t> w_bf16;

  Problem(int64_t n_, int64_t in_, int64_t out_, WeightType t, bool b, uint32_t seed)
      : n(n_), in(in_), out(out_), type(t), with_bias(b) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    x.resize(n * in);
    for (auto& v : x) v = normal(rng);
    w_f32.resize(out * in);
    for (auto& v : w_f32) v = 0.05f * normal(rng);
    if (type == WeightType::BF16) {
      w_bf16.resize(w_f32.size());
      lq::num::f32_to_bf16(w_f32.data(), w_bf16.data(), w_f32.size());
    }
    if (with_bias) {
      bias.resize(out);
      for (auto& v : bias) v = normal(rng);
    }
  }
  DenseMatrix matrix() const {
    const void* data = type == WeightType::F32 ? static_cast<const void*>(w_f32.data())
                                               : static_cast<const void*>(w_bf16.data());
    return {type, out, in, data};
  }
  const float* bias_ptr() const { return with_bias ? bias.data() : nullptr; }
  std::vector<float> run(void (*fn)(const float*, int64_t, const DenseMatrix&, const float*, float*),
                         int64_t tokens = -1, int64_t first_token = 0) const {
    if (tokens < 0) tokens = n;
    std::vector<float> y(tokens * out, NAN);
    fn(x.data() + first_token * in, tokens, matrix(), bias_ptr(), y.data());
    return y;
  }
  float weight(int64_t o, int64_t i) const {
    return type == WeightType::F32 ? w_f32[o * in + i] : lq::num::bf16_to_f32(w_bf16[o * in + i]);
  }
};

// f32 summation error bound: each output goes through ceil(in/8) FMAs per lane, a 3-level
// horizontal sum, in % 8 tail FMAs and the bias add, each adding at most one unit roundoff
// (2^-24) of the running magnitude, which is bounded by sum |x w| + |bias|.
void expect_within_budget(const Problem& p, const std::vector<float>& got,
                          const std::vector<float>& want) {
  const double depth = double((p.in + 7) / 8 + 3 + p.in % 8 + 1);
  for (int64_t t = 0; t < p.n; ++t)
    for (int64_t o = 0; o < p.out; ++o) {
      double magnitude = p.with_bias ? std::fabs(p.bias[o]) : 0.0;
      for (int64_t i = 0; i < p.in; ++i) magnitude += std::fabs(double(p.x[t * p.in + i]) * p.weight(o, i));
      const double budget = 1.01 * depth * 0x1p-24 * magnitude + 1e-30;
      const int64_t k = t * p.out + o;
      ASSERT_LE(std::fabs(double(got[k]) - double(want[k])), budget)
          << "token " << t << " row " << o << " shape n=" << p.n << " in=" << p.in
          << " out=" << p.out << (p.type == WeightType::BF16 ? " bf16" : " f32")
          << (p.with_bias ? " bias" : "") << ": got " << got[k] << " want " << want[k];
    }
}

TEST(Linear, ReportsSimdPath) {
  const std::string path = kernels::simd_path();
  EXPECT_TRUE(path == "avx2" || path == "scalar") << path;
}

TEST(Linear, MatchesReferenceOnOddShapes) {
  uint32_t seed = 1;
  for (WeightType type : {WeightType::F32, WeightType::BF16})
    for (bool with_bias : {false, true})
      for (int64_t n : {1, 2, 3, 5, 17, 64})
        for (int64_t in : {1, 7, 8, 13, 67, 130, 515})
          for (int64_t out : {1, 3, 5, 13, 37}) {
            const Problem p(n, in, out, type, with_bias, seed++);
            expect_within_budget(p, p.run(kernels::linear), p.run(kernels::linear_ref));
            if (HasFatalFailure()) return;
          }
}

// Shapes that cross every blocking boundary of the prefill path: several 64-token blocks, 48-row
// groups and 1024-wide k blocks, with a k tail.
TEST(Linear, MatchesReferenceAcrossCacheBlocks) {
  for (WeightType type : {WeightType::F32, WeightType::BF16}) {
    const Problem p(70, 2051, 101, type, true, 99);
    const auto batch = p.run(kernels::linear);
    expect_within_budget(p, batch, p.run(kernels::linear_ref));
    for (int64_t t : {0, 63, 64, 69}) {
      const auto one = p.run(kernels::linear, 1, t);
      ASSERT_EQ(std::memcmp(one.data(), batch.data() + t * p.out, p.out * 4), 0) << "token " << t;
    }
  }
}

TEST(Linear, ScalarPathMatchesReference) {
  uint32_t seed = 1000;
  for (WeightType type : {WeightType::F32, WeightType::BF16})
    for (int64_t n : {1, 3, 17})
      for (int64_t in : {1, 13, 130})
        for (int64_t out : {1, 5, 37}) {
          const Problem p(n, in, out, type, true, seed++);
          expect_within_budget(p, p.run(kernels::linear_scalar), p.run(kernels::linear_ref));
          if (HasFatalFailure()) return;
        }
}

TEST(Linear, BitIdenticalAcrossThreadCounts) {
  for (WeightType type : {WeightType::F32, WeightType::BF16})
    for (int64_t n : {1, 6, 17}) {
      // Large enough (in * out > 2^16 multiply-adds) that the rows are really split.
      const Problem p(n, 515, 259, type, true, 77);
      std::vector<float> first;
      for (int threads : {1, 2, 3, 4, 7}) {
        ThreadCountGuard guard(threads);
        const auto y = p.run(kernels::linear);
        if (first.empty()) first = y;
        ASSERT_EQ(std::memcmp(y.data(), first.data(), y.size() * 4), 0)
            << threads << " threads, n=" << n;
      }
    }
}

// Each token's row does not depend on which other tokens share the call (decode == prefill).
TEST(Linear, BatchRowsEqualSingleTokenCalls) {
  for (WeightType type : {WeightType::F32, WeightType::BF16}) {
    const Problem p(19, 131, 45, type, true, 5);
    const auto batch = p.run(kernels::linear);
    for (int64_t t = 0; t < p.n; ++t) {
      const auto one = p.run(kernels::linear, 1, t);
      ASSERT_EQ(std::memcmp(one.data(), batch.data() + t * p.out, p.out * 4), 0) << "token " << t;
    }
  }
}

TEST(Linear, ZeroInputFeaturesGiveBias) {
  const float bias[3] = {1.5f, -2.0f, 0.25f};
  const DenseMatrix w{WeightType::F32, 3, 0, nullptr};
  float y[6];
  kernels::linear(nullptr, 2, w, bias, y);
  for (int t = 0; t < 2; ++t)
    for (int o = 0; o < 3; ++o) EXPECT_EQ(y[t * 3 + o], bias[o]);
}

TEST(Linear, RejectsInvalidArguments) {
  float x[4] = {}, y[4] = {};
  const DenseMatrix null_w{WeightType::F32, 2, 2, nullptr};
  EXPECT_THROW(kernels::linear(x, 1, null_w, nullptr, y), lq::Error);
  const float w[4] = {};
  const DenseMatrix ok{WeightType::F32, 2, 2, w};
  EXPECT_THROW(kernels::linear(x, -1, ok, nullptr, y), lq::Error);
  EXPECT_THROW(kernels::linear(nullptr, 1, ok, nullptr, y), lq::Error);
  EXPECT_THROW(kernels::linear(x, 1, ok, nullptr, nullptr), lq::Error);
}

}  // namespace
