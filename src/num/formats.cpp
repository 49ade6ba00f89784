// Scalar conversions. Encoders work on the f32 bit pattern (no search, no libm) because the FP4/FP8
// ones sit in the NVFP4 quantizer's inner loops; tests/num checks them against a brute-force
// nearest-value search over every code.
#include "num/formats.h"

#include <algorithm>
#include <cstring>

namespace lq::num {

namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

constexpr uint32_t kF32SignMask = 0x80000000u;
constexpr uint32_t kF32AbsMask = 0x7fffffffu;
constexpr uint32_t kF32Inf = 0x7f800000u;
constexpr int kF32MantBits = 23;
constexpr int kF32Bias = 127;

// m >> s rounded to nearest, ties to even; s in [1, 31].
uint32_t shift_right_rne(uint32_t m, int s) {
  const uint32_t q = m >> s;
  const uint32_t rem = m & ((1u << s) - 1);
  const uint32_t half = 1u << (s - 1);
  return q + ((rem > half || (rem == half && (q & 1))) ? 1u : 0u);
}

// Rounds a finite, non-negative f32 (given as bits) to the nearest value of a binary format with
// kExp exponent bits, kMant mantissa bits and bias kBias (IEEE layout, subnormals at exponent 0),
// ties to even. Returns the magnitude code (exponent << kMant | mantissa) as if the exponent range
// were unbounded above: callers clamp it to their largest code (saturation or infinity). Because
// codes are ordered like the values they encode, a carry out of the mantissa correctly bumps the
// exponent.
template <int kMant, int kBias>
uint32_t round_to_minifloat(uint32_t abs_bits) {
  constexpr int kDrop = kF32MantBits - kMant;
  // f32 biased exponent of the format's smallest normal value 2^(1 - kBias).
  constexpr uint32_t kMinNormalF32Exp = uint32_t(kF32Bias + 1 - kBias);
  const uint32_t f32_exp = abs_bits >> kF32MantBits;
  if (f32_exp >= kMinNormalF32Exp) {
    // Add just under half an ulp, plus one if the kept part is odd: RNE on the bit pattern.
    const uint32_t rounded = abs_bits + ((1u << (kDrop - 1)) - 1) + ((abs_bits >> kDrop) & 1u);
    return (rounded >> kDrop) - (uint32_t(kF32Bias - kBias) << kMant);
  }
  // Subnormal in the target: count units of 2^(1 - kBias - kMant). The f32 value is
  // significand * 2^(max(e,1) - 150), so the count is significand >> (151 - kBias - kMant - max(e,1)).
  const uint32_t significand = (abs_bits & 0x7fffffu) | (f32_exp ? 0x800000u : 0u);
  const int shift = 151 - kBias - kMant - int(std::max<uint32_t>(f32_exp, 1));
  return shift_right_rne(significand, std::min(shift, 31));
}

}  // namespace

// ---- bf16 ----

float bf16_to_f32(uint16_t h) { return float_of(uint32_t(h) << 16); }

bool all_exact_in_bf16(const float* v, size_t n) {
  uint32_t low = 0;
  for (size_t k = 0; k < n; ++k) {
    uint32_t b;
    std::memcpy(&b, v + k, 4);
    low |= b & 0xffffu;
  }
  return low == 0;
}

uint16_t f32_to_bf16(float f) {
  const uint32_t u = bits_of(f);
  if ((u & kF32AbsMask) > kF32Inf) return uint16_t((u >> 16) | 0x40);  // NaN: keep it NaN, quiet
  // RNE on the low 16 bits; a carry into the exponent gives the next binade or inf (correct).
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// ---- f16 ----

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return float_of(sign | kF32Inf | (man << 13) | (man ? 0x400000u : 0u));
  if (exp != 0) return float_of(sign | ((exp + (kF32Bias - 15)) << kF32MantBits) | (man << 13));
  return float_of(sign | bits_of(float(man) * 0x1p-24f));  // subnormal: man * 2^-24, exact
}

uint16_t f32_to_f16(float f) {
  const uint32_t u = bits_of(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & kF32AbsMask;
  if (a > kF32Inf) return uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // quiet NaN, payload top
  const uint32_t code = a == kF32Inf ? 0x7c00u : round_to_minifloat<10, 15>(a);
  return uint16_t(sign | std::min<uint32_t>(code, 0x7c00u));  // overflow -> inf
}

// ---- FP8 E4M3 (fn) ----

float e4m3_to_f32(uint8_t c) {
  const uint32_t sign = uint32_t(c & 0x80u) << 24;
  const uint32_t mag = c & 0x7fu;
  if (mag == 0x7f) return float_of(sign | 0x7fc00000u);
  const uint32_t exp = mag >> 3, man = mag & 7u;
  if (exp != 0) return float_of(sign | ((exp + (kF32Bias - 7)) << kF32MantBits) | (man << 20));
  return float_of(sign | bits_of(float(man) * 0x1p-9f));  // subnormal: man * 2^-9
}

uint8_t f32_to_e4m3(float f) {
  const uint32_t u = bits_of(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & kF32AbsMask;
  if (a > kF32Inf) return uint8_t(sign | 0x7fu);
  constexpr uint32_t kMaxCode = 0x7e;  // 448; 0x7f is NaN
  const uint32_t code = a == kF32Inf ? kMaxCode : round_to_minifloat<3, 7>(a);
  return uint8_t(sign | std::min(code, kMaxCode));
}

// ---- FP4 E2M1 ----

namespace {
constexpr float kE2M1Values[16] = {0.f,  0.5f,  1.f,  1.5f,  2.f,  3.f,  4.f,  6.f,
                                   -0.f, -0.5f, -1.f, -1.5f, -2.f, -3.f, -4.f, -6.f};
}

float e2m1_to_f32(uint8_t c) { return kE2M1Values[c & 0xfu]; }

uint8_t f32_to_e2m1(float f) {
  const uint32_t u = bits_of(f);
  const uint32_t a = u & kF32AbsMask;
  if (a > kF32Inf) return 0;
  const uint32_t sign = (u >> 28) & 0x8u;
  constexpr uint32_t kMaxCode = 7;  // 6.0
  const uint32_t code = a == kF32Inf ? kMaxCode : round_to_minifloat<1, 1>(a);
  return uint8_t(sign | std::min(code, kMaxCode));
}

// ---- scalar bulk loops ----

namespace scalar {
void bf16_to_f32(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = num::bf16_to_f32(src[i]);
}
void f32_to_bf16(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = num::f32_to_bf16(src[i]);
}
void f16_to_f32(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = num::f16_to_f32(src[i]);
}
void f32_to_f16(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = num::f32_to_f16(src[i]);
}
}  // namespace scalar

}  // namespace lq::num
