// Block encoders / decoders against the published ggml block layouts (ggml-common.h) and explicit
// per-type error budgets.
#include <gtest/gtest.h>

#include "test_random.h"

#include <algorithm>
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
  tr.encode(x.data(), int64_t(x.size()), enc.data(), nullptr);
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
  EXPECT_THROW(parse_ggml_type("q3_k", "t"), lq::Error);
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
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                     GgmlType::IQ4_NL, GgmlType::IQ4_XS, GgmlType::F16, GgmlType::F32}) {
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
        // The searches may clip the block's extreme by up to ~2 steps when that lowers the total error.
        case GgmlType::Q4_0: budget = amax / 8 * 2.1f; break;
        case GgmlType::Q4_1: budget = 2 * amax / 15 * 2.1f; break;
        case GgmlType::Q4_K: budget = 2 * amax / 15 * 2.2f; break;
        case GgmlType::Q5_K: budget = 2 * amax / 31 * 2.2f; break;
        case GgmlType::Q6_K: budget = amax / 32 * 2.2f; break;
        case GgmlType::IQ4_NL:
        case GgmlType::IQ4_XS: budget = amax * 24.0f / 127.0f * 2.2f; break;  // the widest grid gap is 24/127
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
    double ceiling = 0.13;  // 4-bit types on Gaussian data: ~0.09-0.11
    if (t == GgmlType::Q8_0) ceiling = 0.01;
    if (t == GgmlType::F16) ceiling = 1e-3;
    if (t == GgmlType::F32) ceiling = 0;
    if (t == GgmlType::Q5_K) ceiling = 0.06;
    if (t == GgmlType::Q6_K) ceiling = 0.03;
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
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                     GgmlType::IQ4_NL, GgmlType::IQ4_XS})
    EXPECT_EQ(round_trip(t, z), z) << ggml_traits(t).name;
}

// ---- the new block layouts, decoded from hand-built blocks (ggml-common.h written out) ----

TEST(GgmlTypes, BlockSizesOfTheNewTypes) {
  // sizeof(block_q4_1) = 2*2 + 16; q5_K = 2*2 + 12 + 32 + 128; q6_K = 128 + 64 + 16 + 2;
  // iq4_nl = 2 + 16; iq4_xs = 2 + 2 + 4 + 128.
  EXPECT_EQ(ggml_traits(GgmlType::Q4_1).block_bytes, 20u);
  EXPECT_EQ(ggml_traits(GgmlType::Q5_K).block_bytes, 176u);
  EXPECT_EQ(ggml_traits(GgmlType::Q6_K).block_bytes, 210u);
  EXPECT_EQ(ggml_traits(GgmlType::IQ4_NL).block_bytes, 18u);
  EXPECT_EQ(ggml_traits(GgmlType::IQ4_XS).block_bytes, 136u);
  EXPECT_DOUBLE_EQ(ggml_bits_per_weight(GgmlType::Q4_K), 4.5);
  EXPECT_DOUBLE_EQ(ggml_bits_per_weight(GgmlType::Q6_K), 6.5625);
  EXPECT_DOUBLE_EQ(ggml_bits_per_weight(GgmlType::IQ4_XS), 4.25);
  EXPECT_EQ(uint32_t(GgmlType::Q6_K), 14u);
  EXPECT_EQ(uint32_t(GgmlType::IQ4_XS), 23u);
}

TEST(GgmlTypes, Q4_1DecodesAHandBuiltBlock) {
  uint8_t block[20];
  const uint16_t d = f16_bits(0.25f), m = f16_bits(-1.5f);
  std::memcpy(block, &d, 2);
  std::memcpy(block + 2, &m, 2);
  for (int i = 0; i < 16; ++i) block[4 + i] = uint8_t((i & 15) | ((15 - i) << 4));
  float y[32];
  ggml_traits(GgmlType::Q4_1).decode(block, 32, y);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(y[i], 0.25f * float(i) - 1.5f);
    EXPECT_EQ(y[i + 16], 0.25f * float(15 - i) - 1.5f);
  }
}

TEST(GgmlTypes, Q5KDecodesAHandBuiltBlock) {
  // d = 1, dmin = 0.25, sub-block j: scale j + 1, min j. Element e of sub-block j has code (e + j) % 32:
  // low 4 bits in qs (as Q4_K), bit 4 in qh[l] at bit j (j = 2c for the low half of chunk c, 2c + 1 for
  // the high half).
  uint8_t block[176] = {};
  const uint16_t d = f16_bits(1.0f), dmin = f16_bits(0.25f);
  std::memcpy(block, &d, 2);
  std::memcpy(block + 2, &dmin, 2);
  uint8_t sc[8], m[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = uint8_t(j + 1);
    m[j] = uint8_t(j);
  }
  q4k_pack_scales(sc, m, block + 4);
  uint8_t* qh = block + 16;
  uint8_t* qs = block + 48;
  for (int j = 0; j < 8; ++j)
    for (int l = 0; l < 32; ++l) {
      const int code = (l + j) % 32, c = j / 2;
      if (j % 2 == 0) qs[32 * c + l] = uint8_t(qs[32 * c + l] | (code & 15));
      else qs[32 * c + l] = uint8_t(qs[32 * c + l] | ((code & 15) << 4));
      qh[l] = uint8_t(qh[l] | ((code >> 4) << j));
    }
  float y[256];
  ggml_traits(GgmlType::Q5_K).decode(block, 256, y);
  for (int j = 0; j < 8; ++j)
    for (int l = 0; l < 32; ++l)
      EXPECT_EQ(y[32 * j + l], float(j + 1) * float((l + j) % 32) - 0.25f * float(j)) << j << " " << l;
}

TEST(GgmlTypes, Q6KDecodesAHandBuiltBlock) {
  // Element e (0..255) has 6-bit code e % 64; sub-block j (16 elements) scale j - 8; d = 0.5.
  uint8_t block[210] = {};
  uint8_t* ql = block;
  uint8_t* qh = block + 128;
  for (int e = 0; e < 256; ++e) {
    const int code = e % 64, h = e / 128, r = e % 128;
    const int l = r % 32, quarter = r / 32;  // which of the four 32-runs of the half
    // ql: runs 0 and 2 share bytes 64h + l (low / high nibble), runs 1 and 3 bytes 64h + 32 + l.
    const int byte = 64 * h + (quarter % 2) * 32 + l;
    ql[byte] = uint8_t(ql[byte] | ((code & 15) << (quarter >= 2 ? 4 : 0)));
    qh[32 * h + l] = uint8_t(qh[32 * h + l] | ((code >> 4) << (2 * quarter)));
  }
  for (int j = 0; j < 16; ++j) block[192 + j] = uint8_t(int8_t(j - 8));
  const uint16_t d = f16_bits(0.5f);
  std::memcpy(block + 208, &d, 2);
  float y[256];
  ggml_traits(GgmlType::Q6_K).decode(block, 256, y);
  for (int e = 0; e < 256; ++e) EXPECT_EQ(y[e], 0.5f * float(e / 16 - 8) * float(e % 64 - 32)) << e;
}

TEST(GgmlTypes, Iq4XsDecodesAHandBuiltBlock) {
  // Sub-block j has 6-bit scale ls = 5 * j + 20 (so 6 bits are needed), element i of it code (i + j) % 16.
  uint8_t block[136] = {};
  const uint16_t d = f16_bits(0.125f);
  std::memcpy(block, &d, 2);
  uint16_t scales_h = 0;
  for (int j = 0; j < 8; ++j) {
    const int ls = 5 * j + 20;
    block[4 + j / 2] = uint8_t(block[4 + j / 2] | ((ls & 15) << (4 * (j % 2))));
    scales_h = uint16_t(scales_h | ((ls >> 4) << (2 * j)));
    for (int i = 0; i < 16; ++i)
      block[8 + 16 * j + i] = uint8_t(((i + j) % 16) | (((i + 16 + j) % 16) << 4));
  }
  std::memcpy(block + 2, &scales_h, 2);
  float y[256];
  ggml_traits(GgmlType::IQ4_XS).decode(block, 256, y);
  const int grid[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  for (int j = 0; j < 8; ++j)
    for (int i = 0; i < 32; ++i)
      EXPECT_EQ(y[32 * j + i], 0.125f * float(5 * j + 20 - 32) * float(grid[(i + j) % 16])) << j << " " << i;
}

// Values already on a type's grid come back exactly (the searches find the generating scales).
TEST(GgmlTypes, NewEncodersAreExactOnRepresentableValues) {
  std::vector<float> x(256);
  for (int i = 0; i < 256; ++i) x[size_t(i)] = 0.25f * float(i % 16) - 2.0f;  // Q4_1: d 0.25, m -2
  EXPECT_EQ(round_trip(GgmlType::Q4_1, x), x);
  for (int i = 0; i < 256; ++i) x[size_t(i)] = 0.5f * float(kIq4nlGrid[i % 16]);
  EXPECT_EQ(round_trip(GgmlType::IQ4_NL, x), x);
  for (int i = 0; i < 256; ++i) x[size_t(i)] = 0.125f * float((i * 7) % 64 - 32);  // Q6_K, all 64 levels
  EXPECT_EQ(round_trip(GgmlType::Q6_K, x), x);
}

// ---- importance: the weighted searches lower the weighted error --------------------------------

namespace {

// Importance as calibration statistics look: a few input columns carry most of the activation energy.
std::vector<float> heavy_tailed_importance(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::lognormal_distribution<float> d(0.0f, 1.5f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

double weighted_error(const std::vector<float>& x, const std::vector<float>& y, const std::vector<float>& imp, int64_t row) {
  double e = 0;
  for (size_t i = 0; i < x.size(); ++i) e += double(imp[i % size_t(row)]) * double(x[i] - y[i]) * double(x[i] - y[i]);
  return e;
}

}  // namespace

TEST(GgmlTypes, ImportanceLowersTheWeightedError) {
  const int64_t row = 1024, rows = 64;
  const auto x = gaussian(row * rows, 11);
  const auto imp = heavy_tailed_importance(row, 12);
  for (GgmlType t : {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_NL,
                     GgmlType::IQ4_XS}) {
    for (ImportanceWeighting mode : {ImportanceWeighting::LlamaCpp, ImportanceWeighting::Plain}) {
      set_importance_weighting(mode);
      const auto& tr = ggml_traits(t);
      const size_t rb = ggml_row_bytes(t, row, "test");
      std::vector<uint8_t> with(rb * rows), without(rb * rows);
      for (int64_t r = 0; r < rows; ++r) {
        tr.encode(x.data() + r * row, row, with.data() + size_t(r) * rb, imp.data());
        tr.encode(x.data() + r * row, row, without.data() + size_t(r) * rb, nullptr);
      }
      std::vector<float> yw(x.size()), yu(x.size());
      tr.decode(with.data(), int64_t(x.size()), yw.data());
      tr.decode(without.data(), int64_t(x.size()), yu.data());
      const double ew = weighted_error(x, yw, imp, row), eu = weighted_error(x, yu, imp, row);
      // Measured: 15-45% lower depending on the type; 8% is the floor asserted.
      EXPECT_LT(ew, 0.92 * eu) << tr.name << (mode == ImportanceWeighting::Plain ? " plain" : " llama");
    }
  }
  set_importance_weighting(ImportanceWeighting::LlamaCpp);
}

// The searches beat llama.cpp's plain reference rounding (no search) on unweighted Gaussian data.
TEST(GgmlTypes, SearchedQ4_0BeatsRoundToNearestOfTheExtreme) {
  const auto x = gaussian(32 * 512, 21);
  std::vector<float> ones(x.size(), 1.0f);
  const auto y = round_trip(GgmlType::Q4_0, x);
  // Reference: d = extreme / -8, q = round(x / d) clamped (ggml's quantize_row_q4_0_ref).
  double e_search = 0, e_ref = 0;
  for (size_t b = 0; b < x.size(); b += 32) {
    float extreme = 0;
    for (int i = 0; i < 32; ++i)
      if (std::fabs(x[b + size_t(i)]) > std::fabs(extreme)) extreme = x[b + size_t(i)];
    const float d = lq::num::f16_to_f32(lq::num::f32_to_f16(extreme / -8.0f));
    for (int i = 0; i < 32; ++i) {
      const float v = x[b + size_t(i)];
      const float q = std::clamp(std::nearbyint(v / d), -8.0f, 7.0f);
      e_ref += double(v - d * q) * double(v - d * q);
      e_search += double(v - y[b + size_t(i)]) * double(v - y[b + size_t(i)]);
    }
  }
  EXPECT_LT(e_search, 0.9 * e_ref);
}
