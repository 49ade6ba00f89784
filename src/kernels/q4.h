// Fused 4-bit linear kernels: y[t, o] = sum_i x[t, i] * W[o, i] + bias[o] with W stored as 4-bit
// codes and decoded inside the dot product (never materialised in full precision).
//
// Schemes (w = the dequantized weight, codes along the input axis, groups of `group` inputs):
//   Int4:  w = (q - z) * s      q, z in 0..15, s f32 per group (asymmetric INT4, or symmetric z = 8)
//   NvFp4: w = e2m1(q) * bs     bs = e4m3(block_scale) * tensor_scale (f32, in that order), group 16
//
// Activations are quantized to int8, as llama.cpp does for its Q4 x Q8 dot products. For up to
// `q4_int8_max_tokens()` tokens, each token's input row is cut into blocks of 64 inputs and
//   d = max_i |x_i| / 127,  q_i = round_half_even(x_i * (127 / max_i |x_i|))  in [-127, 127]
// (d = NaN, q = 0 when the block holds an inf or NaN, so non-finite inputs still give NaN outputs;
// blocks with max |x| < 1e-30 count as zero). The kernels then compute the linear of x^ = q * d
// (`q8_activations` returns it) with the integer products summed exactly per 16 inputs:
//   y = sum_b d_b * sum_{h in b} ws_h * sum_{i in h} c_i q_i  -  sum_g s_g z_g * sum_{i in g} x^_i
// where c = q (Int4, ws = s) or 2 e2m1(q) in {0, +-1, +-2, +-3, +-4, +-6, +-8, +-12} (NvFp4,
// ws = bs / 2), h the 16-input pieces of activation block b. Only f32 sums of those terms round.
// |x^ - x| <= d / 2 per input (plus f32 rounding): the output error is about 0.5% RMS of the
// output for Gaussian inputs (tests/kernels/q4_test.cpp states and checks the budget). One scale
// per 64 inputs (llama.cpp's Q8_0 uses 32, its Q8_K 256) lets an INT4 g64 chunk cost one int32
// widening, one convert and one FMA per token.
// From q4_int8_max_tokens() + 1 tokens the f32 activations are used (see Paths below).
//
// Q4Matrix is the kernel layout, built once at load time from unpacked codes (quant::QTensor holds
// exactly those; the on-disk formats stay standard). Two layouts:
//  - Lanes (Int4 with group % 64 == 0: g64, g128, ... - what the quantizers write by default; and
//    NvFp4 when in_features % 64 == 0 and no block scale is negative, i.e. every real checkpoint).
//    Rows in blocks of 8 (the last block padded with code 0, scale 0); per block, the input axis in
//    steps of 8 inputs; a step is 32 bytes, byte 4 r + k holding row r's inputs 8 j + k (low nibble)
//    and 8 j + 4 + k (high nibble), k < 4. One 32-byte load, a mask and a shift give every row's
//    next 4 + 4 codes in its own 32-bit lane, so a dot product against a broadcast of 4 int8
//    activations needs no horizontal reduction, and each block is one sequential stream. Per block
//    and group: Int4 the 8 rows' scales (bf16 or f16 when every scale of the matrix is exact in it,
//    which holds for all the formats we read, else f32) and zero points (bytes); NvFp4 the 8 rows'
//    E4M3 block-scale bytes (4.5 bits per weight, like the file). NvFp4 codes multiply as
//    2 e2m1 + 12 (unsigned, one byte shuffle), the offset 12 * sum(q) is removed per 16 inputs.
//  - Rows (other Int4 groups, other NvFp4 matrices): per row, the input axis is cut into chunks of
//    64 codes packed into 32 bytes: byte j holds element j in its low nibble and element j + 32 in its high
//    nibble, so one 32-byte load, a mask and a shift give the codes of two 32-input blocks in input
//    order (the last chunk is padded with code 0). Per group the layout keeps the f32 scale and, for
//    Int4, the zero point byte; the zero point is corrected once per group and token with the group
//    sums of x^, prepared once per call. NvFp4 keeps the E4M3 block-scale bytes and a 256-entry
//    table of bs / 2 (so it streams 4.5 bits per weight, like the file).
// In the Lanes layout the zero point is folded into the integer dot product of each 64-input
// activation block (sum_i (c_i - z) q_i = sum_i c_i q_i - z sum_i q_i, exact in int32).
//
// Paths (run-time dispatch, q4_simd_path): AVX-512 VNNI for the Lanes kernels (vpdpbusd on 256-bit
// vectors; the rest as AVX2), AVX2+FMA, a portable scalar path with the same int8 decomposition,
// and `q4_linear_ref` (f32 activations, double accumulation: the specification of the weights).
// The Lanes kernels' integer sums are exact on every path, so AVX2 and AVX-512 give identical results.
// Threads split output rows (Lanes: 8-row blocks) statically (kernels::parallel_for); each output
// is computed by one thread in a fixed order, so results do not depend on num_threads().
// Up to q4_int8_max_tokens() tokens: int8 dot products (AVX2 maddubs / madd), up to 4 tokens share
// each decoded step or chunk; the int8 activations are prepared once per call. Batch 1 on the Lanes
// layout reads two blocks from distant rows side by side (two streams per core: the memory system
// of the 2-core EPYC delivers about a third more than to one stream). More tokens (W4A16): the Lanes
// codes are decoded straight into the packed panels of the dense GEMM (linear_gemm.h, any
// gemm_path(); f32 activations), one panel block at a time, so the result equals the dense f32 GEMM
// over the dequantized matrix bit for bit on the f32 paths (the AMX path rounds x and W to bf16);
// the Rows layout dequantizes blocks of 16 rows to f32 and runs kernels::linear over them.
//
// A second backend (CUDA) would take the same Q4Matrix (plain arrays, no host pointers inside
// other than the vectors) and upload it; the Lanes layout suits a warp as well (one row per lane).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/parallel.h"

namespace lq::kernels {

enum class Q4Scheme { Int4, NvFp4 };
enum class Q4Layout { Rows, Lanes };
enum class LaneScale { F32, BF16, F16 };  // how the Lanes layout stores the Int4 scales

struct Q4Matrix {
  Q4Scheme scheme = Q4Scheme::Int4;
  Q4Layout layout = Q4Layout::Rows;
  int64_t rows = 0, cols = 0;  // out, in features
  int64_t group = 0;           // inputs per scale (16 for NvFp4)
  // Rows: [rows][bytes_per_row()], 64-code chunks. Lanes: [row_blocks()][cols / 8][32] steps.
  std::vector<uint8_t> packed;
  std::vector<float> scales;          // Int4 Rows: [rows][cols / group] s
  std::vector<uint8_t> zeros;         // Int4: Rows [rows][cols / group], Lanes [row_blocks()][cols / group][8]
  std::vector<uint8_t> lane_scales;   // Int4 Lanes: [row_blocks()][cols / group][8] in lane_scale
  LaneScale lane_scale = LaneScale::F32;
  std::vector<uint8_t> block_scales;  // NvFp4: E4M3 bytes, Rows [rows][cols / 16], Lanes [row_blocks()][cols / 16][8]
  std::vector<float> scale_lut;       // NvFp4: [256] 0.5 * (e4m3(byte) * tensor_scale)
  float tensor_scale = 1.0f;          // NvFp4 (the AVX2 path decodes 8 scale bytes at once from it)

  int64_t groups_per_row() const { return group > 0 ? cols / group : 0; }
  int64_t chunks_per_row() const { return (cols + 63) / 64; }
  int64_t bytes_per_row() const { return chunks_per_row() * 32; }
  int64_t row_blocks() const { return (rows + 7) / 8; }                        // Lanes
  int64_t lane_scale_bytes() const { return lane_scale == LaneScale::F32 ? 4 : 2; }  // Lanes
  float group_scale(int64_t o, int64_t g) const;  // Int4: s of group g of row o
  int group_zero(int64_t o, int64_t g) const;     // Int4: z
  // Bytes one full application reads (codes + per-group scales and zeros / block-scale bytes).
  uint64_t weight_bytes() const;
  // Dequantized weight (o, i): (q - z) * s, or e2m1(q) * bs (the value the reference uses).
  float weight(int64_t o, int64_t i) const;
  int code(int64_t o, int64_t i) const;  // the 4-bit code of (o, i)
};

// Build the kernel layout. `codes` [rows][cols] unpacked (one code per byte, 0..15).
// Int4: group a multiple of 16 dividing cols (16, 32, 64, 128, ...; multiples of 64 get the Lanes
// layout, the others Rows), `scales` / `zeros`
// [rows][cols / group]. NvFp4: cols % 16 == 0, `block_scales` E4M3 bytes [rows][cols / 16].
// Throws lq::Error naming `where` on bad shapes or codes.
Q4Matrix pack_int4(int64_t rows, int64_t cols, int64_t group, const uint8_t* codes, const float* scales,
                   const uint8_t* zeros, const char* where = "pack_int4");
Q4Matrix pack_nvfp4(int64_t rows, int64_t cols, const uint8_t* codes, const uint8_t* block_scales,
                    float tensor_scale, const char* where = "pack_nvfp4");

// x: [n, cols] f32, y: [n, rows] f32, bias [rows] or null; x and y must not overlap.
void q4_linear(const float* x, int64_t n, const Q4Matrix& w, const float* bias, float* y);
// Specification: w(o, i) from weight(), f32 activations, double accumulation, single-threaded.
void q4_linear_ref(const float* x, int64_t n, const Q4Matrix& w, const float* bias, float* y);
// Portable path (threaded), same int8 decomposition as the SIMD path (for every n).
void q4_linear_scalar(const float* x, int64_t n, const Q4Matrix& w, const float* bias, float* y);

// The largest token count q4_linear runs with int8 activations (more tokens: f32 activations).
// Default 32; set_q4_int8_max_tokens(0) makes q4_linear use f32 activations for every batch
// (exact comparisons against dense models, accuracy studies), a negative value restores the default.
int64_t q4_int8_max_tokens();
void set_q4_int8_max_tokens(int64_t n);
// x^ = q * d, the int8 activations the fused kernels compute with (blocks of 32 inputs per token,
// see above), as f32: x [n, cols] -> xhat [n, cols]. Bit-identical to what the kernels use.
void q8_activations(const float* x, int64_t n, int64_t cols, float* xhat);

// Name of the path q4_linear dispatches to: "avx512vnni" (the Lanes kernels with AVX-512 VNNI's
// vpdpbusd, 256-bit; the rest as AVX2), "avx2", "avx2-vnni" (AVX2 running the VNNI kernels'
// formulation, for tests) or "scalar". All give identical results on the Lanes layout.
const char* q4_simd_path();
// Tests and benchmarks: force one of those paths (lq::Error if this CPU cannot run it); "" restores
// the best available. Not meant to change while q4_linear runs on another thread.
void set_q4_simd_path(const std::string& path);

}  // namespace lq::kernels
