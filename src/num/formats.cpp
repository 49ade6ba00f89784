#include "num/formats.h"

#include <cmath>
#include <cstring>

namespace lq::num {

namespace {
uint32_t bits_of(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
float float_of(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
}  // namespace

float bf16_to_f32(uint16_t h) { return float_of(uint32_t(h) << 16); }

uint16_t f32_to_bf16(float f) {
  uint32_t u = bits_of(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0) {
    float v = std::ldexp(float(man), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return float_of(sign | 0x7f800000u | (man << 13));
  return float_of(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_f16(float f) {
  // Simple reference; replaced by an exhaustive-tested version.
  uint32_t u = bits_of(f), sign = (u >> 16) & 0x8000;
  float a = std::fabs(f);
  if (std::isnan(f)) return uint16_t(sign | 0x7e00);
  if (a >= 65520.0f) return uint16_t(sign | 0x7c00);
  if (a < 6.103515625e-05f) {  // subnormal: units of 2^-24
    float q = std::nearbyint(a * 16777216.0f);
    return uint16_t(sign | uint32_t(q));
  }
  int e;
  float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5,1)
  float q = std::nearbyint(m * 2048.0f);  // 11 bits
  if (q >= 2048.0f) { q /= 2; e += 1; }
  uint32_t exp = uint32_t(e - 1 + 15);
  if (exp >= 31) return uint16_t(sign | 0x7c00);
  return uint16_t(sign | (exp << 10) | (uint32_t(q) & 0x3ff));
}

float e4m3_to_f32(uint8_t c) {
  int sign = c & 0x80, exp = (c >> 3) & 0xf, man = c & 7;
  if ((c & 0x7f) == 0x7f) return NAN;
  float v = exp == 0 ? std::ldexp(float(man), -9) : std::ldexp(1.0f + man / 8.0f, exp - 7);
  return sign ? -v : v;
}

uint8_t f32_to_e4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  uint8_t best = 0;
  float a = std::fabs(f), best_err = INFINITY;
  for (int c = 0; c < 0x7f; ++c) {  // reference search; ties -> even code
    float err = std::fabs(e4m3_to_f32(uint8_t(c)) - a);
    if (err < best_err || (err == best_err && (c & 1) == 0)) { best_err = err; best = uint8_t(c); }
  }
  return uint8_t(best | (std::signbit(f) ? 0x80 : 0));
}

float e2m1_to_f32(uint8_t c) {
  static const float mag[8] = {0.f, 0.5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f};
  float v = mag[c & 7];
  return (c & 8) ? -v : v;
}

uint8_t f32_to_e2m1(float f) {
  float a = std::fabs(f);
  uint8_t best = 0;
  float best_err = INFINITY;
  for (int c = 0; c < 8; ++c) {
    float err = std::fabs(e2m1_to_f32(uint8_t(c)) - a);
    if (err < best_err || (err == best_err && (c & 1) == 0)) { best_err = err; best = uint8_t(c); }
  }
  return uint8_t(best | (std::signbit(f) ? 8 : 0));
}

void bf16_to_f32(const uint16_t* src, float* dst, size_t n) { for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]); }
void f32_to_bf16(const float* src, uint16_t* dst, size_t n) { for (size_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]); }
void f16_to_f32(const uint16_t* src, float* dst, size_t n) { for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]); }
void f32_to_f16(const float* src, uint16_t* dst, size_t n) { for (size_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]); }

}  // namespace lq::num
