// Fused 4-bit kernels against the double-precision reference and against independent
// dequantization of the unpacked codes.
//
// Error budgets. For up to q4_int8_max_tokens() tokens the kernels compute with int8 activations
// x^ (q4.h); beyond, with the f32 activations x. With v = the activations the path uses:
//  (1) accumulation: |y - ref(v)| <= 1e-5 * M + 1e-30,  M = sum_i |s| (q_i + z) |v_i| (Int4) or
//      sum_i |w_i v_i| (NvFp4). M bounds every partial sum the f32 decomposition forms (q s v and the
//      zero correction s z sum v); 1e-5 ~ 84 f32 ulps of it: generous for accumulation rounding
//      (the int8 products are exact integers), far below any indexing or decoding mistake (one
//      wrong code moves y by ~ |s v_i|, i.e. ~ M / in).
//  (2) activation quantization, int8 path only: |y - ref(x)| <= (1) + sum_i |w_i| e_i with
//      e_i = d_b / 2 + 2^-21 (|x_i| + d_b), d_b = max |x| / 127 over the 64-input block of i:
//      rounding to the nearest multiple of d_b plus three f32 roundings (scale, its inverse, x^).
//  (3) typical size of (2): relative RMS error over a layer's outputs below 1% for Gaussian inputs
//      (the uniform rounding error d / sqrt(12) ~ 0.5% of the input RMS).
#include <gtest/gtest.h>

#include "test_random.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "io/error.h"
#include "kernels/q4.h"
#include "num/formats.h"

namespace lq::kernels {
namespace {

struct Case {
  Q4Scheme scheme;
  int64_t rows, cols, group;
};

struct Unpacked {
  std::vector<uint8_t> codes, zeros, block_scales;
  std::vector<float> scales;
  float tensor_scale = 1.0f;
};

Unpacked random_weights(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  Unpacked u;
  u.codes.resize(size_t(c.rows * c.cols));
  for (auto& q : u.codes) q = uint8_t(rng() % 16);
  const size_t ng = size_t(c.rows * (c.cols / c.group));
  std::uniform_real_distribution<float> sd(0.001f, 0.05f);
  if (c.scheme == Q4Scheme::Int4) {
    u.scales.resize(ng);
    u.zeros.resize(ng);
    for (size_t g = 0; g < ng; ++g) {
      u.scales[g] = num::bf16_to_f32(num::f32_to_bf16(sd(rng)));  // bf16-exact, as checkpoints store
      u.zeros[g] = uint8_t(rng() % 16);
    }
  } else {
    u.block_scales.resize(ng);
    for (auto& b : u.block_scales) b = num::f32_to_e4m3(std::uniform_real_distribution<float>(1.0f, 448.0f)(rng));
    u.tensor_scale = 3.1e-5f;
  }
  return u;
}

Q4Matrix build(const Case& c, const Unpacked& u) {
  if (c.scheme == Q4Scheme::Int4)
    return pack_int4(c.rows, c.cols, c.group, u.codes.data(), u.scales.data(), u.zeros.data());
  return pack_nvfp4(c.rows, c.cols, u.codes.data(), u.block_scales.data(), u.tensor_scale);
}

// Independent dequantization straight from the unpacked arrays (not via Q4Matrix).
double dequant(const Case& c, const Unpacked& u, int64_t o, int64_t i) {
  const size_t g = size_t(o * (c.cols / c.group) + i / c.group);
  const uint8_t q = u.codes[size_t(o * c.cols + i)];
  if (c.scheme == Q4Scheme::Int4) return (double(q) - double(u.zeros[g])) * double(u.scales[g]);
  const float bs = num::e4m3_to_f32(u.block_scales[g]) * u.tensor_scale;
  return double(num::e2m1_to_f32(q)) * double(bs);
}

std::vector<float> random_x(int64_t n, int64_t cols, uint32_t seed) { return lq::test::gaussian(size_t(n * cols), 1.0f, seed); }

// The magnitude M of the error budget for output (t, o).
double magnitude(const Case& c, const Unpacked& u, const float* x, int64_t t, int64_t o) {
  double m = 0.0;
  for (int64_t i = 0; i < c.cols; ++i) {
    const double xi = std::fabs(double(x[t * c.cols + i]));
    if (c.scheme == Q4Scheme::Int4) {
      const size_t g = size_t(o * (c.cols / c.group) + i / c.group);
      m += double(u.scales[g]) * (double(u.codes[size_t(o * c.cols + i)]) + double(u.zeros[g])) * xi;
    } else {
      m += std::fabs(dequant(c, u, o, i)) * xi;
    }
  }
  return m;
}

constexpr int64_t kQ8Block = 64;  // inputs per activation scale (q4.h)

// Budget (2)'s activation term for output (t, o): sum_i |w_i| e_i, d_b computed here from x.
double activation_budget(const Case& c, const Unpacked& u, const float* x, int64_t t, int64_t o) {
  double e = 0.0;
  for (int64_t b = 0; b * kQ8Block < c.cols; ++b) {
    const int64_t i0 = b * kQ8Block, i1 = std::min(c.cols, i0 + kQ8Block);
    double amax = 0.0;
    for (int64_t i = i0; i < i1; ++i) amax = std::max(amax, std::fabs(double(x[t * c.cols + i])));
    const double d = amax / 127.0;
    for (int64_t i = i0; i < i1; ++i)
      e += std::fabs(dequant(c, u, o, i)) * (0.5 * d + std::ldexp(1.0, -21) * (std::fabs(double(x[t * c.cols + i])) + d));
  }
  return e;
}

using Kernel = void (*)(const float*, int64_t, const Q4Matrix&, const float*, float*);

// `int8`: whether this kernel uses int8 activations for n tokens.
void expect_matches_reference(const Case& c, const Unpacked& u, int64_t n, Kernel kernel, const char* name, bool int8) {
  SCOPED_TRACE(std::string(name) + (c.scheme == Q4Scheme::Int4 ? " int4" : " nvfp4") + " rows=" +
               std::to_string(c.rows) + " cols=" + std::to_string(c.cols) + " group=" + std::to_string(c.group) +
               " n=" + std::to_string(n) + (int8 ? " (int8 activations)" : " (f32 activations)"));
  const Q4Matrix w = build(c, u);
  const std::vector<float> x = random_x(n, c.cols, uint32_t(n + 11));
  std::vector<float> v = x;  // the activations the path computes with
  if (int8) q8_activations(x.data(), n, c.cols, v.data());
  std::vector<float> bias(size_t(c.rows));
  for (int64_t o = 0; o < c.rows; ++o) bias[size_t(o)] = 0.01f * float(o % 13) - 0.05f;
  std::vector<float> ref_v(size_t(n * c.rows)), ref_x(ref_v.size()), got(ref_v.size(), NAN);
  q4_linear_ref(v.data(), n, w, bias.data(), ref_v.data());
  q4_linear_ref(x.data(), n, w, bias.data(), ref_x.data());
  kernel(x.data(), n, w, bias.data(), got.data());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t o = 0; o < c.rows; ++o) {
      const size_t k = size_t(t * c.rows + o);
      const double budget = 1e-5 * magnitude(c, u, v.data(), t, o) + 1e-30;
      ASSERT_LE(std::fabs(double(got[k]) - double(ref_v[k])), budget) << "t=" << t << " o=" << o;
      if (int8) {
        const double loose = budget + activation_budget(c, u, x.data(), t, o);
        ASSERT_LE(std::fabs(double(got[k]) - double(ref_x[k])), loose) << "t=" << t << " o=" << o;
      }
    }
}

void expect_matches_reference(const Case& c, int64_t n, Kernel kernel, const char* name, bool int8) {
  expect_matches_reference(c, random_weights(c, uint32_t(c.rows * 7 + c.cols + c.group)), n, kernel, name, int8);
}

bool dispatched_int8(int64_t n) { return n <= q4_int8_max_tokens(); }

// Lance's shapes scaled down (in/out ratios kept), plus tails: rows not a multiple of the thread
// split, in_features with a final 16-code chunk (NvFp4 / group 16), tiny matrices.
std::vector<Case> cases() {
  std::vector<Case> cs;
  for (int64_t g : {32, 64, 128}) {
    cs.push_back({Q4Scheme::Int4, 256, 256, g});   // 2048 -> 2048
    cs.push_back({Q4Scheme::Int4, 32, 256, g});    // 2048 -> 256
    cs.push_back({Q4Scheme::Int4, 1376, 256, g});  // 2048 -> 11008
    cs.push_back({Q4Scheme::Int4, 256, 1408, g});  // 11008 -> 2048 (1408 = 11 * 128)
  }
  cs.push_back({Q4Scheme::Int4, 13, 128, 64});    // Lanes layout: a padded last block of 8 rows
  cs.push_back({Q4Scheme::Int4, 21, 256, 128});   // ... and an odd number of blocks (batch 1 pairs them)
  cs.push_back({Q4Scheme::Int4, 7, 48, 16});      // group 16, a 48-code last chunk
  cs.push_back({Q4Scheme::Int4, 1, 16, 16});      // one half-filled block
  cs.push_back({Q4Scheme::Int4, 9, 96, 32});      // group 32, a 32-code last chunk
  cs.push_back({Q4Scheme::Int4, 5, 144, 48});     // group 48: groups straddle blocks
  cs.push_back({Q4Scheme::Int4, 6, 384, 192});    // group 192: three chunks per group
  cs.push_back({Q4Scheme::Int4, 3, 80, 80});      // a 16-code last chunk
  for (int64_t cols : {256, 1408, 48, 16, 144, 80})  // 144, 80: short last span of block scales
    for (int64_t rows : {256, 33, 1}) cs.push_back({Q4Scheme::NvFp4, rows, cols, 16});
  cs.push_back({Q4Scheme::NvFp4, 1376, 256, 16});
  return cs;
}

TEST(Q4Reference, EqualsIndependentDequantization) {
  for (const Case& c : {Case{Q4Scheme::Int4, 5, 96, 32}, Case{Q4Scheme::Int4, 13, 192, 64},
                        Case{Q4Scheme::NvFp4, 5, 80, 16}}) {
    const Unpacked u = random_weights(c, 3);
    const Q4Matrix w = build(c, u);
    for (int64_t o = 0; o < c.rows; ++o)
      for (int64_t i = 0; i < c.cols; ++i) {
        ASSERT_EQ(w.code(o, i), u.codes[size_t(o * c.cols + i)]) << o << "," << i;
        ASSERT_EQ(w.weight(o, i), float(dequant(c, u, o, i))) << o << "," << i;  // one f32 rounding
      }
    const std::vector<float> x = random_x(3, c.cols, 5);
    std::vector<float> y(size_t(3 * c.rows));
    q4_linear_ref(x.data(), 3, w, nullptr, y.data());
    for (int64_t t = 0; t < 3; ++t)
      for (int64_t o = 0; o < c.rows; ++o) {
        double e = 0;
        for (int64_t i = 0; i < c.cols; ++i) e += double(float(dequant(c, u, o, i))) * double(x[size_t(t * c.cols + i)]);
        EXPECT_EQ(y[size_t(t * c.rows + o)], float(e));
      }
  }
}

TEST(Q4Kernels, DispatchedPathMatchesReference) {
  for (const Case& c : cases())
    for (int64_t n : {1, 2, 3, 5, 7, 8, 9})
      expect_matches_reference(c, n, q4_linear, q4_simd_path(), dispatched_int8(n));
}

TEST(Q4Kernels, LargerBatchesMatchReference) {
  for (const Case& c : {Case{Q4Scheme::Int4, 96, 512, 64}, Case{Q4Scheme::Int4, 64, 256, 128},
                        Case{Q4Scheme::Int4, 21, 256, 128}, Case{Q4Scheme::Int4, 40, 208, 16},
                        Case{Q4Scheme::NvFp4, 96, 512, 16},
                        Case{Q4Scheme::NvFp4, 17, 144, 16}})
    for (int64_t n : {4, 6, 8, 9, 16, 17, 33, 64})
      expect_matches_reference(c, n, q4_linear, q4_simd_path(), dispatched_int8(n));
}

// Int4 groups of 64k use the Lanes layout, which keeps each scale in the narrowest of bf16 / f16 /
// f32 that holds every scale of the matrix exactly; the kernels must give the reference's result
// with each storage (checkpoint scales are bf16 or f16; the f32 fallback covers the rest).
TEST(Q4Kernels, LanesLayoutKeepsEveryScaleExactly) {
  const Case c{Q4Scheme::Int4, 19, 256, 64};
  Unpacked bf16 = random_weights(c, 31), f16 = bf16, f32 = bf16;
  std::mt19937 rng(5);
  for (float& s : f16.scales) s = num::f16_to_f32(num::f32_to_f16(std::ldexp(1.0f + float(rng() % 1024) / 1024.0f, -8)));
  f16.scales[0] = std::ldexp(1.0f + 1.0f / 1024.0f, -8);  // 11 significant bits: f16 holds it, bf16 does not
  for (float& s : f32.scales) s = std::uniform_real_distribution<float>(0.001f, 0.05f)(rng);
  struct Want {
    const Unpacked* u;
    LaneScale storage;
  };
  for (const Want& want : {Want{&bf16, LaneScale::BF16}, Want{&f16, LaneScale::F16}, Want{&f32, LaneScale::F32}}) {
    const Q4Matrix w = build(c, *want.u);
    ASSERT_EQ(w.layout, Q4Layout::Lanes);
    EXPECT_EQ(w.lane_scale, want.storage);
    for (int64_t o = 0; o < c.rows; ++o)
      for (int64_t g = 0; g < c.cols / c.group; ++g) {
        ASSERT_EQ(w.group_scale(o, g), want.u->scales[size_t(o * (c.cols / c.group) + g)]) << o << "," << g;
        ASSERT_EQ(w.group_zero(o, g), want.u->zeros[size_t(o * (c.cols / c.group) + g)]) << o << "," << g;
      }
    for (int64_t n : {1, 2, 5, 40}) expect_matches_reference(c, *want.u, n, q4_linear, q4_simd_path(), dispatched_int8(n));
    expect_matches_reference(c, *want.u, 3, q4_linear_scalar, "scalar", true);
  }
}

// NvFp4 takes the Lanes layout when in_features is a multiple of 64 and no block scale is negative
// (its kernel decodes scale bytes without a sign); a negative scale keeps the Rows layout, which
// must still give the reference's result.
TEST(Q4Kernels, NvFp4LayoutFollowsShapeAndScaleSigns) {
  const Case lanes{Q4Scheme::NvFp4, 21, 256, 16}, rows{Q4Scheme::NvFp4, 21, 144, 16};
  EXPECT_EQ(build(lanes, random_weights(lanes, 2)).layout, Q4Layout::Lanes);
  EXPECT_EQ(build(rows, random_weights(rows, 2)).layout, Q4Layout::Rows);
  Unpacked u = random_weights(lanes, 2);
  u.block_scales[7] |= 0x80;
  ASSERT_EQ(build(lanes, u).layout, Q4Layout::Rows);
  for (int64_t n : {1, 3, 40}) expect_matches_reference(lanes, u, n, q4_linear, q4_simd_path(), dispatched_int8(n));
}

// The Lanes kernels' instruction-set variants (AVX2 maddubs + madd, the AVX-512 VNNI formulation
// emulated on AVX2, AVX-512 VNNI itself where the CPU has it) compute the same exact integer sums in
// the same float order: identical outputs, all within the reference's budget.
TEST(Q4Kernels, SimdPathsGiveIdenticalResults) {
  const std::string best = q4_simd_path();
  if (best == "scalar") GTEST_SKIP() << "no AVX2 on this CPU: only the scalar path exists";
  std::vector<std::string> paths = {"avx2", "avx2-vnni"};
  try {
    set_q4_simd_path("avx512vnni");
    paths.push_back("avx512vnni");
  } catch (const Error&) {
    std::printf("this CPU has no AVX-512 VNNI: its kernels run here only in their AVX2 emulation\n");
  }
  for (const Case& c : {Case{Q4Scheme::Int4, 21, 256, 64}, Case{Q4Scheme::Int4, 40, 1408, 128},
                        Case{Q4Scheme::Int4, 13, 384, 192}, Case{Q4Scheme::NvFp4, 21, 1408, 16}}) {
    const Unpacked u = random_weights(c, 17);
    const Q4Matrix w = build(c, u);
    ASSERT_EQ(w.layout, Q4Layout::Lanes);
    for (int64_t n : {1, 2, 3, 5, 9}) {
      const std::vector<float> x = random_x(n, c.cols, uint32_t(n));
      std::vector<float> first;
      for (const std::string& path : paths) {
        set_q4_simd_path(path);
        ASSERT_EQ(q4_simd_path(), path);
        std::vector<float> y(size_t(n * c.rows));
        q4_linear(x.data(), n, w, nullptr, y.data());
        if (first.empty())
          first = y;
        else
          EXPECT_EQ(y, first) << path << " rows=" << c.rows << " n=" << n;
        expect_matches_reference(c, u, n, q4_linear, path.c_str(), dispatched_int8(n));
      }
    }
  }
  set_q4_simd_path("");
  EXPECT_EQ(q4_simd_path(), best);
  EXPECT_THROW(set_q4_simd_path("avx3"), Error);
  set_q4_simd_path("scalar");  // q4_linear runs the portable path
  expect_matches_reference(Case{Q4Scheme::Int4, 21, 256, 64}, 2, q4_linear, "forced scalar", true);
  set_q4_simd_path("");
}

// With the int8 path switched off every batch uses f32 activations (tight budget (1) against ref(x)).
TEST(Q4Kernels, Int8PathCanBeSwitchedOff) {
  set_q4_int8_max_tokens(0);
  EXPECT_EQ(q4_int8_max_tokens(), 0);
  for (const Case& c : {Case{Q4Scheme::Int4, 33, 256, 64}, Case{Q4Scheme::NvFp4, 17, 144, 16}})
    for (int64_t n : {1, 3}) expect_matches_reference(c, n, q4_linear, "f32 activations", false);
  set_q4_int8_max_tokens(-1);
  EXPECT_EQ(q4_int8_max_tokens(), 32);
}

TEST(Q4Kernels, ScalarPathMatchesReference) {
  for (const Case& c : {Case{Q4Scheme::Int4, 33, 256, 64}, Case{Q4Scheme::Int4, 7, 48, 16},
                        Case{Q4Scheme::Int4, 5, 144, 48}, Case{Q4Scheme::NvFp4, 33, 1408, 16},
                        Case{Q4Scheme::NvFp4, 5, 48, 16}})
    for (int64_t n : {1, 3, 6, 9}) expect_matches_reference(c, n, q4_linear_scalar, "scalar", true);
}

// Budget (3): the typical error int8 activations add, over Lance-like shapes.
TEST(Q4Kernels, Int8ActivationErrorIsSmallOnAverage) {
  for (const Case& c : {Case{Q4Scheme::Int4, 512, 2048, 64}, Case{Q4Scheme::NvFp4, 256, 2048, 16}}) {
    const Unpacked u = random_weights(c, 21);
    const Q4Matrix w = build(c, u);
    const std::vector<float> x = random_x(1, c.cols, 8);
    std::vector<float> ref(size_t(c.rows)), got(ref.size());
    q4_linear_ref(x.data(), 1, w, nullptr, ref.data());
    q4_linear(x.data(), 1, w, nullptr, got.data());
    double err = 0.0, norm = 0.0;
    for (size_t k = 0; k < ref.size(); ++k) {
      err += (double(got[k]) - ref[k]) * (double(got[k]) - ref[k]);
      norm += double(ref[k]) * ref[k];
    }
    const double rel = std::sqrt(err / norm);
    EXPECT_LT(rel, 0.01) << (c.scheme == Q4Scheme::Int4 ? "int4" : "nvfp4");
    EXPECT_GT(rel, 1e-4) << "int8 activations should leave a visible error; is the int8 path used at n = 1?";
  }
}

// q8_activations against the definition, computed independently here.
TEST(Q4Kernels, Q8ActivationsFollowTheDefinition) {
  const int64_t cols = 160;  // two full blocks and a half block
  std::vector<float> x = random_x(2, cols, 3);
  for (int64_t i = 64; i < 128; ++i) x[size_t(i)] = 0.0f;  // token 0, block 1: all zero
  x[size_t(cols + 150)] = INFINITY;                         // token 1, block 2: non-finite
  std::vector<float> xh(x.size());
  q8_activations(x.data(), 2, cols, xh.data());
  for (int64_t t = 0; t < 2; ++t)
    for (int64_t b = 0; b * kQ8Block < cols; ++b) {
      const int64_t i0 = t * cols + b * kQ8Block, i1 = t * cols + std::min(cols, b * kQ8Block + kQ8Block);
      float amax = 0.0f;
      for (int64_t i = i0; i < i1; ++i) amax = std::max(amax, std::fabs(x[size_t(i)]));
      for (int64_t i = i0; i < i1; ++i) {
        if (std::isinf(amax)) {
          EXPECT_TRUE(std::isnan(xh[size_t(i)])) << i;
        } else if (amax == 0.0f) {
          EXPECT_EQ(xh[size_t(i)], 0.0f) << i;
        } else {
          const float q = std::nearbyint(x[size_t(i)] * (127.0f / amax));
          EXPECT_EQ(xh[size_t(i)], q * (amax / 127.0f)) << i;
          EXPECT_LE(std::fabs(q), 127.0f);
          EXPECT_LE(std::fabs(xh[size_t(i)] - x[size_t(i)]), 0.5 * amax / 127.0 * (1 + 1e-5)) << i;
        }
      }
    }
}

// Non-finite activations give NaN outputs on the int8 path (as the f32 products would).
TEST(Q4Kernels, NonFiniteActivationsPropagate) {
  for (const Case& c : {Case{Q4Scheme::Int4, 5, 128, 64}, Case{Q4Scheme::NvFp4, 5, 128, 16}}) {
    const Unpacked u = random_weights(c, 2);
    const Q4Matrix w = build(c, u);
    std::vector<float> x = random_x(2, c.cols, 6);
    x[size_t(c.cols + 40)] = NAN;
    std::vector<float> y(size_t(2 * c.rows)), ys(y.size());
    q4_linear(x.data(), 2, w, nullptr, y.data());
    q4_linear_scalar(x.data(), 2, w, nullptr, ys.data());
    for (int64_t o = 0; o < c.rows; ++o) {
      EXPECT_TRUE(std::isfinite(y[size_t(o)]) && std::isfinite(ys[size_t(o)]));
      EXPECT_TRUE(std::isnan(y[size_t(c.rows + o)]) && std::isnan(ys[size_t(c.rows + o)]));
    }
  }
}

TEST(Q4Kernels, ThreadCountInvariant) {
  const Case c{Q4Scheme::Int4, 301, 512, 64};
  const Unpacked u = random_weights(c, 9);
  const Q4Matrix w = build(c, u);
  for (int64_t n : {1, 5, 12}) {
    const std::vector<float> x = random_x(n, c.cols, 4);
    std::vector<float> a(size_t(n * c.rows)), b(a.size()), again(a.size());
    set_num_threads(1);
    q4_linear(x.data(), n, w, nullptr, a.data());
    set_num_threads(3);
    q4_linear(x.data(), n, w, nullptr, b.data());
    q4_linear(x.data(), n, w, nullptr, again.data());
    set_num_threads(0);
    EXPECT_EQ(a, b) << "n=" << n;
    EXPECT_EQ(b, again) << "n=" << n;
  }
}

TEST(Q4Kernels, ZeroTokensAndErrors) {
  const Case c{Q4Scheme::Int4, 4, 64, 32};
  const Unpacked u = random_weights(c, 1);
  const Q4Matrix w = build(c, u);
  q4_linear(nullptr, 0, w, nullptr, nullptr);  // nothing to do, nothing touched
  EXPECT_THROW(q4_linear(nullptr, -1, w, nullptr, nullptr), Error);
  std::vector<uint8_t> bad(u.codes);
  bad[5] = 16;
  EXPECT_THROW(pack_int4(4, 64, 32, bad.data(), u.scales.data(), u.zeros.data()), Error);
  EXPECT_THROW(pack_int4(4, 64, 48, u.codes.data(), u.scales.data(), u.zeros.data()), Error);
  EXPECT_THROW(pack_nvfp4(4, 40, u.codes.data(), u.codes.data(), 1.0f), Error);
}

}  // namespace
}  // namespace lq::kernels
