// Round-to-nearest integer quantizers (min-max asymmetric INT4, symmetric INT4 / INT8), per group
// of `group` input elements of one output row.
//
// Asymmetric:  scale = S(max(hi - lo, 1e-5) / 15), zero = clamp(round(-lo / scale), 0, 15),
//              q = clamp(round(clamp(w, lo, hi) / scale) + zero, 0, 15),  w' = (q - zero) * scale
// Symmetric:   scale = S(max(a, 1e-5) / (2^(b-1) - 1)), zero = 2^(b-1),
//              q = clamp(round(clamp(w, -a, a) / scale) + zero, 0, 2^b - 1)
// where [lo, hi] is the group's [min, max] clamped to [-r*absmax, r*absmax] (r = clip ratio, 1 by
// default; AWQ's clip search tries r < 1), a = r*absmax, round() is round-half-to-even like
// torch.round, and S() rounds to the STORED scale dtype (bf16/f16/f32) BEFORE the zero point and
// the codes are chosen. Why: the file's dequantization uses the stored scale; codes chosen against
// the unrounded f32 scale are optimal for a scale that never exists, and bf16's 2^-9 relative
// rounding then shifts every reconstructed value by up to 15 * 2^-9 * scale (the original Python
// toolkit's mistake). Against the rounded scale, |w - w'| <= scale/2 holds for the stored scale.
// Like AutoAWQ / llm-awq, the range is NOT widened to include 0: a group whose values all share one
// sign gets zero = 0 or 15 clamped and large errors (never seen on real weight groups of >= 32).
#pragma once
#include <cstdint>

#include "quant/qtensor.h"

namespace lq::quant {

struct RtnParams {
  Scheme scheme = Scheme::Int4Asym;  // Int4Asym, Int4Sym or Int8Sym
  int64_t group = 128;               // must divide `in`
  ScaleDType scale_dtype = ScaleDType::BF16;
};

// Codes, scales and zeros of W [out][in]; clip_ratios optional [out][in/group].
QTensor quantize_rtn(const float* w, int64_t out, int64_t in, const RtnParams& p, const float* clip_ratios = nullptr);
// The dequantized result of quantize_rtn, bit for bit, without storing codes.
void fake_quantize_rtn(const float* w, int64_t out, int64_t in, const RtnParams& p, float* wq,
                       const float* clip_ratios = nullptr);

// One group's stored parameters and the per-element rule, exactly as quantize_rtn / fake_quantize_rtn
// apply them (the same inlined code): GPTQ fixes a group's parameters once from the group's current
// values and then quantizes its (error-updated) columns one at a time with them.
//   [lo, hi] clipped value range, scale the STORED scale value, zero the zero point (as a float).
struct RtnGroupParams {
  float lo, hi, scale, zero;
};
// Parameters of the group w[0..n) (min-max, clip ratio `clip`); throws like quantize_rtn.
RtnGroupParams rtn_group_params(const float* w, int64_t n, const RtnParams& p, float clip = 1.0f);
// Code of one value under fixed parameters, and its dequantized value ((code - zero) * scale).
uint8_t rtn_code(float w, const RtnGroupParams& g, Scheme s);
inline float rtn_value(uint8_t code, const RtnGroupParams& g) { return (float(code) - g.zero) * g.scale; }

// Plain scalar reference of one group (the specification the row kernels are tested against).
struct RtnGroup {
  float scale;
  int zero;
};
RtnGroup rtn_group_reference(const float* w, int64_t n, const RtnParams& p, float clip_ratio, uint8_t* codes);

}  // namespace lq::quant
