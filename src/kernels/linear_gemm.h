// Packed outer-product GEMM behind kernels::linear() for many tokens and behind the 4-bit kernels'
// W4A16 path (internal to lq_kernels; linear.h documents the public contract and the paths).
//
// The GEMM reads its weights only through a PanelSource: a function that writes one k block of a
// panel of `width` consecutive outputs as f32, k-major. Dense f32 / bf16 matrices (dense_panels) and
// the 4-bit Lanes layout (q4.cpp) are such sources, so 4-bit weights are decoded straight into the
// panels, once per call, never materialised whole.
#pragma once
#include <cstdint>

#include "kernels/linear.h"

namespace lq::kernels::detail {

// pack(ctx, o0, rows, k0, kc, width, dst): dst[k * width + j] = W[o0 + j, k0 + k] as f32 for k < kc,
// j < rows (<= width); columns j >= rows are 0. dst is 64-byte aligned. The GEMM calls it with o0 a
// multiple of width, k0 a multiple of kGemmKBlock and kc = min(kGemmKBlock, cols - k0); width is 16
// or 32. It must give the same values whatever width is (the paths must agree bit for bit).
// bf16_exact: every value a pack writes is exactly a bf16 (bf16 weights): the AMX-BF16 path then
// keeps the weights exact.
struct PanelSource {
  int64_t rows = 0, cols = 0;
  const void* ctx = nullptr;
  void (*pack)(const void* ctx, int64_t o0, int rows, int64_t k0, int64_t kc, int width, float* dst) = nullptr;
  bool bf16_exact = false;
};

// k block of every GEMM path: each output is summed as one FMA chain per block of this many k (in
// order, from 0), blocks added in order, bias last. Shared by all paths so they agree bit for bit.
inline constexpr int64_t kGemmKBlock = 256;

// The panel source of a dense matrix (reads w.data in place; keeps a pointer to w).
PanelSource dense_panels(const DenseMatrix& w);

// True when the CPU can run the AVX2 GEMM (AVX2 + FMA); every vector path needs it.
bool gemm_avx2_available();

// y = x W^T + b through the selected GEMM path (gemm_path()). Arguments already validated, n > 0,
// w.rows > 0; requires gemm_avx2_available(). `f32_weights`: the source holds f32 weights that the
// caller wants in f32 (dense f32 matrices): the AMX-BF16 path is not used for them.
// Threads split the output columns statically; every output element is computed the same way
// whatever the thread count, n or its position in a tile.
void gemm(const float* x, int64_t n, const PanelSource& w, const float* bias, float* y, bool f32_weights);

}  // namespace lq::kernels::detail
