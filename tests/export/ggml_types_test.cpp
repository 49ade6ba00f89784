// Block encoders / decoders against the published ggml block layouts (ggml-common.h) and explicit
// per-type error budgets.
#include <gtest/gtest.h>

#include "test_random.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "export/ggml_types.h"
#include "io/error.h"
#include "num/formats.h"

using namespace lq::exporter;

namespace {

std::vector<float> gaussian(int64_t n, uint32_t seed, float sigma = 0.05f) { return lq::test::gaussian(size_t(n), sigma, seed); }

std::vector<float> round_trip(GgmlType t, const std::vector<float>& x) {
  const auto& tr = ggml_traits(t);
  std::vector<uint8_t> enc(ggml_row_bytes(t, int64_t(x.size()), "test"));
  tr.encode(x.data(), int64_t(x.size()), enc.data());
  std::vector<float> y(x.size());
  tr.decode(enc.data(), int64_t(x.size()), y.data());
  return y;
}

uint16_t f16_bits(float v) { return lq::num::f32_to_f16(v); }

}  // namespace

TEST(GgmlTypes, BlockSizesMatchGgmlCommon) {
  // sizeof(block_q4_0) = 2 + 16, sizeof(block_q8_0) = 2 + 32, sizeof(block_q4_K) = 2*2 + 12 + 128.
  EXPECT_EQ(ggml_traits(GgmlType::Q4_0).block_bytes, 18u);
  EXPECT_EQ(ggml_traits(GgmlType::Q4_0).block_elems, 32);
  EXPECT_EQ(ggml_traits(GgmlType::Q8_0).block_bytes, 34u);
  EXPECT_EQ(ggml_traits(GgmlType::Q8_0).block_elems, 32);
  EXPECT_EQ(ggml_traits(GgmlType::Q4_K).block_bytes, 144u);
  EXPECT_EQ(ggml_traits(GgmlType::Q4_K).block_elems, 256);
  EXPECT_EQ(uint32_t(GgmlType::Q4_K), 12u);
  EXPECT_EQ(uint32_t(GgmlType::Q8_0), 8u);
  EXPECT_THROW(ggml_row_bytes(GgmlType::Q4_K, 128, "t"), lq::Error);
  EXPECT_THROW(parse_ggml_type("q5_k", "t"), lq::Error);
}

TEST(GgmlTypes, Q4_0DecodesAHandBuiltBlock) {
  // d = 0.5; element i (i < 16) in the low nibble of qs[i], element i + 16 in the high nibble.
  uint8_t block[18];
  const uint16_t d = f16_bits(0.5f);
  std::memcpy(block, &d, 2);
  for (int i = 0; i < 16; ++i) block[2 + i] = uint8_t((i & 15) | ((15 - i) << 4));
  float y[32];
  ggml_traits(GgmlType::Q4_0).decode(block, 32, y);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(y[i], 0.5f * float(i - 8)) << i;
    EXPECT_EQ(y[i + 16], 0.5f * float(15 - i - 8)) << i;
  }
}

TEST(GgmlTypes, Q8_0DecodesAHandBuiltBlock) {
  uint8_t block[34];
  const uint16_t d = f16_bits(0.25f);
  std::memcpy(block, &d, 2);
  for (int i = 0; i < 32; ++i) block[2 + i] = uint8_t(int8_t(i - 16));
  float y[32];
  ggml_traits(GgmlType::Q8_0).decode(block, 32, y);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], 0.25f * float(i - 16));
}

TEST(GgmlTypes, Q4KScalePackingFollowsGetScaleMinK4) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    uint8_t sc[8], m[8], packed[12];
    for (int j = 0; j < 8; ++j) {
      sc[j] = uint8_t(rng() % 64);
      m[j] = uint8_t(rng() % 64);
    }
    q4k_pack_scales(sc, m, packed);
    for (int j = 0; j < 8; ++j) {
      // get_scale_min_k4, written out independently.
      const uint8_t want_sc = j < 4 ? (packed[j] & 63) : uint8_t((packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4));
      const uint8_t want_m = j < 4 ? (packed[j + 4] & 63) : uint8_t((packed[j + 4] >> 4) | ((packed[j] >> 6) << 4));
      EXPECT_EQ(want_sc, sc[j]);
      EXPECT_EQ(want_m, m[j]);
    }
  }
}

TEST(GgmlTypes, Q4KDecodesAHandBuiltBlock) {
  // d = 1, dmin = 0.5, sub-block j has scale j + 1 and min j; qs chunk c holds sub-blocks 2c (low
  // nibbles) and 2c + 1 (high nibbles).
  uint8_t block[144] = {};
  const uint16_t d = f16_bits(1.0f), dmin = f16_bits(0.5f);
  std::memcpy(block, &d, 2);
  std::memcpy(block + 2, &dmin, 2);
  uint8_t sc[8], m[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = uint8_t(j + 1);
    m[j] = uint8_t(j);
  }
  q4k_pack_scales(sc, m, block + 4);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) block[16 + 32 * c + l] = uint8_t((l % 16) | ((15 - l % 16) << 4));
  float y[256];
  ggml_traits(GgmlType::Q4_K).decode(block, 256, y);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      const int lo = 2 * c, hi = 2 * c + 1;
      EXPECT_EQ(y[64 * c + l], float(lo + 1) * float(l % 16) - 0.5f * float(lo));
      EXPECT_EQ(y[64 * c + 32 + l], float(hi + 1) * float(15 - l % 16) - 0.5f * float(hi));
    }
}

// Error budgets, per element: Q8_0 half a step of amax/127 plus the f16 rounding of d; Q4_0 half a
// step of amax/8 (the side opposite the extreme has 7 steps, so up to one step there); Q4_K one
// step of its 6-bit-quantized sub-block scale.
TEST(GgmlTypes, RoundTripWithinBudget) {
  const auto x = gaussian(4096, 1);
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::F16, GgmlType::F32}) {
    const auto& tr = ggml_traits(t);
    const auto y = round_trip(t, x);
    const int64_t block = std::max<int64_t>(tr.block_elems, 32);
    double sq = 0, sq_ref = 0;
    for (size_t b = 0; b < x.size(); b += size_t(block)) {
      float amax = 0;
      for (int64_t i = 0; i < block; ++i) amax = std::max(amax, std::fabs(x[b + size_t(i)]));
      float budget = 0;
      switch (t) {
        case GgmlType::Q8_0: budget = amax / 127 * 0.502f + amax * 1e-3f; break;
        case GgmlType::Q4_0: budget = amax / 8 * 1.01f; break;
        case GgmlType::Q4_K: budget = 2 * amax / 15 * 1.1f; break;
        case GgmlType::F16: budget = amax * 1e-3f; break;
        case GgmlType::F32: budget = 0; break;
      }
      for (int64_t i = 0; i < block; ++i) {
        const size_t k = b + size_t(i);
        ASSERT_LE(std::fabs(y[k] - x[k]), budget) << tr.name << " element " << k;
        sq += double(y[k] - x[k]) * (y[k] - x[k]);
        sq_ref += double(x[k]) * x[k];
      }
    }
    // Relative RMS error: a sanity ceiling per type (catches a wrong nibble order, which stays inside
    // the per-element budget only by accident).
    const double rel = std::sqrt(sq / sq_ref);
    const double ceiling = t == GgmlType::Q8_0 ? 0.01 : t == GgmlType::F16 ? 1e-3 : t == GgmlType::F32 ? 0 : 0.15;
    EXPECT_LE(rel, ceiling) << tr.name;
  }
}

TEST(GgmlTypes, EncodersAreExactOnRepresentableValues) {
  // Values already on a Q8_0 / Q4_0 grid come back unchanged.
  std::vector<float> x(64);
  for (int i = 0; i < 64; ++i) x[size_t(i)] = 0.125f * float((i % 16) - 8);
  EXPECT_EQ(round_trip(GgmlType::Q4_0, x), x);
  // Each Q8_0 block holds -63.5 (so d = 0.5 exactly) and multiples of 0.5.
  for (int i = 0; i < 64; ++i) x[size_t(i)] = i % 32 == 0 ? -63.5f : 0.5f * float((i % 32) - 16);
  EXPECT_EQ(round_trip(GgmlType::Q8_0, x), x);
}

TEST(GgmlTypes, ZeroBlocksStayZero) {
  std::vector<float> z(256, 0.0f);
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K}) EXPECT_EQ(round_trip(t, z), z);
}
