// Scalar format conversions against implementation-independent expectations (format_reference.h):
// every code decodes to the value its bit fields define, and the fast encoders agree with a
// nearest-value search over all codes on a dense sweep of f32 inputs, on every midpoint between
// neighbouring codes and on the floats just either side of each midpoint.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "format_reference.h"
#include "num/formats.h"

namespace {

using lq::test::f32_bits;
using lq::test::f32_from_bits;
using lq::test::FormatSpec;
using lq::test::ReferenceEncoder;
namespace num = lq::num;

struct Codec {
  const char* name;
  std::function<uint32_t(float)> encode;
  std::function<float(uint32_t)> decode;
  std::function<bool(uint32_t)> is_nan_code;
  int num_codes;
};

Codec bf16_codec() {
  return {"bf16", [](float f) { return uint32_t(num::f32_to_bf16(f)); },
          [](uint32_t c) { return num::bf16_to_f32(uint16_t(c)); },
          [](uint32_t c) { return lq::test::kBf16Spec.is_nan(c); }, 1 << 16};
}
Codec f16_codec() {
  return {"f16", [](float f) { return uint32_t(num::f32_to_f16(f)); },
          [](uint32_t c) { return num::f16_to_f32(uint16_t(c)); },
          [](uint32_t c) { return lq::test::kF16Spec.is_nan(c); }, 1 << 16};
}
Codec e4m3_codec() {
  return {"e4m3", [](float f) { return uint32_t(num::f32_to_e4m3(f)); },
          [](uint32_t c) { return num::e4m3_to_f32(uint8_t(c)); },
          [](uint32_t c) { return lq::test::kE4M3Spec.is_nan(c); }, 256};
}
Codec e2m1_codec() {
  return {"e2m1", [](float f) { return uint32_t(num::f32_to_e2m1(f)); },
          [](uint32_t c) { return num::e2m1_to_f32(uint8_t(c)); }, [](uint32_t) { return false; },
          16};
}

// E2M1 straight from its definition: sign bit 3, magnitude index into this list.
const double kE2M1Magnitudes[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};

ReferenceEncoder e2m1_reference() {
  std::vector<std::pair<double, uint32_t>> c;
  for (uint32_t i = 0; i < 8; ++i) c.emplace_back(kE2M1Magnitudes[i], i);
  return ReferenceEncoder(std::move(c), 8);
}

// Checks the fast encoder against the reference on one input; returns false (after one
// gtest failure message) on mismatch so sweeps stop early.
bool encoder_agrees(const Codec& codec, const ReferenceEncoder& ref, float f) {
  const uint32_t got = codec.encode(f), want = ref.encode(f);
  if (got == want) return true;
  ADD_FAILURE() << codec.name << " encode(" << f << " = 0x" << std::hex << f32_bits(f)
                << ") = 0x" << got << ", nearest code (ties even) is 0x" << want;
  return false;
}

// Every f32 whose top 20 bits vary, with the low 12 bits zero, all ones, or random: exact ties for
// f16 (13 dropped bits) and bf16 (16 dropped bits) sit among the zero-low-bit inputs.
void sweep_f32(const Codec& codec, const ReferenceEncoder& ref) {
  std::mt19937 rng(12345);
  for (uint32_t top = 0; top < (1u << 20); ++top) {
    for (uint32_t low : {0u, 0xfffu, uint32_t(rng() & 0xfffu)}) {
      const float f = f32_from_bits(top << 12 | low);
      if (std::isnan(f)) continue;
      if (!encoder_agrees(codec, ref, f)) return;
    }
  }
  for (int i = 0; i < 200000; ++i) {
    const float f = f32_from_bits(uint32_t(rng()));
    if (!std::isnan(f) && !encoder_agrees(codec, ref, f)) return;
  }
}

// Midpoints between neighbouring values go to the even code; the floats just above and below go to
// the nearer neighbour. Checked on both signs.
void check_midpoints(const Codec& codec, const ReferenceEncoder& ref, uint32_t sign_bit) {
  const auto& table = ref.table();
  for (size_t i = 0; i + 1 < table.size(); ++i) {
    const auto [lo, lo_code] = table[i];
    const auto [hi, hi_code] = table[i + 1];
    const double mid = (lo + hi) / 2;
    const float midf = float(mid);
    ASSERT_EQ(double(midf), mid) << "midpoint not representable in f32";
    const uint32_t even = (lo_code & 1) ? hi_code : lo_code;
    for (const uint32_t sign : {0u, sign_bit}) {
      const float s = sign ? -1.0f : 1.0f;
      EXPECT_EQ(codec.encode(s * midf), even | sign) << codec.name << " tie at " << s * midf;
      EXPECT_EQ(codec.encode(s * std::nextafter(midf, INFINITY)), hi_code | sign)
          << codec.name << " just above " << s * midf;
      EXPECT_EQ(codec.encode(s * std::nextafter(midf, 0.0f)), lo_code | sign)
          << codec.name << " just below " << s * midf;
    }
  }
}

void check_decode_all(const Codec& codec, const std::function<double(uint32_t)>& expected) {
  for (uint32_t c = 0; c < uint32_t(codec.num_codes); ++c) {
    const float got = codec.decode(c);
    const double want = expected(c);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << codec.name << " code 0x" << std::hex << c;
      continue;
    }
    ASSERT_EQ(double(got), want) << codec.name << " code 0x" << std::hex << c;
    ASSERT_EQ(std::signbit(got), std::signbit(want)) << codec.name << " code 0x" << std::hex << c;
  }
}

void check_round_trip_all(const Codec& codec) {
  for (uint32_t c = 0; c < uint32_t(codec.num_codes); ++c) {
    if (codec.is_nan_code(c)) continue;
    ASSERT_EQ(codec.encode(codec.decode(c)), c) << codec.name << " code 0x" << std::hex << c;
  }
}

// ---- bf16 ----

TEST(Bf16, DecodesEveryCode) {
  check_decode_all(bf16_codec(), [](uint32_t c) { return lq::test::kBf16Spec.decode(c); });
}
TEST(Bf16, EveryNonNanCodeRoundTrips) { check_round_trip_all(bf16_codec()); }
TEST(Bf16, EncoderMatchesNearestCodeSearchOnF32Sweep) {
  sweep_f32(bf16_codec(), ReferenceEncoder::for_spec(lq::test::kBf16Spec));
}
TEST(Bf16, MidpointsRoundToEvenCode) {
  check_midpoints(bf16_codec(), ReferenceEncoder::for_spec(lq::test::kBf16Spec), 0x8000);
}
TEST(Bf16, SpecialValues) {
  EXPECT_EQ(num::f32_to_bf16(0.0f), 0x0000);
  EXPECT_EQ(num::f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(num::f32_to_bf16(INFINITY), 0x7f80);
  EXPECT_EQ(num::f32_to_bf16(-INFINITY), 0xff80);
  EXPECT_EQ(num::f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds up to inf
  EXPECT_EQ(num::f32_to_bf16(f32_from_bits(0x7f7f7fff)), 0x7f7f);          // just below the tie
  EXPECT_EQ(num::f32_to_bf16(f32_from_bits(0x00000001)), 0x0000);          // f32 subnormal
  EXPECT_EQ(num::f32_to_bf16(f32_from_bits(0x00018000)), 0x0002);          // subnormal tie -> even
  // NaN stays NaN (a payload living only in the low bits must not turn it into inf), sign kept.
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu}) {
    const uint16_t h = num::f32_to_bf16(f32_from_bits(nan));
    EXPECT_TRUE(lq::test::kBf16Spec.is_nan(h)) << std::hex << nan << " -> " << h;
    EXPECT_EQ(h & 0x8000, (nan >> 16) & 0x8000);
  }
}

// ---- f16 ----

TEST(F16, DecodesEveryCode) {
  check_decode_all(f16_codec(), [](uint32_t c) { return lq::test::kF16Spec.decode(c); });
}
TEST(F16, EveryNonNanCodeRoundTrips) { check_round_trip_all(f16_codec()); }
TEST(F16, EncoderMatchesNearestCodeSearchOnF32Sweep) {
  sweep_f32(f16_codec(), ReferenceEncoder::for_spec(lq::test::kF16Spec));
}
TEST(F16, MidpointsRoundToEvenCode) {
  check_midpoints(f16_codec(), ReferenceEncoder::for_spec(lq::test::kF16Spec), 0x8000);
}
TEST(F16, OverflowBoundary) {
  EXPECT_EQ(num::f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(num::f32_to_f16(std::nextafter(65520.0f, 0.0f)), 0x7bff);
  EXPECT_EQ(num::f32_to_f16(65520.0f), 0x7c00);  // tie between 65504 (odd) and 2^16: inf
  EXPECT_EQ(num::f32_to_f16(-65520.0f), 0xfc00);
  EXPECT_EQ(num::f32_to_f16(1e30f), 0x7c00);
  EXPECT_EQ(num::f32_to_f16(std::numeric_limits<float>::max()), 0x7c00);
  EXPECT_EQ(num::f32_to_f16(INFINITY), 0x7c00);
  EXPECT_EQ(num::f32_to_f16(-INFINITY), 0xfc00);
}
TEST(F16, SubnormalBoundary) {
  EXPECT_EQ(num::f32_to_f16(0x1p-24f), 0x0001);                          // smallest subnormal
  EXPECT_EQ(num::f32_to_f16(0x1p-25f), 0x0000);                          // tie with 0 -> even 0
  EXPECT_EQ(num::f32_to_f16(std::nextafter(0x1p-25f, 1.0f)), 0x0001);
  EXPECT_EQ(num::f32_to_f16(-std::nextafter(0x1p-25f, 1.0f)), 0x8001);
  EXPECT_EQ(num::f32_to_f16(0x1.8p-24f), 0x0002);                        // tie 1|2 -> 2
  EXPECT_EQ(num::f32_to_f16(0x1.4p-23f), 0x0002);                        // tie 2|3 -> 2
  EXPECT_EQ(num::f32_to_f16(0x1p-14f - 0x1p-25f), 0x0400);               // tie 0x3ff|0x400 -> normal
  EXPECT_EQ(num::f32_to_f16(std::nextafter(0x1p-14f - 0x1p-25f, 0.0f)), 0x03ff);
  EXPECT_EQ(num::f32_to_f16(0x1p-14f), 0x0400);                          // smallest normal
  EXPECT_EQ(num::f32_to_f16(f32_from_bits(1)), 0x0000);                  // f32 subnormal
  EXPECT_EQ(num::f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(num::f16_to_f32(0x0001), 0x1p-24f);
  EXPECT_EQ(num::f16_to_f32(0x03ff), 0x3ffp-24f);
}
TEST(F16, NanStaysNan) {
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu, 0xffc00000u}) {
    const uint16_t h = num::f32_to_f16(f32_from_bits(nan));
    EXPECT_TRUE(lq::test::kF16Spec.is_nan(h)) << std::hex << nan << " -> " << h;
    EXPECT_EQ(h & 0x8000, (nan >> 16) & 0x8000);
  }
  EXPECT_TRUE(std::isnan(num::f16_to_f32(0x7c01)));
  EXPECT_TRUE(std::isnan(num::f16_to_f32(0xfe00)));
}

// ---- FP8 E4M3 (fn) ----

TEST(E4M3, DecodesEveryCode) {
  check_decode_all(e4m3_codec(), [](uint32_t c) { return lq::test::kE4M3Spec.decode(c); });
  EXPECT_EQ(num::e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(num::e4m3_to_f32(0x08), 0x1p-6f);  // smallest normal
  EXPECT_EQ(num::e4m3_to_f32(0x01), 0x1p-9f);  // smallest subnormal
  EXPECT_TRUE(std::isnan(num::e4m3_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(num::e4m3_to_f32(0xff)));
  EXPECT_EQ(num::e4m3_to_f32(0x78), 256.0f);  // exponent 15 is finite in the fn variant
}
TEST(E4M3, EveryNonNanCodeRoundTrips) { check_round_trip_all(e4m3_codec()); }
TEST(E4M3, EncoderMatchesNearestCodeSearchOnF32Sweep) {
  sweep_f32(e4m3_codec(), ReferenceEncoder::for_spec(lq::test::kE4M3Spec));
}
TEST(E4M3, MidpointsRoundToEvenCode) {
  check_midpoints(e4m3_codec(), ReferenceEncoder::for_spec(lq::test::kE4M3Spec), 0x80);
}
TEST(E4M3, SaturatesAndHandlesSpecials) {
  EXPECT_EQ(num::f32_to_e4m3(448.0f), 0x7e);
  EXPECT_EQ(num::f32_to_e4m3(464.0f), 0x7e);  // would round to 480 (the NaN code): saturate
  EXPECT_EQ(num::f32_to_e4m3(1e6f), 0x7e);
  EXPECT_EQ(num::f32_to_e4m3(INFINITY), 0x7e);
  EXPECT_EQ(num::f32_to_e4m3(-INFINITY), 0xfe);
  EXPECT_EQ(num::f32_to_e4m3(NAN), 0x7f);
  EXPECT_EQ(num::f32_to_e4m3(-NAN), 0xff);
  EXPECT_EQ(num::f32_to_e4m3(-0.0f), 0x80);
  EXPECT_EQ(num::f32_to_e4m3(0x1p-10f), 0x00);          // tie 0|1 -> 0
  EXPECT_EQ(num::f32_to_e4m3(0x1.8p-9f), 0x02);         // tie 1|2 -> 2
  EXPECT_EQ(num::f32_to_e4m3(0x1p-6f - 0x1p-10f), 0x08);  // tie 7|8 -> smallest normal
  EXPECT_EQ(num::f32_to_e4m3(0x1p-30f), 0x00);
}

// ---- FP4 E2M1 ----

TEST(E2M1, DecodesEveryCode) {
  check_decode_all(e2m1_codec(), [](uint32_t c) {
    return (c & 8 ? -1.0 : 1.0) * kE2M1Magnitudes[c & 7];
  });
}
TEST(E2M1, EveryCodeRoundTrips) { check_round_trip_all(e2m1_codec()); }
TEST(E2M1, EncoderMatchesNearestCodeSearchOnF32Sweep) { sweep_f32(e2m1_codec(), e2m1_reference()); }
TEST(E2M1, MidpointsRoundToEvenCode) { check_midpoints(e2m1_codec(), e2m1_reference(), 8); }
TEST(E2M1, TiesSaturationAndSpecials) {
  const std::pair<float, uint8_t> cases[] = {
      {0.25f, 0x0}, {0.75f, 0x2}, {1.25f, 0x2}, {1.75f, 0x4}, {2.5f, 0x4},  {3.5f, 0x6},
      {5.0f, 0x6},  {5.01f, 0x7}, {7.0f, 0x7},  {1e9f, 0x7},  {-0.3f, 0x9}, {-5.0f, 0xe},
      {-0.0f, 0x8}, {INFINITY, 0x7}, {-INFINITY, 0xf}, {0x1p-140f, 0x0}};
  for (auto [f, code] : cases) EXPECT_EQ(num::f32_to_e2m1(f), code) << f;
  EXPECT_EQ(num::f32_to_e2m1(NAN), 0x0);
}

// all_exact_in_bf16 against the round trip through the scalar bf16 conversion, value by value.
TEST(Bf16Exactness, AgreesWithTheRoundTrip) {
  std::mt19937 rng(3);
  std::vector<float> v;
  for (int k = 0; k < 1000; ++k) v.push_back(num::bf16_to_f32(num::f32_to_bf16(std::normal_distribution<float>()(rng))));
  v.push_back(INFINITY);
  EXPECT_TRUE(num::all_exact_in_bf16(v.data(), v.size()));
  for (float odd : {1.0f + std::ldexp(1.0f, -10), 3e-5f, 0.01f}) {
    ASSERT_NE(num::bf16_to_f32(num::f32_to_bf16(odd)), odd);
    std::vector<float> w = v;
    w[517] = odd;
    EXPECT_FALSE(num::all_exact_in_bf16(w.data(), w.size())) << odd;
  }
  EXPECT_TRUE(num::all_exact_in_bf16(v.data(), 0));
}

}  // namespace
