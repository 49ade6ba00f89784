// Packed outer-product GEMM behind kernels::linear() for many tokens (internal to lq_kernels;
// linear.h documents the public contract and exposes it as linear_gemm()).
#pragma once
#include <cstdint>

#include "kernels/linear.h"

namespace lq::kernels::detail {

// True when the CPU can run gemm_avx2 (AVX2 + FMA).
bool gemm_avx2_available();

// y = x W^T + b. Arguments already validated, n > 0 and w.rows > 0; requires gemm_avx2_available().
// Threads split the output columns statically; every output element is computed the same way
// whatever the thread count, n or its position in a tile (see linear_gemm.cpp).
void gemm_avx2(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y);

}  // namespace lq::kernels::detail
