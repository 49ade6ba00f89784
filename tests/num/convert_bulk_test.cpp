// Bulk (SIMD-dispatched) conversions must be bit-identical to the scalar ones, including NaN, inf,
// subnormals, unaligned starts and every tail length. The f16 paths use the F16C instructions, so
// these tests also check the scalar f16 code against the hardware's IEEE conversion.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "format_reference.h"
#include "num/formats.h"

namespace {

namespace num = lq::num;
using lq::test::f32_bits;
using lq::test::f32_from_bits;

// Random f32 bit patterns (covers NaN, inf, subnormals), values sitting exactly on bf16/f16 ties,
// and the specials, shuffled.
std::vector<float> mixed_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v(n);
  const uint32_t specials[] = {0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u, 0xffffffffu,
                               0x00000001u, 0x80000000u, 0x477ff000u, 0x33000000u, 0x387fe000u};
  for (size_t i = 0; i < n; ++i) {
    uint32_t u = uint32_t(rng());
    switch (i % 5) {
      case 0: break;                                     // any bit pattern
      case 1: u = (u & 0xffff0000u) | 0x8000u; break;    // bf16 tie
      case 2: u = (u & 0xffffe000u) | 0x1000u; break;    // f16 tie (any exponent)
      case 3: u = specials[u % std::size(specials)]; break;
      case 4: u = (u & 0x83ffffffu) | 0x38000000u; break;  // magnitudes near the f16 subnormal range
    }
    v[i] = f32_from_bits(u);
  }
  return v;
}

template <class Bulk, class Scalar, class Src>
void expect_bulk_matches_scalar(const std::vector<Src>& src, Bulk bulk, Scalar scalar,
                                const char* what) {
  using Dst = decltype(scalar(src[0]));
  // Every start offset 0..7 and many lengths: exercises unaligned loads and all tail sizes.
  for (size_t offset = 0; offset < 8; ++offset) {
    for (size_t len : {size_t(0), size_t(1), size_t(7), size_t(15), size_t(16), size_t(17),
                       size_t(31), size_t(33), src.size() - offset}) {
      std::vector<Dst> out(len + 1, Dst(0x5a));
      bulk(src.data() + offset, out.data(), len);
      for (size_t i = 0; i < len; ++i) {
        Dst want = scalar(src[offset + i]);
        ASSERT_EQ(std::memcmp(&out[i], &want, sizeof(Dst)), 0)
            << what << " offset " << offset << " len " << len << " element " << i;
      }
      ASSERT_EQ(out[len], Dst(0x5a)) << what << ": wrote past the end";
    }
  }
}

TEST(BulkConvert, ReportsPath) {
  const std::string path = num::convert_simd_path();
  EXPECT_TRUE(path == "avx2+f16c" || path == "scalar") << path;
}

TEST(BulkConvert, F32ToBf16MatchesScalar) {
  const auto src = mixed_floats(100003, 1);
  expect_bulk_matches_scalar(
      src, [](const float* s, uint16_t* d, size_t n) { num::f32_to_bf16(s, d, n); },
      [](float f) { return num::f32_to_bf16(f); }, "f32->bf16");
}

TEST(BulkConvert, F32ToF16MatchesScalar) {
  const auto src = mixed_floats(100003, 2);
  expect_bulk_matches_scalar(
      src, [](const float* s, uint16_t* d, size_t n) { num::f32_to_f16(s, d, n); },
      [](float f) { return num::f32_to_f16(f); }, "f32->f16");
}

TEST(BulkConvert, DecodeEveryCodeMatchesScalar) {
  std::vector<uint16_t> codes(65536 + 3);
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = uint16_t(i);
  expect_bulk_matches_scalar(
      codes, [](const uint16_t* s, float* d, size_t n) { num::bf16_to_f32(s, d, n); },
      [](uint16_t h) { return num::bf16_to_f32(h); }, "bf16->f32");
  expect_bulk_matches_scalar(
      codes, [](const uint16_t* s, float* d, size_t n) { num::f16_to_f32(s, d, n); },
      [](uint16_t h) { return num::f16_to_f32(h); }, "f16->f32");
}

// Destinations of 16 MiB and more take the non-temporal-store path (with a scalar head that aligns
// the destination); check it at an aligned and a misaligned start.
TEST(BulkConvert, LargeArraysUseStreamingStoresAndStayIdentical) {
  const size_t n = (size_t(16) << 20) / 2 + 37;  // > 16 MiB of bf16/f16 output
  const auto src = mixed_floats(n + 1, 3);
  std::vector<uint16_t> half(n + 1);
  std::vector<float> back(n + 1);
  for (size_t offset : {size_t(0), size_t(1)}) {
    const size_t len = n - offset;
    num::f32_to_bf16(src.data() + offset, half.data() + offset, len);
    for (size_t i = 0; i < len; ++i)
      ASSERT_EQ(half[offset + i], num::f32_to_bf16(src[offset + i])) << "bf16 element " << i;
    num::bf16_to_f32(half.data() + offset, back.data() + offset, len);
    for (size_t i = 0; i < len; ++i)
      ASSERT_EQ(f32_bits(back[offset + i]), f32_bits(num::bf16_to_f32(half[offset + i])));
    num::f32_to_f16(src.data() + offset, half.data() + offset, len);
    for (size_t i = 0; i < len; ++i)
      ASSERT_EQ(half[offset + i], num::f32_to_f16(src[offset + i])) << "f16 element " << i;
    num::f16_to_f32(half.data() + offset, back.data() + offset, len);
    for (size_t i = 0; i < len; ++i)
      ASSERT_EQ(f32_bits(back[offset + i]), f32_bits(num::f16_to_f32(half[offset + i])));
  }
}

// A dense sweep (every f32 whose top 20 bits vary) through the bulk f32->f16 path: on an F16C
// machine this compares the scalar encoder with the hardware conversion.
TEST(BulkConvert, F32ToF16SweepMatchesScalar) {
  std::vector<float> src(1u << 20);
  for (uint32_t top = 0; top < src.size(); ++top) src[top] = f32_from_bits(top << 12 | 0x123);
  std::vector<uint16_t> bulk(src.size()), tie(src.size());
  num::f32_to_f16(src.data(), bulk.data(), src.size());
  for (size_t i = 0; i < src.size(); ++i)
    ASSERT_EQ(bulk[i], num::f32_to_f16(src[i])) << std::hex << f32_bits(src[i]);
  for (uint32_t top = 0; top < src.size(); ++top) src[top] = f32_from_bits(top << 12);
  num::f32_to_f16(src.data(), tie.data(), src.size());
  for (size_t i = 0; i < src.size(); ++i)
    ASSERT_EQ(tie[i], num::f32_to_f16(src[i])) << std::hex << f32_bits(src[i]);
}

}  // namespace
