// Scalar numeric formats used by checkpoints and quantized weights:
// bf16, f16 (IEEE half), FP8 E4M3 (fn variant) and FP4 E2M1. All encoders round to
// nearest, ties to even. Bulk converters pick a SIMD path at run time.
#pragma once
#include <cstddef>
#include <cstdint>

namespace lq::num {

float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);   // RNE; overflow -> inf; NaN stays NaN (quiet bit set, sign kept)
float f16_to_f32(uint16_t h);    // NaN comes back quiet (as the F16C instruction does)
uint16_t f32_to_f16(float f);    // RNE; |f| >= 65520 -> inf; subnormals kept; NaN -> quiet NaN
// Whether bf16 holds every value exactly (their low 16 bits are zero; inf and NaN payloads included).
// Branch-free: it runs over every scale of a checkpoint at load time.
bool all_exact_in_bf16(const float* v, size_t n);
float e4m3_to_f32(uint8_t c);    // fn variant: no inf, 0x7F/0xFF are NaN, max 448
uint8_t f32_to_e4m3(float f);    // RNE, saturates (inf too) to +-448; NaN -> 0x7F (0xFF if sign set)
float e2m1_to_f32(uint8_t c);    // low 4 bits: sign bit 3, magnitude {0,.5,1,1.5,2,3,4,6}
uint8_t f32_to_e2m1(float f);    // RNE (ties to even code), saturates to +-6; NaN -> +0 (no NaN code)

// Largest finite magnitudes.
inline constexpr float kF16Max = 65504.0f;
inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE2M1Max = 6.0f;

// Bulk conversions (vectorised where the CPU allows; bit-identical to the scalar ones).
void bf16_to_f32(const uint16_t* src, float* dst, size_t n);
void f32_to_bf16(const float* src, uint16_t* dst, size_t n);
void f16_to_f32(const uint16_t* src, float* dst, size_t n);
void f32_to_f16(const float* src, uint16_t* dst, size_t n);

// Name of the bulk-conversion path selected on this CPU ("avx2+f16c" or "scalar").
const char* convert_simd_path();

// The scalar loops behind the bulk conversions; public so tests and benchmarks can compare paths.
namespace scalar {
void bf16_to_f32(const uint16_t* src, float* dst, size_t n);
void f32_to_bf16(const float* src, uint16_t* dst, size_t n);
void f16_to_f32(const uint16_t* src, float* dst, size_t n);
void f32_to_f16(const float* src, uint16_t* dst, size_t n);
}  // namespace scalar

}  // namespace lq::num
