// Dense linear kernels: y[t, o] = sum_i x[t, i] * W[o, i] + bias[o], W stored [out, in] (row-major,
// as in checkpoints; only read, so it may be a read-only mmap). The public entry dispatches at run
// time to the best SIMD path and threads over output rows; `*_ref` functions are the plain scalar
// specification every path is tested against.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/parallel.h"  // num_threads(), set_num_threads(), parallel_for

namespace lq::kernels {

enum class WeightType { F32, BF16 };

struct DenseMatrix {
  WeightType type = WeightType::F32;
  int64_t rows = 0;  // out features
  int64_t cols = 0;  // in features
  const void* data = nullptr;
};

// Tokens from which linear() switches from the dot-product path (memory-bound GEMV: W streamed once
// per call) to the packed GEMM (compute-bound prefill); measured with bench/bench_linear.cpp.
inline constexpr int64_t kGemmMinTokens = 32;

// x: [n, w.cols] f32, y: [n, w.rows] f32, bias may be null; x and y must not overlap.
// n < kGemmMinTokens runs linear_dot, larger n linear_gemm. Each y element is computed by one thread
// in an order fixed by the path alone, so the result is deterministic and bit-identical for any
// num_threads(). Rows of a batch are NOT bit-identical to the n = 1 result once n >= kGemmMinTokens
// (the two paths sum in different orders; both are within a few f32 ulps of linear_ref).
// Throws lq::Error on negative sizes or null pointers.
void linear(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y);

// The two AVX2+FMA algorithms behind linear(), for any n (tests and benchmarks call them directly;
// without AVX2+FMA both run linear_scalar).
// linear_dot: every output owns an 8-lane accumulator walking k, reduced horizontally; a row of the
// result does not depend on the other tokens of the call (its n = 1 value).
void linear_dot(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y);
// linear_gemm: packed outer-product GEMM (gemm_path(): register or AMX tiles); sums each output in
// 256-wide k blocks, each block one FMA chain. Rows are independent of n and of the other tokens too.
void linear_gemm(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y);

// Specification: double accumulation, single-threaded.
void linear_ref(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y);
// Portable f32 path used when the CPU lacks AVX2+FMA (threaded; not bit-identical to the SIMD path).
void linear_scalar(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y);

// Name of the SIMD path of linear_dot ("avx2" or "scalar").
const char* simd_path();

// The GEMM path (linear_gemm, and the 4-bit kernels' W4A16 path beyond q4_int8_max_tokens() tokens),
// chosen at run time: "avx512" where the CPU has AVX-512F, else "avx2", else "scalar"; "amx" only when
// asked for (LQ_GEMM_PATH=amx or set_gemm_path), as it changes the numerics:
//   "amx"         AMX-BF16 tiles: x and W rounded to bf16 (RNE), f32 accumulation (kernels/amx.h).
//                 Used for bf16 and 4-bit weights; f32 weights take the best f32 path below.
//   "avx512"      AVX-512F, 12 tokens x 32 outputs register tiles, f32
//   "avx2"        AVX2 + FMA, 6 tokens x 16 outputs, f32
//   "scalar"      linear_scalar
// and, for tests on CPUs without the instructions: "avx512-emu" (the avx512 path's exact computation
// with each 512-bit vector as two AVX2 vectors) and "amx-emu" (the amx path over a scalar model of
// the tile instructions, written from Intel's SDM). The f32 paths give identical bits (each output is
// one FMA chain per 256-k block, blocks added in order, bias last); the amx paths differ from them by
// the bf16 rounding of x (and of 4-bit weights, whose dequantized values need up to 12 bits).
const char* gemm_path();
// Force one of the names above (lq::Error if this CPU cannot run it); "" restores the default: the
// environment variable LQ_GEMM_PATH when set (the same names), else the best. Not meant to change
// while another thread runs a kernel.
void set_gemm_path(const std::string& path);
// The GEMM paths this CPU can run (including the emulated ones).
std::vector<std::string> gemm_paths_available();

}  // namespace lq::kernels
