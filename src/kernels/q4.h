// Fused 4-bit linear kernels: y[t, o] = sum_i x[t, i] * W[o, i] + bias[o] with W stored as 4-bit
// codes and decoded inside the dot product (never materialised in full precision).
//
// Schemes (w = the dequantized weight, codes along the input axis, groups of `group` inputs):
//   Int4:  w = (q - z) * s      q, z in 0..15, s f32 per group (asymmetric INT4, or symmetric z = 8)
//   NvFp4: w = e2m1(q) * bs     bs = e4m3(block_scale) * tensor_scale (f32, in that order), group 16
//
// Q4Matrix is the kernel layout, built once at load time from unpacked codes (quant::QTensor holds
// exactly those; the on-disk formats stay standard). Per row, the input axis is cut into chunks of
// 16 codes packed into 8 bytes: byte j holds element j in its low nibble and element j + 8 in its
// high nibble, so one 8-byte load widened to 32-bit lanes gives, after a mask and a shift, two
// 8-lane vectors of consecutive codes. Per group the layout keeps an f32
// scale and, for Int4, the zero point byte: the kernel decodes q * s (integer -> f32, one multiply
// shared by every token of the call) and corrects the zero point once per group and token,
//   y = sum_i (q_i s_g) x_i - sum_g (s_g z_g) * (sum_{i in g} x_i)
// with the group sums of x computed once per token and call. NvFp4 keeps the E4M3 block-scale bytes
// and a 256-entry table of 0.5 * bs (so it streams 4.5 bits per weight, like the file) and decodes
// codes to 2 * e2m1 in {0, +-1, +-2, +-3, +-4, +-6, +-8, +-12} with a permute table lookup.
//
// Paths: AVX2+FMA (run-time dispatch), a portable scalar path, and `q4_linear_ref` (double
// accumulation, the specification). Threads split output rows statically (kernels::parallel_for),
// each output is computed by one thread in a fixed order: results do not depend on num_threads().
// Up to 7 tokens: fused decode + FMA, tokens register-blocked (up to 4 share each decoded chunk).
// From 8 tokens: each thread dequantizes blocks of 16 rows to f32 once per call and runs the dense
// f32 kernel (kernels::linear) over them. The accumulation order depends on the token block / path,
// so a row of a batch may differ from the n = 1 result in the last bits.
//
// A second backend (CUDA) would take the same Q4Matrix (plain arrays, no host pointers inside
// other than the vectors) and upload it; the layout has no CPU-specific padding.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/parallel.h"

namespace lq::kernels {

enum class Q4Scheme { Int4, NvFp4 };

struct Q4Matrix {
  Q4Scheme scheme = Q4Scheme::Int4;
  int64_t rows = 0, cols = 0;  // out, in features
  int64_t group = 0;           // inputs per scale (16 for NvFp4)
  std::vector<uint8_t> packed;        // [rows][cols / 2], 16-code chunks as above
  std::vector<float> scales;          // Int4: [rows][cols / group] s
  std::vector<uint8_t> zeros;         // Int4: [rows][cols / group] z
  std::vector<uint8_t> block_scales;  // NvFp4: [rows][cols / 16] E4M3 bytes (0.5 bit per weight)
  std::vector<float> scale_lut;       // NvFp4: [256] 0.5 * (e4m3(byte) * tensor_scale)

  int64_t groups_per_row() const { return group > 0 ? cols / group : 0; }
  int64_t bytes_per_row() const { return cols / 2; }
  // Bytes one full application reads (codes + per-group scales and zeros / block-scale bytes).
  uint64_t weight_bytes() const;
  // Dequantized weight (o, i): (q - z) * s, or e2m1(q) * bs (the value the reference uses).
  float weight(int64_t o, int64_t i) const;
  int code(int64_t o, int64_t i) const;  // the 4-bit code of (o, i)
};

// Build the kernel layout. `codes` [rows][cols] unpacked (one code per byte, 0..15).
// Int4: group a multiple of 16 dividing cols (16, 32, 64, 128, ...), `scales` / `zeros`
// [rows][cols / group]. NvFp4: cols % 16 == 0, `block_scales` E4M3 bytes [rows][cols / 16].
// Throws lq::Error naming `where` on bad shapes or codes.
Q4Matrix pack_int4(int64_t rows, int64_t cols, int64_t group, const uint8_t* codes, const float* scales,
                   const uint8_t* zeros, const char* where = "pack_int4");
Q4Matrix pack_nvfp4(int64_t rows, int64_t cols, const uint8_t* codes, const uint8_t* block_scales,
                    float tensor_scale, const char* where = "pack_nvfp4");

// x: [n, cols] f32, y: [n, rows] f32, bias [rows] or null; x and y must not overlap.
void q4_linear(const float* x, int64_t n, const Q4Matrix& w, const float* bias, float* y);
// Specification: w(o, i) from weight(), double accumulation, single-threaded.
void q4_linear_ref(const float* x, int64_t n, const Q4Matrix& w, const float* bias, float* y);
// Portable path (threaded), same decomposition as the SIMD path.
void q4_linear_scalar(const float* x, int64_t n, const Q4Matrix& w, const float* bias, float* y);

// Name of the path q4_linear dispatches to: "avx2" or "scalar".
const char* q4_simd_path();

}  // namespace lq::kernels
