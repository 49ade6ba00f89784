// The 8-bit kernel (q8.h) against the double reference: with int8 activations (up to
// q4_int8_max_tokens() tokens) within the accumulation budget of the activations it uses (x^ from
// q8_activations) and within that plus their rounding of x; beyond, bit-identical to the dense f32
// GEMM over the dequantized matrix (W8A16 panels).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "io/error.h"
#include "kernels/linear.h"
#include "kernels/q4.h"
#include "kernels/q8.h"
#include "test_random.h"

namespace lq::kernels {
namespace {

Q8Matrix random_q8(int64_t rows, int64_t cols, int64_t group, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> codes(size_t(rows * cols));
  for (auto& c : codes) c = uint8_t(rng() % 256);  // includes 0 (-128 signed) and 255
  std::vector<float> s(size_t(rows * (cols / group)));
  for (auto& v : s) v = std::uniform_real_distribution<float>(1e-4f, 1e-2f)(rng);
  return pack_int8(rows, cols, group, codes.data(), s.data());
}

TEST(Q8Kernel, Int8ActivationsMatchReference) {
  for (const auto& [rows, cols, group] : {std::tuple<int64_t, int64_t, int64_t>{37, 256, 64}, {9, 640, 128}, {1, 64, 64}})
    for (int64_t n : {1, 2, 3, 5, 32}) {
      const Q8Matrix w = random_q8(rows, cols, group, uint32_t(rows + n));
      const std::vector<float> x = lq::test::gaussian(size_t(n * cols), 1.0f, uint32_t(n));
      std::vector<float> xh(x.size()), got(size_t(n * rows)), ref_h(got.size()), ref_x(got.size());
      const std::vector<float> bias = lq::test::gaussian(size_t(rows), 0.1f, 3);
      q8_activations(x.data(), n, cols, xh.data());
      q8_linear(x.data(), n, w, bias.data(), got.data());
      q8_linear_ref(xh.data(), n, w, bias.data(), ref_h.data());
      q8_linear_ref(x.data(), n, w, bias.data(), ref_x.data());
      for (int64_t t = 0; t < n; ++t)
        for (int64_t o = 0; o < rows; ++o) {
          double m = 0.0, act = 0.0;
          for (int64_t b = 0; b < cols / 64; ++b) {
            double amax = 0.0;
            for (int64_t i = b * 64; i < b * 64 + 64; ++i) amax = std::max(amax, std::fabs(double(x[size_t(t * cols + i)])));
            for (int64_t i = b * 64; i < b * 64 + 64; ++i) {
              const double wi = std::fabs(double(w.weight(o, i)));
              m += wi * std::fabs(double(xh[size_t(t * cols + i)]));
              act += wi * (0.5 * amax / 127.0 + 0x1p-21 * (std::fabs(double(x[size_t(t * cols + i)])) + amax / 127.0));
            }
          }
          const size_t k = size_t(t * rows + o);
          const double budget = 1e-5 * m + 1e-30;
          ASSERT_LE(std::fabs(got[k] - ref_h[k]), budget) << "n=" << n << " t=" << t << " o=" << o;
          ASSERT_LE(std::fabs(got[k] - ref_x[k]), budget + act) << "n=" << n << " t=" << t << " o=" << o;
        }
    }
}

TEST(Q8Kernel, ManyTokensEqualDenseGemmOverDequantizedWeights) {
  const int64_t rows = 45, cols = 320, group = 64, n = 70;
  const Q8Matrix w = random_q8(rows, cols, group, 5);
  std::vector<float> deq(size_t(rows * cols));
  for (int64_t o = 0; o < rows; ++o)
    for (int64_t i = 0; i < cols; ++i) deq[size_t(o * cols + i)] = w.weight(o, i);
  const std::vector<float> x = lq::test::gaussian(size_t(n * cols), 1.0f, 4);
  std::vector<float> got(size_t(n * rows)), want(got.size());
  q8_linear(x.data(), n, w, nullptr, got.data());
  linear_gemm(x.data(), n, DenseMatrix{WeightType::F32, rows, cols, deq.data()}, nullptr, want.data());
  EXPECT_EQ(got, want);
}

TEST(Q8Kernel, ThreadCountInvariantAndRejectsBadShapes) {
  const Q8Matrix w = random_q8(301, 256, 64, 2);
  const std::vector<float> x = lq::test::gaussian(size_t(3 * 256), 1.0f, 1);
  std::vector<float> a(size_t(3 * 301)), b(a.size());
  set_num_threads(1);
  q8_linear(x.data(), 3, w, nullptr, a.data());
  set_num_threads(3);
  q8_linear(x.data(), 3, w, nullptr, b.data());
  set_num_threads(0);
  EXPECT_EQ(a, b);
  std::vector<uint8_t> codes(4 * 96, 128);
  std::vector<float> s(8, 1.0f);
  EXPECT_THROW(pack_int8(4, 96, 32, codes.data(), s.data()), Error);   // group below 64
  EXPECT_THROW(pack_int8(4, 96, 64, codes.data(), s.data()), Error);   // 64 does not divide 96
}

}  // namespace
}  // namespace lq::kernels
