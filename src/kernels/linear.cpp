#include "kernels/linear.h"

#include <thread>

#include "num/formats.h"

namespace lq::kernels {

namespace {
int g_threads = 0;
float weight_at(const DenseMatrix& w, int64_t o, int64_t i) {
  const int64_t k = o * w.cols + i;
  return w.type == WeightType::F32 ? static_cast<const float*>(w.data)[k]
                                   : num::bf16_to_f32(static_cast<const uint16_t*>(w.data)[k]);
}
}  // namespace

void linear_ref(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t o = 0; o < w.rows; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < w.cols; ++i) acc += double(x[t * w.cols + i]) * weight_at(w, o, i);
      y[t * w.rows + o] = float(acc) + (bias ? bias[o] : 0.0f);
    }
}

// Placeholder until the SIMD/threaded kernels land: the reference.
void linear(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y) {
  linear_ref(x, n, w, bias, y);
}

void set_num_threads(int n) { g_threads = n; }
int num_threads() {
  return g_threads > 0 ? g_threads : std::max(1u, std::thread::hardware_concurrency());
}
const char* simd_path() { return "scalar"; }

}  // namespace lq::kernels
