// 8-bit linear kernel: y[t, o] = sum_i x[t, i] * W[o, i] + bias[o] with W = c * s, c in [-128, 127]
// (signed 8-bit codes; quant::Scheme::Int8Sym's code - 128) and s an f32 scale per group of `group`
// inputs (a multiple of 64 dividing in_features). Used for the lm_head (`--head int8`: it halves the
// bytes a decoded token reads from the bf16 head) and for INT8 checkpoints.
//
// Up to q4_int8_max_tokens() tokens the activations are the int8 x^ of q4.h (one scale d per 64
// inputs, bit-identical to q8_activations) and each 64-input block's dot product is exact in int32:
//   y = sum_b (d_b * s_b) * sum_{i in b} c_i q_i     (AVX2: maddubs(|c|, sign(q, c)) + madd; no
// saturation: |c| <= 128, |q| <= 127), the f32 sum over blocks in lanes then a fixed horizontal order.
// Beyond, W8A16: the codes are decoded into the packed panels of the f32 GEMM (linear_gemm.h) and the
// f32 activations used, exactly as the dense GEMM over the dequantized matrix.
// Threads split output rows; results do not depend on num_threads(). (Implemented in q4.cpp, which
// owns the int8 activation quantizer.)
#pragma once
#include <cstdint>
#include <vector>

namespace lq::kernels {

struct Q8Matrix {
  int64_t rows = 0, cols = 0, group = 0;
  std::vector<int8_t> codes;  // [rows][cols]
  std::vector<float> scales;  // [rows][cols / group]
  float weight(int64_t o, int64_t i) const { return float(codes[size_t(o * cols + i)]) * scales[size_t(o * (cols / group) + i / group)]; }
  uint64_t weight_bytes() const { return uint64_t(codes.size()) + 4 * uint64_t(scales.size()); }
};

// codes: [rows][cols] unsigned 0..255 with zero point 128 (QTensor's Int8Sym), scales [rows][cols /
// group]. Throws lq::Error naming `where` unless group % 64 == 0 and cols % group == 0.
Q8Matrix pack_int8(int64_t rows, int64_t cols, int64_t group, const uint8_t* codes, const float* scales,
                   const char* where = "pack_int8");

void q8_linear(const float* x, int64_t n, const Q8Matrix& w, const float* bias, float* y);
// Specification: weight() in double, f32 activations, single-threaded.
void q8_linear_ref(const float* x, int64_t n, const Q8Matrix& w, const float* bias, float* y);

}  // namespace lq::kernels
