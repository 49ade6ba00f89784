// Dense linear kernels: y[t, o] = sum_i x[t, i] * W[o, i] + bias[o], W stored [out, in] (row-major,
// as in checkpoints). The public entry dispatches at run time to the best SIMD path and threads
// over output rows; `*_ref` functions are the plain scalar specification every path is tested against.
#pragma once
#include <cstdint>

#include "kernels/parallel.h"  // num_threads(), set_num_threads(), parallel_for

namespace lq::kernels {

enum class WeightType { F32, BF16 };

struct DenseMatrix {
  WeightType type = WeightType::F32;
  int64_t rows = 0;  // out features
  int64_t cols = 0;  // in features
  const void* data = nullptr;
};

// x: [n, w.cols] f32, y: [n, w.rows] f32, bias may be null; x and y must not overlap.
// Each y element is computed by one thread in a fixed order: the result is bit-identical for any
// num_threads() and any n (row t of a batch equals the n = 1 result for that token).
// Throws lq::Error on negative sizes or null pointers.
void linear(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y);
// Specification: double accumulation, single-threaded.
void linear_ref(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y);
// Portable f32 path used when the CPU lacks AVX2+FMA (threaded; not bit-identical to the SIMD path).
void linear_scalar(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y);

// Name of the SIMD path the dispatcher selected ("avx512", "avx2", "scalar").
const char* simd_path();

}  // namespace lq::kernels
