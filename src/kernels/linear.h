// Dense linear kernels: y[t, o] = sum_i x[t, i] * W[o, i] + bias[o], W stored [out, in] (row-major,
// as in checkpoints). The public entry dispatches at run time to the best SIMD path and threads
// over output rows; `*_ref` functions are the plain scalar specification every path is tested against.
#pragma once
#include <cstdint>

namespace lq::kernels {

enum class WeightType { F32, BF16 };

struct DenseMatrix {
  WeightType type = WeightType::F32;
  int64_t rows = 0;  // out features
  int64_t cols = 0;  // in features
  const void* data = nullptr;
};

// x: [n, w.cols] f32, y: [n, w.rows] f32, bias may be null.
void linear(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y);
void linear_ref(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y);

// Threads used by all kernels (default: hardware concurrency). Results do not depend on it.
void set_num_threads(int n);
int num_threads();

// Name of the SIMD path the dispatcher selected ("avx512", "avx2", "scalar").
const char* simd_path();

}  // namespace lq::kernels
