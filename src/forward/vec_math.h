// Vectorised element-wise pieces of a decoder layer (AVX2 + FMA, chosen at run time, with a scalar
// fallback), threaded over rows: RMSNorm, SiLU(gate) * up, and the rotation of RoPE. Contracts:
//   rms_norm_rows   y = w * (x * inv), inv = f32(1 / sqrt(sum_i x_i^2 / dim + eps)) with the sum in
//                   double (the scalar definition's operations; the vector sum adds in another order,
//                   so inv may differ in its last bit)
//   silu_mul        g = g / (1 + exp(-g)) * u in f32; the vector exp is within 2 ulp of std::exp
//   rope_rotate     x' = (a cos - b sin, b cos + a sin) per pair (j, j + half): the scalar operations,
//                   bit-identical
//   exp_f32         exp of n floats (the vector exp above; attention's softmax uses it)
#pragma once
#include <cstdint>

namespace lq::fwd {

// rows x dim values: y[r] = rms_norm(x[r]) * w[r's weights]; `weight_of(r)` gives each row's weights.
void rms_norm_rows(const float* x, int64_t rows, int64_t dim, double eps, const float* const* row_weights, float* y);
void silu_mul(float* gate, const float* up, int64_t n);
// x: rows x heads x (2 half); cs / sn: rows x half.
void rope_rotate(float* x, int64_t rows, int64_t heads, int half, const float* cs, const float* sn);
void exp_f32(const float* x, float* y, int64_t n);
// True when the AVX2 versions run (vec_math_test checks both against their scalar definitions).
bool vec_math_simd();
// Tests: force the scalar versions (true) or restore the dispatch (false).
void set_vec_math_scalar(bool scalar);

}  // namespace lq::fwd
