// NVFP4 weight quantizer: E2M1 codes, one E4M3 scale per 16 input elements, one FP32 tensor scale.
//
// Standard encoding (what ModelOpt / compressed-tensors / vLLM expect):
//   tensor_scale t = amax(W) / (6 * 448), nudged up by ulps until fp32(1 / fp32(1 / t)) == t so that
//   compressed-tensors' global scale (1 / t) stores it exactly (or rounded up to a power of two on
//   request). Per block: candidates = the E4M3 code nearest block_max / (6 t) and `candidates` codes
//   on each side; for each, codes = e2m1(w / (e4m3 * t)) against that ROUNDED scale; keep the
//   candidate with the smallest squared error (ties: the nearest to block_max / (6 t)).
//   A candidate below block_max / 6 clips the block's largest element but may fit the rest better.
// Legacy encoding (the original Python toolkit, kept as a baseline): t = 1, block scale =
//   e4m3(block_max / 6) (typical weight blocks land in E4M3 subnormals or underflow to 0), codes
//   chosen against the unrounded block_max / 6.
#pragma once
#include <cstdint>

#include "quant/qtensor.h"
#include "quant/quantizer.h"

namespace lq::quant {

QTensor quantize_nvfp4(const float* w, int64_t out, int64_t in, const QuantParams& p);
void fake_quantize_nvfp4(const float* w, int64_t out, int64_t in, const QuantParams& p, float* wq);

// The tensor scale quantize_nvfp4 uses for a tensor whose largest |w| is `amax`.
float nvfp4_tensor_scale(float amax, const QuantParams& p);

// One 16-element block's stored scale and the per-element rule, exactly as quantize_nvfp4 applies them
// (GPTQ fixes a block's scale once and then quantizes its error-updated columns one at a time).
//   scale: the E4M3 byte; s_codes: the scale codes are chosen against; s: the dequantization scale.
struct Nvfp4Block {
  uint8_t scale = 0;
  float s_codes = 0, s = 0;
};
// Block parameters of w[0..16) under tensor scale t (nvfp4_tensor_scale of the whole tensor).
Nvfp4Block nvfp4_block_params(const float* w16, float t, const QuantParams& p);
uint8_t nvfp4_code(float w, const Nvfp4Block& b);
float nvfp4_value(uint8_t code, const Nvfp4Block& b);  // == QTensor::dequantize of that code

// Fast E2M1 encoder (threshold compares; round to nearest, ties to the even code, saturating at 6),
// identical to lq::num::f32_to_e2m1 (tested over a dense sweep).
uint8_t e2m1_encode(float x);

}  // namespace lq::quant
