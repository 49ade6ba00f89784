// Quantizer math against independent expectations: hand-computed groups, error bounds that follow
// from the formulas, the scalar reference, and fake_quantize == dequantize(quantize) bit for bit.
#include <gtest/gtest.h>

#include "test_random.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "io/error.h"
#include "num/formats.h"
#include "quant/nvfp4.h"
#include "quant/qtensor.h"
#include "quant/quantizer.h"
#include "quant/rtn.h"

namespace lq::quant {
namespace {

using lq::test::gaussian;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

QuantParams int_params(Scheme s, int64_t g, ScaleDType dt = ScaleDType::BF16) {
  QuantParams p;
  p.scheme = s;
  p.group = g;
  p.scale_dtype = dt;
  return p;
}

TEST(Rtn, HandComputedAsymmetricGroup) {
  // range 3 -> scale 3/15 = 0.2 (f32), zero = round(1/0.2) = 5,
  // codes = round(w/0.2) + 5 = [-5, -2.5 -> -2 (half to even), 1.25 -> 1, 10] + 5.
  const float w[4] = {-1.0f, -0.5f, 0.25f, 2.0f};
  QTensor q = quantize(w, 1, 4, int_params(Scheme::Int4Asym, 4, ScaleDType::F32));
  EXPECT_EQ(q.scales[0], 3.0f / 15.0f);
  EXPECT_EQ(q.zeros[0], 5);
  EXPECT_EQ(q.codes, (std::vector<uint8_t>{0, 3, 6, 15}));
  // bf16 stores 0.2 as 0.2001953125; the codes are chosen against that stored value.
  QTensor qb = quantize(w, 1, 4, int_params(Scheme::Int4Asym, 4, ScaleDType::BF16));
  EXPECT_EQ(qb.scales[0], 0.2001953125f);
  EXPECT_EQ(qb.zeros[0], 5);
  EXPECT_EQ(qb.dequantize(), (std::vector<float>{-5 * 0.2001953125f, -2 * 0.2001953125f, 0.2001953125f, 10 * 0.2001953125f}));
}

TEST(Rtn, HandComputedSymmetricGroups) {
  // INT4 sym: scale = absmax/7 = 0.5, zero 8; INT8 sym: scale = 127/127 = 1, zero 128.
  const float w4[4] = {-3.5f, 0.74f, 0.76f, 1.25f};
  QTensor q = quantize(w4, 1, 4, int_params(Scheme::Int4Sym, 4, ScaleDType::F32));
  EXPECT_EQ(q.scales[0], 0.5f);
  EXPECT_EQ(q.zeros[0], 8);
  EXPECT_EQ(q.codes, (std::vector<uint8_t>{1, 9, 10, 10}));  // -7, 1.48->1, 1.52->2, 2.5->2 (even)
  const float w8[4] = {-127.0f, 3.5f, -0.5f, 100.2f};
  QTensor q8 = quantize(w8, 1, 4, int_params(Scheme::Int8Sym, 0, ScaleDType::F32));
  EXPECT_EQ(q8.group, 4);  // group 0 = per channel
  EXPECT_EQ(q8.scales[0], 1.0f);
  EXPECT_EQ(q8.codes, (std::vector<uint8_t>{1, 132, 128, 228}));
}

TEST(Rtn, ErrorAtMostHalfAStoredScaleInsideTheRepresentableRange) {
  const int64_t out = 16, in = 256;
  for (int64_t g : {32, 64, 128})
    for (ScaleDType dt : {ScaleDType::BF16, ScaleDType::F16, ScaleDType::F32}) {
      auto w = gaussian(size_t(out * in), 0.05f, uint32_t(g));
      QTensor q = quantize(w.data(), out, in, int_params(Scheme::Int4Asym, g, dt));
      auto d = q.dequantize();
      int64_t inside = 0;
      for (int64_t r = 0; r < out; ++r)
        for (int64_t k = 0; k < in; ++k) {
          const size_t gi = size_t(r * (in / g) + k / g), i = size_t(r * in + k);
          const float s = q.scales[gi], lo = -float(q.zeros[gi]) * s, hi = float(15 - q.zeros[gi]) * s;
          if (w[i] >= lo && w[i] <= hi) {
            ++inside;
            ASSERT_LE(std::fabs(w[i] - d[i]), 0.5f * s * (1 + 1e-6f)) << "g" << g << " row " << r << " col " << k;
          } else {  // beyond the grid: clamped to the nearest end
            ASSERT_EQ(d[i], w[i] < lo ? lo : hi);
          }
        }
      EXPECT_GT(inside, out * in * 95 / 100);  // min-max leaves at most the extremes outside
    }
}

TEST(Rtn, RowKernelsMatchTheScalarReference) {
  const int64_t out = 24, in = 384;
  std::vector<float> clip(size_t(out * in / 64));
  for (size_t i = 0; i < clip.size(); ++i) clip[i] = 1.0f - 0.05f * float(i % 10);
  for (Scheme s : {Scheme::Int4Asym, Scheme::Int4Sym, Scheme::Int8Sym}) {
    auto w = gaussian(size_t(out * in), 0.02f, 7);
    w[5] = 0.3f;  // an outlier so the clip ratios matter
    RtnParams p{s, 64, ScaleDType::BF16};
    QTensor q = quantize_rtn(w.data(), out, in, p, clip.data());
    std::vector<uint8_t> codes(64);
    for (int64_t r = 0; r < out; ++r)
      for (int64_t gi = 0; gi < in / 64; ++gi) {
        const size_t g = size_t(r * (in / 64) + gi);
        RtnGroup ref = rtn_group_reference(w.data() + r * in + gi * 64, 64, p, clip[g], codes.data());
        ASSERT_EQ(ref.scale, q.scales[g]) << scheme_name(s);
        ASSERT_EQ(ref.zero, q.zeros[g]);
        ASSERT_TRUE(std::equal(codes.begin(), codes.end(), q.codes.begin() + r * in + gi * 64));
      }
  }
}

TEST(Rtn, ClipRatioShrinksTheRange) {
  std::vector<float> w(64);
  for (int k = 0; k < 64; ++k) w[size_t(k)] = float(k - 32) / 32.0f;  // [-1, 0.97]
  const float half = 0.5f;
  QTensor full = quantize(w.data(), 1, 64, int_params(Scheme::Int4Asym, 64, ScaleDType::F32));
  QTensor clipped = quantize(w.data(), 1, 64, int_params(Scheme::Int4Asym, 64, ScaleDType::F32), &half);
  EXPECT_FLOAT_EQ(clipped.scales[0], 1.0f / 15.0f);  // [-0.5, 0.5]
  EXPECT_FLOAT_EQ(full.scales[0], (1.0f + 31.0f / 32.0f) / 15.0f);
  EXPECT_NEAR(clipped.dequantize()[0], -0.5f, 0.5f * clipped.scales[0]);
}

TEST(Rtn, F16ScaleOverflowIsAClearError) {
  std::vector<float> w = {-1e6f, 1e6f, 0.0f, 1.0f};
  try {
    quantize(w.data(), 1, 4, int_params(Scheme::Int4Asym, 4, ScaleDType::F16));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("f16"), std::string::npos) << e.what();
  }
}

TEST(Rtn, RejectsGroupsThatDoNotDivideTheRow) {
  std::vector<float> w(96, 0.1f);
  EXPECT_THROW(quantize(w.data(), 1, 96, int_params(Scheme::Int4Asym, 64)), Error);
}

TEST(FakeQuantize, BitIdenticalToDequantizedQuantizeForEveryScheme) {
  const int64_t out = 33, in = 256;  // odd row count: uneven thread split
  auto w = gaussian(size_t(out * in), 0.03f, 11);
  std::vector<float> clip(size_t(out * in / 32), 0.85f);
  std::vector<QuantParams> cases = {int_params(Scheme::Int4Asym, 32), int_params(Scheme::Int4Asym, 128, ScaleDType::F16),
                                    int_params(Scheme::Int4Sym, 64, ScaleDType::F32), int_params(Scheme::Int8Sym, 0)};
  QuantParams fp4;
  fp4.scheme = Scheme::NvFp4;
  cases.push_back(fp4);
  fp4.nvfp4 = Nvfp4Encoding::Legacy;
  cases.push_back(fp4);
  fp4.nvfp4 = Nvfp4Encoding::Standard;
  fp4.nvfp4_pow2_tensor_scale = true;
  cases.push_back(fp4);
  for (const auto& p : cases) {
    std::vector<float> wq(w.size());
    fake_quantize(w.data(), out, in, p, wq.data());
    EXPECT_TRUE(same_bits(wq, quantize(w.data(), out, in, p).dequantize())) << scheme_name(p.scheme);
  }
  QuantParams pc = int_params(Scheme::Int4Asym, 32);
  std::vector<float> wq(w.size());
  fake_quantize(w.data(), out, in, pc, wq.data(), clip.data());
  EXPECT_TRUE(same_bits(wq, quantize(w.data(), out, in, pc, clip.data()).dequantize()));
}

TEST(QTensor, AccountingAndValidation) {
  auto w = gaussian(256 * 128, 0.02f, 3);
  QTensor q = quantize(w.data(), 256, 128, int_params(Scheme::Int4Asym, 128));
  EXPECT_DOUBLE_EQ(q.bits_per_weight(), 4.0 + (16.0 + 4.0) / 128.0);
  q.validate("ok");
  q.codes[7] = 16;
  EXPECT_THROW(q.validate("bad code"), Error);
  q.codes[7] = 1;
  q.scales[0] = 0.1f;  // not a bf16 value
  EXPECT_THROW(q.validate("bad scale"), Error);
  QuantParams fp4;
  fp4.scheme = Scheme::NvFp4;
  QTensor f = quantize(w.data(), 256, 128, fp4);
  EXPECT_DOUBLE_EQ(f.bits_per_weight(), 4.0 + 8.0 / 16.0 + 32.0 / (256.0 * 128.0));
}

TEST(Nvfp4, FastE2m1EncoderMatchesTheReference) {
  for (int i = -9000; i <= 9000; ++i) {
    const float x = float(i) / 1024.0f;
    ASSERT_EQ(e2m1_encode(x), num::f32_to_e2m1(x)) << x;
    const float y = std::nextafter(x, 1e9f), z = std::nextafter(x, -1e9f);
    ASSERT_EQ(e2m1_encode(y), num::f32_to_e2m1(y)) << y;
    ASSERT_EQ(e2m1_encode(z), num::f32_to_e2m1(z)) << z;
  }
  EXPECT_EQ(e2m1_encode(1e30f), 7);
  EXPECT_EQ(e2m1_encode(-1e30f), 15);
}

TEST(Nvfp4, TensorScaleAndHandComputedBlock) {
  // amax 6*448*2^-10 -> t = 2^-10 exactly; the block below has max 3*2^-10*... chosen so that the
  // block scale is exactly 1 (e4m3 0x38) and every element is an E2M1 value times 2^-10.
  std::vector<float> w(32, 0.0f);
  const float t = std::ldexp(1.0f, -10);
  const float vals[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.5f, -1, -1.5f, -2, -3, -4, -6, 0};
  for (int k = 0; k < 16; ++k) w[size_t(k)] = vals[k] * t;
  w[16] = 6.0f * 448.0f * t;  // sets amax
  QuantParams p;
  p.scheme = Scheme::NvFp4;
  QTensor q = quantize(w.data(), 1, 32, p);
  EXPECT_EQ(q.tensor_scale, t);
  EXPECT_EQ(q.block_scales[0], 0x38);  // 1.0
  EXPECT_EQ(q.block_scales[1], 0x7e);  // 448
  auto d = q.dequantize();
  for (int k = 0; k < 32; ++k) EXPECT_EQ(d[size_t(k)], w[size_t(k)]) << k;
  EXPECT_EQ(1.0f / (1.0f / nvfp4_tensor_scale(0.1234567f, p)), nvfp4_tensor_scale(0.1234567f, p));
  p.nvfp4_pow2_tensor_scale = true;
  const float t2 = nvfp4_tensor_scale(0.1234567f, p);
  int e;
  EXPECT_EQ(std::frexp(t2, &e), 0.5f);
  EXPECT_GE(t2, 0.1234567f / 2688.0f);
}

// Independent expectation: the textbook choice (block scale = e4m3(block_max / 6t), codes against
// the rounded scale). The candidate search includes it, so it may only be better.
TEST(Nvfp4, CandidateSearchBeatsMaxOverSix) {
  const int64_t out = 64, in = 512;
  auto w = gaussian(size_t(out * in), 0.02f, 5);
  QuantParams p;
  p.scheme = Scheme::NvFp4;
  QTensor q = quantize(w.data(), out, in, p);
  auto d = q.dequantize();
  const float t = q.tensor_scale;
  double err_search = 0, err_max6 = 0;
  for (int64_t b = 0; b < out * in / 16; ++b) {
    float bmax = 0;
    for (int k = 0; k < 16; ++k) bmax = std::max(bmax, std::fabs(w[size_t(b * 16 + k)]));
    const float s = num::e4m3_to_f32(num::f32_to_e4m3(bmax / (6.0f * t))) * t;
    double e_b = 0, e_s = 0;
    for (int k = 0; k < 16; ++k) {
      const float x = w[size_t(b * 16 + k)];
      const float dq = num::e2m1_to_f32(num::f32_to_e2m1(x / s)) * s;
      e_b += double(x - dq) * (x - dq);
      e_s += double(x - d[size_t(b * 16 + k)]) * (x - d[size_t(b * 16 + k)]);
    }
    ASSERT_LE(e_s, e_b * (1 + 1e-6) + 1e-30) << "block " << b;
    err_search += e_s;
    err_max6 += e_b;
  }
  EXPECT_LT(err_search, 0.97 * err_max6);  // a few percent better on Gaussian weights
}

TEST(Nvfp4, LegacyEncodingUnderflowsOnSmallWeights) {
  // Block max 0.005: legacy block scale 0.005/6 = 8.3e-4 < 2^-10 (half the smallest E4M3
  // subnormal, 2^-9) -> stored as 0 -> the whole block dequantizes to 0. With a tensor scale the
  // same block keeps ~E2M1 precision.
  std::vector<float> w(32);
  for (int k = 0; k < 32; ++k) w[size_t(k)] = 0.005f * float((k % 16) - 8) / 8.0f;
  w[0] = -0.005f;
  QuantParams legacy;
  legacy.scheme = Scheme::NvFp4;
  legacy.nvfp4 = Nvfp4Encoding::Legacy;
  QTensor ql = quantize(w.data(), 1, 32, legacy);
  EXPECT_EQ(ql.tensor_scale, 1.0f);
  EXPECT_EQ(ql.block_scales[0], 0);
  for (float x : ql.dequantize()) EXPECT_EQ(x, 0.0f);
  // Block max 0.05: scale 0.00833 is an E4M3 subnormal (step 2^-9): stored 4 * 2^-9 = 0.0078125,
  // 6% low, and the codes were chosen against the unrounded scale.
  for (auto& x : w) x *= 10.0f;
  ql = quantize(w.data(), 1, 32, legacy);
  EXPECT_EQ(num::e4m3_to_f32(ql.block_scales[0]), 4.0f / 512.0f);
  EXPECT_EQ(ql.codes[0], num::f32_to_e2m1(-0.05f / (0.05f / 6.0f)));
  // On Gaussian weights of a typical scale (std 0.01) the legacy encoding loses badly.
  auto g = gaussian(64 * 256, 0.01f, 9);
  QuantParams standard;
  standard.scheme = Scheme::NvFp4;
  auto ds = quantize(g.data(), 64, 256, standard).dequantize();
  auto dl = quantize(g.data(), 64, 256, legacy).dequantize();
  double es = 0, el = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    es += double(g[i] - ds[i]) * (g[i] - ds[i]);
    el += double(g[i] - dl[i]) * (g[i] - dl[i]);
  }
  EXPECT_LT(es, 0.5 * el);
}

}  // namespace
}  // namespace lq::quant
