// Fused 4-bit linear kernels (layout and math: q4.h).
//
// int8 path (up to q4_int8_max_tokens() tokens). The activations are quantized once per call
// (Q8Acts: int8 values, one f32 scale per 64 inputs = one chunk). AVX2 micro-kernels:
//  - Lanes layout (Int4 g64k, NvFp4): lanes_dots / nvfp4_lanes_dots (q4_lanes.inc), 8 rows per
//    vector (one per 32-bit lane), NT <= 4 tokens per decoded step, S = 2 blocks side by side at
//    batch 1. Integer sums stay in int16 for a few steps (AVX2) or int32 (VNNI), then int32 per
//    scale group; no horizontal reductions.
//  - Rows layout, per output row and block of NT <= 4 tokens: a 32-byte load of a 64-code chunk
//    gives, after a mask and a shift, the codes of its two 32-input blocks as bytes in input order.
//    NvFp4 codes become 2 e2m1 in int8 through a 16-entry byte shuffle; `maddubs` takes their
//    magnitudes and the activations take their sign (`sign_epi8`). Each block's int32 lanes
//    (lanes 0-3: its first 16 inputs, 4-7: the second 16, i.e. one E4M3 group each) are converted
//    and scaled by the group scales, decoded 8 at a time with F16C; then by the activation scale.
//    Int4 groups 16, 32, 48, ... use the same structure with per-16-input scales and a per-group
//    zero-point term s z sum(x^) computed with 8 groups per vector after the row.
//
// Batches above q4_int8_max_tokens(): the Lanes layout is a panel source of the dense GEMM
// (pack_lanes_panel, W4A16); the Rows layout dequantizes 16-row blocks to f32 once per call and reuses
// the dense f32 GEMM (kernels::linear) over them.
#include "kernels/q4.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define LQ_X86 1
#endif

#include "io/error.h"
#include "kernels/linear.h"
#include "kernels/linear_gemm.h"
#include "kernels/q8.h"
#include "num/formats.h"

namespace lq::kernels {

namespace {

constexpr int64_t kChunk = 64;  // codes per packed chunk (32 bytes): byte j = element j | element j + 32 << 4
constexpr int64_t kActBlock = 64;  // inputs per activation block (one int8 scale): one chunk
constexpr int64_t kBlock = 32;  // inputs per code block (one 32-byte vector of codes: half a chunk)
constexpr int64_t kHalf = 16;   // inputs per 128-bit lane of a code block (the finest weight group)
constexpr int64_t kLaneRows = 8;    // Lanes layout: rows per block (one per 32-bit lane)
constexpr int64_t kStep = 8;        // Lanes layout: inputs per step
constexpr int64_t kStepBytes = 32;  // Lanes layout: bytes per step (8 rows x 4 bytes)

// Token counts up to this use int8 activations; above, the dequantized blocks + dense f32 GEMM.
// Measured on a 2-core AVX2 EPYC (lance-quant bench kernels): the int8 path is faster up to here.
constexpr int64_t kInt8MaxTokensDefault = 32;
std::atomic<int64_t> g_int8_max_tokens{kInt8MaxTokensDefault};

// Activation blocks whose largest magnitude is below this count as zero (their scale 127 / amax
// would overflow f32); the error this adds is below 1e-30 per input.
constexpr float kTinyBlock = 1e-30f;

// 2 * e2m1(code): the sign is bit 3, magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6} doubled to integers.
constexpr int8_t kTwiceE2m1[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

void check_codes(int64_t rows, int64_t cols, const uint8_t* codes, const char* where) {
  uint8_t any = 0;  // a branch-free pass first (load time): the message search only on failure
  for (int64_t k = 0; k < rows * cols; ++k) any |= codes[k];
  if (any <= 15) return;
  for (int64_t k = 0; k < rows * cols; ++k)
    if (codes[k] > 15)
      fail(where, "code " + std::to_string(codes[k]) + " at row " + std::to_string(k / cols) + ", column " +
                      std::to_string(k % cols) + " does not fit 4 bits");
}

void check_shape(int64_t rows, int64_t cols, int64_t group, const char* where) {
  if (rows < 0 || cols < 0) fail(where, "negative shape");
  if (cols % 16 != 0) fail(where, "in_features " + std::to_string(cols) + " is not a multiple of 16");
  if (group < 16 || group % 16 != 0 || (cols > 0 && cols % group != 0))
    fail(where, "group " + std::to_string(group) + " must be a multiple of 16 dividing in_features " +
                    std::to_string(cols));
}

// Packs unpacked codes row by row into the 64-code chunk layout of q4.h (tail padded with code 0).
std::vector<uint8_t> pack_codes(int64_t rows, int64_t cols, const uint8_t* codes) {
  const int64_t row_bytes = (cols + kChunk - 1) / kChunk * (kChunk / 2);
  std::vector<uint8_t> packed(size_t(rows * row_bytes), 0);
  for (int64_t o = 0; o < rows; ++o) {
    const uint8_t* src = codes + o * cols;
    uint8_t* dst = packed.data() + o * row_bytes;
    for (int64_t i = 0; i < cols; ++i) {
      const int64_t base = i / kChunk * kChunk, k = i - base;
      dst[base / 2 + k % (kChunk / 2)] |= uint8_t(k < kChunk / 2 ? src[i] : src[i] << 4);
    }
  }
  return packed;
}

// Index of (row o, group g) in the per-group arrays: [rows][G] (Rows) or [blocks][G][8] (Lanes).
size_t group_index(const Q4Matrix& w, int64_t o, int64_t g) {
  const int64_t G = w.groups_per_row();
  if (w.layout == Q4Layout::Rows) return size_t(o * G + g);
  return size_t((o / kLaneRows * G + g) * kLaneRows + o % kLaneRows);
}

// Packs unpacked codes into the Lanes layout of q4.h (cols % 8 == 0; the last block's missing
// rows padded with code 0). Blocks are independent: packed in parallel (load time).
std::vector<uint8_t> pack_lanes(int64_t rows, int64_t cols, const uint8_t* codes) {
  const int64_t blocks = (rows + kLaneRows - 1) / kLaneRows, block_bytes = cols * 4;
  std::vector<uint8_t> packed(size_t(blocks * block_bytes), 0);
  parallel_for(blocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t r = 0; r < kLaneRows && b * kLaneRows + r < rows; ++r) {
        const uint8_t* src = codes + (b * kLaneRows + r) * cols;
        uint8_t* dst = packed.data() + b * block_bytes + 4 * r;
        for (int64_t j = 0; j < cols / kStep; ++j, src += kStep, dst += kStepBytes) {
          uint64_t v;  // the step's 8 codes (little-endian): bytes 0-3 low nibbles, 4-7 high nibbles
          std::memcpy(&v, src, 8);
          const uint32_t four = uint32_t(v) | uint32_t(v >> 32) << 4;  // codes <= 15: no carries
          std::memcpy(dst, &four, 4);
        }
      }
  });
  return packed;
}

// The narrowest Lanes scale storage that holds every scale exactly (bf16, then f16, else f32).
LaneScale lane_scale_for(const float* scales, size_t n) {
  if (num::all_exact_in_bf16(scales, n)) return LaneScale::BF16;
  for (size_t k = 0; k < n; ++k)
    if (num::f16_to_f32(num::f32_to_f16(scales[k])) != scales[k]) return LaneScale::F32;
  return LaneScale::F16;
}

// Scales and zero points [rows][G] into the Lanes order [blocks][G][8] (padding rows: 0).
void pack_lane_groups(Q4Matrix& m, const float* scales, const uint8_t* zeros) {
  const int64_t G = m.groups_per_row(), blocks = m.row_blocks();
  const size_t ng = size_t(m.rows * G);
  m.lane_scale = lane_scale_for(scales, ng);
  const int64_t sb = m.lane_scale_bytes();
  m.lane_scales.assign(size_t(blocks * G * kLaneRows * sb), 0);
  m.zeros.assign(size_t(blocks * G * kLaneRows), 0);
  for (int64_t o = 0; o < m.rows; ++o)
    for (int64_t g = 0; g < G; ++g) {
      const size_t k = group_index(m, o, g);
      const float v = scales[o * G + g];
      m.zeros[k] = zeros[o * G + g];
      uint8_t* dst = m.lane_scales.data() + k * size_t(sb);
      if (m.lane_scale == LaneScale::F32) {
        std::memcpy(dst, &v, 4);
      } else {
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        const uint16_t h = m.lane_scale == LaneScale::BF16 ? uint16_t(bits >> 16) : num::f32_to_f16(v);  // both exact
        std::memcpy(dst, &h, 2);
      }
    }
}

void validate_call(const float* x, int64_t n, const Q4Matrix& w, const float* y) {
  if (n < 0) fail("q4_linear", "negative token count " + std::to_string(n));
  if (n > 0 && w.cols > 0 && !x) fail("q4_linear", "input x is null");
  if (n > 0 && w.rows > 0 && !y) fail("q4_linear", "output y is null");
  const int64_t ng = w.rows * w.groups_per_row(), lane_ng = w.row_blocks() * kLaneRows * w.groups_per_row();
  const bool lanes = w.layout == Q4Layout::Lanes;
  const bool int4_ok = lanes ? w.group % kChunk == 0 && int64_t(w.zeros.size()) == lane_ng &&
                                   int64_t(w.lane_scales.size()) == lane_ng * w.lane_scale_bytes()
                             : int64_t(w.scales.size()) == ng && int64_t(w.zeros.size()) == ng;
  const bool nvfp4_ok = w.group == 16 && int64_t(w.block_scales.size()) == (lanes ? lane_ng : ng) &&
                        w.scale_lut.size() == 256 && (!lanes || w.cols % kChunk == 0);
  const int64_t code_bytes = lanes ? w.row_blocks() * w.cols * 4 : w.rows * w.bytes_per_row();
  if (int64_t(w.packed.size()) != code_bytes || !(w.scheme == Q4Scheme::Int4 ? int4_ok : nvfp4_ok))
    fail("q4_linear", "inconsistent Q4Matrix (built outside pack_int4 / pack_nvfp4?)");
}

// Work below this many multiply-adds stays on the calling thread.
constexpr int64_t kMinParallelMacs = 1 << 16;

template <class F>
void for_row_ranges(int64_t n, const Q4Matrix& w, F&& fn) {
  const int64_t macs = n * w.rows * w.cols;
  const int64_t grain = macs < kMinParallelMacs ? std::max<int64_t>(w.rows, 1) : 4;
  parallel_for(w.rows, grain, fn);
}

// ---- int8 activations ---------------------------------------------------------------------

struct Q8Acts {
  int64_t n = 0, cols = 0;
  int64_t stride = 0;       // int8 values per token: cols padded to whole chunks (zeros)
  int64_t blocks = 0;       // stride / kActBlock
  std::vector<int8_t> q;    // [n][stride]
  std::vector<float> d;     // [n][blocks]
  std::vector<float> xs;    // Int4 Rows only: [n][groups] sum_{i in g} x^_i
  std::vector<int32_t> qs;  // Lanes only: [n][qs_stride] sums of the int8 values per 64 (Int4) / 16 (NvFp4) inputs
  int64_t qs_stride = 0;
};

Q8Acts q8_layout(int64_t n, int64_t cols) {
  Q8Acts a;
  a.n = n;
  a.cols = cols;
  a.stride = (cols + kChunk - 1) / kChunk * kChunk;
  a.blocks = a.stride / kActBlock;
  a.q.assign(size_t(n * a.stride), 0);
  a.d.assign(size_t(n * a.blocks), 0.0f);
  return a;
}

// One block of `len` <= 64 inputs (the rest of q stays 0). The definition in q4.h; the AVX2
// version below computes bit-identical values (max is exact, one f32 multiply, round half even).
void quantize_block_scalar(const float* x, int64_t len, int8_t* q, float* d) {
  float amax = 0.0f;
  bool finite = true;
  for (int64_t i = 0; i < len; ++i) {
    finite = finite && std::isfinite(x[i]);
    amax = std::max(amax, std::fabs(x[i]));
  }
  if (!finite) {
    *d = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  if (amax < kTinyBlock) {
    *d = 0.0f;
    return;
  }
  const float inv = 127.0f / amax;
  for (int64_t i = 0; i < len; ++i) q[i] = int8_t(std::nearbyint(x[i] * inv));
  *d = amax / 127.0f;
}

// Group sums of x^ for the Int4 zero point: per 16-input half, d * (exact int sum of q), summed
// over the halves of the group in input order.
void group_sums(Q8Acts& a, int64_t group) {
  const int64_t G = a.cols / group;
  a.xs.assign(size_t(a.n * G), 0.0f);
  for (int64_t t = 0; t < a.n; ++t)
    for (int64_t g = 0; g < G; ++g) {
      float s = 0.0f;
      for (int64_t h = g * group; h < (g + 1) * group; h += kHalf) {
        const int8_t* q = a.q.data() + t * a.stride + h;
        int qs = 0;
        for (int64_t i = 0; i < kHalf; ++i) qs += q[i];
        s += a.d[size_t(t * a.blocks + h / kActBlock)] * float(qs);
      }
      a.xs[size_t(t * G + g)] = s;
    }
}

// Exact sums of the int8 values per `width` inputs (the Lanes kernels' zero-point / offset terms).
void block_sums(Q8Acts& a, int64_t width) {
  a.qs_stride = a.stride / width;
  a.qs.assign(size_t(a.n * a.qs_stride), 0);
  for (int64_t t = 0; t < a.n; ++t)
    for (int64_t b = 0; b < a.qs_stride; ++b) {
      const int8_t* q = a.q.data() + t * a.stride + b * width;
      int32_t s = 0;
      for (int64_t i = 0; i < width; ++i) s += q[i];
      a.qs[size_t(t * a.qs_stride + b)] = s;
    }
}

// What a matrix's kernels need beyond the int8 values: Int4 Rows the group sums of x^, Lanes the
// int8 sums per activation block (Int4) or per 16-input scale group (NvFp4).
void prepare_activations(Q8Acts& a, const Q4Matrix& w) {
  if (w.layout == Q4Layout::Lanes)
    block_sums(a, w.scheme == Q4Scheme::Int4 ? kActBlock : kHalf);
  else if (w.scheme == Q4Scheme::Int4)
    group_sums(a, w.group);
}

Q8Acts quantize_scalar(const float* x, int64_t n, int64_t cols) {
  Q8Acts a = q8_layout(n, cols);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t b = 0; b * kActBlock < cols; ++b)
      quantize_block_scalar(x + t * cols + b * kActBlock, std::min(kActBlock, cols - b * kActBlock),
                            a.q.data() + t * a.stride + b * kActBlock, a.d.data() + t * a.blocks + b);
  return a;
}

// ---- scalar path --------------------------------------------------------------------------

// The f32 scale of the half-block group holding input i of row o: s (Int4) or bs / 2 (NvFp4).
inline float half_scale(const Q4Matrix& w, int64_t o, int64_t i) {
  if (w.scheme == Q4Scheme::Int4) return w.group_scale(o, i / w.group);
  return w.scale_lut[w.block_scales[group_index(w, o, i / w.group)]];
}

// The integer multiplier of code q: q itself (Int4) or 2 e2m1(q) (NvFp4).
inline int code_value(const Q4Matrix& w, int q) { return w.scheme == Q4Scheme::Int4 ? q : kTwiceE2m1[q]; }

// sum_g (s_g z_g) * xs_g of row o for one token (zero when the scheme has no zero points).
float zero_correction_scalar(const Q4Matrix& w, int64_t o, const float* xs_t) {
  if (w.scheme != Q4Scheme::Int4) return 0.0f;
  float c = 0.0f;
  for (int64_t g = 0; g < w.groups_per_row(); ++g) c += (w.group_scale(o, g) * float(w.group_zero(o, g))) * xs_t[g];
  return c;
}

// Per activation block: sum over its 16-input halves of float(exact int dot) * weight scale, then
// times the activation scale (the order of the SIMD path, up to its lane-wise summation).
void scalar_rows(const Q8Acts& a, const Q4Matrix& w, const float* bias, float* y, int64_t r0, int64_t r1) {
  for (int64_t o = r0; o < r1; ++o)
    for (int64_t t = 0; t < a.n; ++t) {
      float acc = 0.0f;
      for (int64_t b = 0; b * kActBlock < w.cols; ++b) {
        float block = 0.0f;
        for (int64_t h = b * kActBlock; h < std::min(w.cols, (b + 1) * kActBlock); h += kHalf) {
          const int8_t* q = a.q.data() + t * a.stride + h;
          int dot = 0;
          for (int64_t i = 0; i < kHalf; ++i) dot += code_value(w, w.code(o, h + i)) * q[i];
          block += float(dot) * half_scale(w, o, h);
        }
        acc += block * a.d[size_t(t * a.blocks + b)];
      }
      const float corr = w.scheme == Q4Scheme::Int4 ? zero_correction_scalar(w, o, a.xs.data() + t * w.groups_per_row()) : 0.0f;
      y[t * w.rows + o] = acc - corr + (bias ? bias[o] : 0.0f);
    }
}

// ---- AVX2 path ----------------------------------------------------------------------------

#if LQ_X86
#define LQ_AVX2 __attribute__((target("avx2,fma,f16c")))

LQ_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

LQ_AVX2 inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// quantize_block_scalar for a full block of 64 inputs.
LQ_AVX2 void quantize_block_avx2(const float* x, int8_t* q, float* d) {
  const __m256 sign = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
  __m256 v[8], amax = zero, nonfinite = zero;
  for (int k = 0; k < 8; ++k) {
    v[k] = _mm256_loadu_ps(x + 8 * k);
    amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[k]));
    nonfinite = _mm256_add_ps(nonfinite, _mm256_mul_ps(v[k], zero));  // NaN iff an inf or NaN was seen
  }
  if (_mm256_movemask_ps(_mm256_cmp_ps(nonfinite, nonfinite, _CMP_UNORD_Q))) {
    *d = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  const float m = hmax(amax);
  if (m < kTinyBlock) {
    *d = 0.0f;
    return;
  }
  const __m256 inv = _mm256_set1_ps(127.0f / m);
  __m256i i[8];
  for (int k = 0; k < 8; ++k) i[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], inv));  // round half even
  // Pack 32-bit -> 16 -> 8 (no saturation occurs: |q| <= 127); the packs interleave 128-bit lanes,
  // the final permute restores input order.
  for (int h = 0; h < 2; ++h) {
    const __m256i w16a = _mm256_packs_epi32(i[4 * h], i[4 * h + 1]), w16b = _mm256_packs_epi32(i[4 * h + 2], i[4 * h + 3]);
    const __m256i b8 = _mm256_packs_epi16(w16a, w16b);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 32 * h),
                        _mm256_permutevar8x32_epi32(b8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
  *d = m / 127.0f;
}

Q8Acts quantize_avx2(const float* x, int64_t n, int64_t cols) {
  Q8Acts a = q8_layout(n, cols);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t b = 0; b * kActBlock < cols; ++b) {
      const float* xb = x + t * cols + b * kActBlock;
      int8_t* q = a.q.data() + t * a.stride + b * kActBlock;
      float* d = a.d.data() + t * a.blocks + b;
      if (cols - b * kActBlock >= kActBlock)
        quantize_block_avx2(xb, q, d);
      else
        quantize_block_scalar(xb, cols - b * kActBlock, q, d);  // a final partial block (cols % 64 != 0)
    }
  return a;
}

// Walks the weight groups of a row in steps of `step` inputs: next() returns the group of the
// current step and advances (no integer division in the inner loop). Steps past the last group
// (the padded tail) keep returning the last group; their products are zero.
struct GroupCursor {
  int64_t g = 0, left, per, last;
  GroupCursor(int64_t group, int64_t step, int64_t groups) : left(group / step), per(group / step), last(groups - 1) {}
  int64_t next() {
    const int64_t r = std::min(g, last);
    if (--left == 0) {
      ++g;
      left = per;
    }
    return r;
  }
};

// The int8 dot products of one 32-input code block with NT tokens' activations, as 8 int32 lanes
// (lanes 0-3: inputs 0-15, lanes 4-7: inputs 16-31) converted to f32. Int4: the codes are the
// unsigned multipliers. NvFp4: `val` holds 2 e2m1 (signed), its magnitudes multiply and the
// activations take its sign.
template <Q4Scheme S>
LQ_AVX2 inline __m256i block_dot(__m256i mag, __m256i val, const int8_t* xq) {
  __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
  if constexpr (S == Q4Scheme::NvFp4) x = _mm256_sign_epi8(x, val);
  return _mm256_madd_epi16(_mm256_maddubs_epi16(mag, x), _mm256_set1_epi16(1));
}

// Software prefetch distances of the row kernels. Rows are read side by side (a block of rows, or
// one row for several tokens) and the hardware prefetcher alone left batch-1 decoding at about
// 60% of the read bandwidth on the 2-core EPYC; prefetching a few rows ahead fixed that.
constexpr int64_t kPrefetchRows = 3;    // code streams: this many rows ahead of each row read
constexpr int64_t kPrefetchScales = 4;  // scale and zero-point streams: this many rows ahead

// Per chunk and token: (f_lo * ws_lo + f_hi * ws_hi) * d, with ws the 8-lane weight scales of each
// code block (per 16-input lane half) and d the chunk's activation scale.
template <Q4Scheme S, int NT>
LQ_AVX2 inline void chunk_step(__m256i lo, __m256i hi, __m256 ws_lo, __m256 ws_hi, const int8_t* const* xq,
                               const float* const* d, int64_t chunk, __m256* total) {
  __m256i mlo = lo, mhi = hi;
  if constexpr (S == Q4Scheme::NvFp4) {
    const __m256i table = _mm256_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12,  //
                                           0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    lo = _mm256_shuffle_epi8(table, lo);
    hi = _mm256_shuffle_epi8(table, hi);
    mlo = _mm256_abs_epi8(lo);
    mhi = _mm256_abs_epi8(hi);
  }
  for (int t = 0; t < NT; ++t) {
    const int8_t* x = xq[t] + chunk * kChunk;
    const __m256 f_lo = _mm256_cvtepi32_ps(block_dot<S>(mlo, lo, x));
    const __m256 f_hi = _mm256_cvtepi32_ps(block_dot<S>(mhi, hi, x + kBlock));
    const __m256 c = _mm256_fmadd_ps(f_hi, ws_hi, _mm256_mul_ps(f_lo, ws_lo));
    total[t] = _mm256_fmadd_ps(c, _mm256_broadcast_ss(d[t] + chunk), total[t]);
  }
}

// Int4 with other groups (16, 32, 48, ...): each 16-input half finds its group through a cursor.
template <int NT>
LQ_AVX2 void int4_row_dots_halves(const Q4Matrix& w, const Q8Acts& a, int64_t o, int64_t t0, float* out) {
  const __m256i low4 = _mm256_set1_epi8(15);
  const uint8_t* p = w.packed.data() + o * w.bytes_per_row();
  const int64_t G = w.groups_per_row();
  const float* s = w.scales.data() + o * G;
  GroupCursor cur(w.group, kHalf, G);
  const int8_t* xq[NT];
  const float* d[NT];
  __m256 total[NT];
  for (int t = 0; t < NT; ++t) {
    xq[t] = a.q.data() + (t0 + t) * a.stride;
    d[t] = a.d.data() + (t0 + t) * a.blocks;
    total[t] = _mm256_setzero_ps();
  }
  auto block_scales = [&]() LQ_AVX2 {
    const float first = s[cur.next()], second = s[cur.next()];
    return _mm256_set_m128(_mm_set1_ps(second), _mm_set1_ps(first));
  };
  for (int64_t c = 0; c < w.chunks_per_row(); ++c) {  // the padded tail multiplies zeros
    const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + c * (kChunk / 2)));
    const __m256 ws_lo = block_scales(), ws_hi = block_scales();
    chunk_step<Q4Scheme::Int4, NT>(_mm256_and_si256(bytes, low4), _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4),
                                   ws_lo, ws_hi, xq, d, c, total);
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(total[t]);
}

// NvFp4: spans of 128 inputs (two chunks, eight 16-input groups). The span's eight E4M3 scale
// bytes become f32 in one step: (byte & 0x7f) << 7 read as an f16 is exactly e4m3(byte) * 2^-8
// (both formats' subnormals included), so cvtph and one multiply by tensor_scale * 2^7 give bs / 2,
// the value of scale_lut. Permutes spread them over the lane halves.
template <int NT>
LQ_AVX2 void nvfp4_row_dots(const Q4Matrix& w, const Q8Acts& a, int64_t o, int64_t t0, float* out) {
  const __m256i low4 = _mm256_set1_epi8(15);
  const uint8_t* p = w.packed.data() + o * w.bytes_per_row();
  const int64_t G = w.groups_per_row(), chunks = w.chunks_per_row();
  const uint8_t* bs = w.block_scales.data() + o * G;
  const __m256 tscale = _mm256_set1_ps(w.tensor_scale * 128.0f);
  const int8_t* xq[NT];
  const float* d[NT];
  __m256 even[NT], odd[NT];  // accumulators of even / odd chunks (one set when NT > 2)
  __m256* const second = NT <= 2 ? odd : even;
  for (int t = 0; t < NT; ++t) {
    xq[t] = a.q.data() + (t0 + t) * a.stride;
    d[t] = a.d.data() + (t0 + t) * a.blocks;
    even[t] = odd[t] = _mm256_setzero_ps();
  }
  auto span_scales = [&](uint64_t raw) LQ_AVX2 {
    const __m128i b16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(int64_t(raw)));
    const __m128i h = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(b16, _mm_set1_epi16(0x7f)), 7),
                                   _mm_slli_epi16(_mm_and_si128(b16, _mm_set1_epi16(0x80)), 8));
    return _mm256_mul_ps(_mm256_cvtph_ps(h), tscale);
  };
  const __m256i idx0 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), two = _mm256_set1_epi32(2);
  const __m256i idx1 = _mm256_add_epi32(idx0, two), idx2 = _mm256_add_epi32(idx1, two),
                idx3 = _mm256_add_epi32(idx2, two);
  auto chunk = [&](int64_t c, __m256 ws_lo, __m256 ws_hi, __m256* total) LQ_AVX2 {
    const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + c * (kChunk / 2)));
    chunk_step<Q4Scheme::NvFp4, NT>(_mm256_and_si256(bytes, low4), _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4),
                                    ws_lo, ws_hi, xq, d, c, total);
  };
  const int64_t pf = kPrefetchRows * w.bytes_per_row();
  int64_t g0 = 0;
  for (; g0 + 8 <= G; g0 += 8) {  // full spans: groups [g0, g0 + 8) = chunks g0 / 4, g0 / 4 + 1
    _mm_prefetch(reinterpret_cast<const char*>(p + g0 * 8 + pf), _MM_HINT_T0);  // 8 bytes of codes per group
    if ((g0 & 63) == 0) _mm_prefetch(reinterpret_cast<const char*>(bs + g0 + kPrefetchScales * G), _MM_HINT_T0);
    uint64_t raw;
    std::memcpy(&raw, bs + g0, 8);
    const __m256 scales = span_scales(raw);
    chunk(g0 / 4, _mm256_permutevar8x32_ps(scales, idx0), _mm256_permutevar8x32_ps(scales, idx1), even);
    chunk(g0 / 4 + 1, _mm256_permutevar8x32_ps(scales, idx2), _mm256_permutevar8x32_ps(scales, idx3), second);
  }
  if (g0 < G) {  // a short last span (cols % 128 != 0): missing scale bytes read as zero
    uint64_t raw = 0;
    std::memcpy(&raw, bs + g0, size_t(G - g0));
    const __m256 scales = span_scales(raw);
    chunk(g0 / 4, _mm256_permutevar8x32_ps(scales, idx0), _mm256_permutevar8x32_ps(scales, idx1), even);
    if (g0 / 4 + 1 < chunks)
      chunk(g0 / 4 + 1, _mm256_permutevar8x32_ps(scales, idx2), _mm256_permutevar8x32_ps(scales, idx3), second);
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(NT <= 2 ? _mm256_add_ps(even[t], odd[t]) : even[t]);
}

// Which row kernel a Rows-layout matrix uses.
enum class RowKernel { Int4Halves, NvFp4 };

template <RowKernel K, int NT>
LQ_AVX2 void row_dots_of(const Q4Matrix& w, const Q8Acts& a, int64_t o, int64_t t0, float* out) {
  if constexpr (K == RowKernel::Int4Halves) int4_row_dots_halves<NT>(w, a, o, t0, out);
  if constexpr (K == RowKernel::NvFp4) nvfp4_row_dots<NT>(w, a, o, t0, out);
}

// zero_correction_scalar with 8 groups per vector (the tail scalar).
LQ_AVX2 float zero_correction_avx2(const Q4Matrix& w, int64_t o, const float* xs_t) {
  const int64_t G = w.groups_per_row();
  const float* s = w.scales.data() + o * G;
  const uint8_t* z = w.zeros.data() + o * G;
  __m256 acc = _mm256_setzero_ps();
  int64_t g = 0;
  for (; g + 8 <= G; g += 8) {
    const __m256 zf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(z + g))));
    acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(s + g), zf), _mm256_loadu_ps(xs_t + g), acc);
  }
  float c = hsum(acc);
  for (; g < G; ++g) c += (s[g] * float(z[g])) * xs_t[g];
  return c;
}

template <RowKernel K>
LQ_AVX2 void int8_rows(const Q8Acts& a, const Q4Matrix& w, const float* bias, float* y, int64_t r0, int64_t r1) {
  constexpr bool kInt4 = K != RowKernel::NvFp4;
  const int64_t G = w.groups_per_row();
  float dots[4];
  for (int64_t o = r0; o < r1; ++o) {
    for (int64_t t = 0; t < a.n; t += 4) {
      const int64_t nt = std::min<int64_t>(4, a.n - t);
      if (nt == 4) row_dots_of<K, 4>(w, a, o, t, dots);
      if (nt == 3) row_dots_of<K, 3>(w, a, o, t, dots);
      if (nt == 2) row_dots_of<K, 2>(w, a, o, t, dots);
      if (nt == 1) row_dots_of<K, 1>(w, a, o, t, dots);
      for (int64_t k = 0; k < nt; ++k) {
        const float corr = kInt4 ? zero_correction_avx2(w, o, a.xs.data() + (t + k) * G) : 0.0f;
        y[(t + k) * w.rows + o] = dots[k] - corr + (bias ? bias[o] : 0.0f);
      }
    }
  }
}

void int8_rows_dispatch(const Q8Acts& a, const Q4Matrix& w, const float* bias, float* y, int64_t r0, int64_t r1) {
  if (w.scheme == Q4Scheme::NvFp4) return int8_rows<RowKernel::NvFp4>(a, w, bias, y, r0, r1);
  return int8_rows<RowKernel::Int4Halves>(a, w, bias, y, r0, r1);
}

// ---- Lanes layout kernels, one instantiation per instruction set (q4_lanes.inc) -------------------

namespace avx2_lanes {
#define LQ_LANES_TARGET __attribute__((target("avx2,fma,f16c")))
// maddubs (pairs summed in int16) + madd with ones: int16 accumulation for up to 4 steps.
struct MaddDot {
  LQ_LANES_TARGET static __m256i step(__m256i acc, __m256i a, __m256i x) {
    return _mm256_add_epi16(acc, _mm256_maddubs_epi16(a, x));
  }
  LQ_LANES_TARGET static __m256i widen(__m256i acc) { return _mm256_madd_epi16(acc, _mm256_set1_epi16(1)); }
};
// VnniDot's formulation (int32 accumulation every step) on AVX2: exact for codes <= 128, where
// maddubs cannot saturate. It runs the AVX-512 VNNI instantiation's exact computation on machines
// without AVX-512, so the tests check that code path everywhere (set_q4_simd_path).
struct VnniEmulatedDot {
  LQ_LANES_TARGET static __m256i step(__m256i acc, __m256i a, __m256i x) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, x), _mm256_set1_epi16(1)));
  }
  LQ_LANES_TARGET static __m256i widen(__m256i acc) { return acc; }
};
#include "kernels/q4_lanes.inc"
#undef LQ_LANES_TARGET
}  // namespace avx2_lanes

namespace avx512_lanes {
#define LQ_LANES_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
// AVX-512 VNNI (256-bit, VL): vpdpbusd adds the four u8 x s8 products of each lane to int32.
struct VnniDot {
  LQ_LANES_TARGET static __m256i step(__m256i acc, __m256i a, __m256i x) { return _mm256_dpbusd_epi32(acc, a, x); }
  LQ_LANES_TARGET static __m256i widen(__m256i acc) { return acc; }
};
#include "kernels/q4_lanes.inc"
#undef LQ_LANES_TARGET
}  // namespace avx512_lanes

// Block b's 8 rows dequantized to f32 into dst [8][cols] (padded rows come out as zeros):
// (q - z) * s as q * s - s * z, exact for bf16 / f16 scales.
// NvFp4: 2 e2m1 * (bs / 2) per weight, bs / 2 from scale_lut (as Q4Matrix::weight). A step's 64
// codes become 2 e2m1 in int8 through one byte shuffle per nibble half.
LQ_AVX2 void dequantize_lanes_nvfp4(const Q4Matrix& w, int64_t b, float* dst) {
  const int64_t G = w.groups_per_row();
  const uint8_t* p = w.packed.data() + b * w.cols * 4;
  const uint8_t* bs = w.block_scales.data() + b * G * kLaneRows;
  const __m256i low4 = _mm256_set1_epi8(15);
  const __m256i table = _mm256_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12,  //
                                         0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
  alignas(32) int8_t lo[32], hi[32];
  for (int64_t j = 0; j < w.cols / kStep; ++j, p += kStepBytes) {
    const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    _mm256_store_si256(reinterpret_cast<__m256i*>(lo), _mm256_shuffle_epi8(table, _mm256_and_si256(bytes, low4)));
    _mm256_store_si256(reinterpret_cast<__m256i*>(hi),
                       _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4)));
    for (int64_t r = 0; r < kLaneRows; ++r) {
      uint32_t l, h;
      std::memcpy(&l, lo + 4 * r, 4);
      std::memcpy(&h, hi + 4 * r, 4);
      const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(int64_t(uint64_t(l) | uint64_t(h) << 32))));
      _mm256_storeu_ps(dst + r * w.cols + j * kStep, _mm256_mul_ps(v, _mm256_set1_ps(w.scale_lut[bs[j / 2 * kLaneRows + r]])));
    }
  }
}

LQ_AVX2 void dequantize_lanes(const Q4Matrix& w, int64_t b, float* dst) {
  if (w.scheme == Q4Scheme::NvFp4) return dequantize_lanes_nvfp4(w, b, dst);
  const int64_t G = w.groups_per_row(), steps = w.group / kStep;
  const uint8_t* p = w.packed.data() + b * w.cols * 4;
  const uint8_t* z = w.zeros.data() + b * G * kLaneRows;
  alignas(32) float s[kLaneRows], sz[kLaneRows];
  for (int64_t g = 0; g < G; ++g) {
    const __m256 sc = avx2_lanes::lane_scales8(w, b, g);
    const __m256 zf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(z + g * kLaneRows))));
    _mm256_store_ps(s, sc);
    _mm256_store_ps(sz, _mm256_mul_ps(sc, zf));
    for (int64_t j = g * steps; j < (g + 1) * steps; ++j, p += kStepBytes)
      for (int64_t r = 0; r < kLaneRows; ++r) {
        uint32_t v;
        std::memcpy(&v, p + 4 * r, 4);
        const uint64_t codes = uint64_t(v & 0x0f0f0f0fu) | uint64_t((v >> 4) & 0x0f0f0f0fu) << 32;  // input order
        const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(int64_t(codes))));
        _mm256_storeu_ps(dst + r * w.cols + j * kStep, _mm256_sub_ps(_mm256_mul_ps(q, _mm256_set1_ps(s[r])), _mm256_set1_ps(sz[r])));
      }
  }
}

// Rows [r0, r1) dequantized to f32 into dst ([r1 - r0][cols]): (q - z) * s computed as q * s - s * z
// (exact for bf16 / f16 scales, one rounding for f32 scales), or 2 e2m1 * (bs / 2).
template <Q4Scheme S>
LQ_AVX2 void dequantize_block(const Q4Matrix& w, int64_t r0, int64_t r1, float* dst) {
  const int64_t cols = w.cols, G = w.groups_per_row();
  const __m256i low4 = _mm256_set1_epi8(15);
  alignas(32) uint8_t codes[kChunk];
  for (int64_t o = r0; o < r1; ++o) {
    const uint8_t* p = w.packed.data() + o * w.bytes_per_row();
    float* d = dst + (o - r0) * cols;
    GroupCursor cur(w.group, 8, G);
    for (int64_t base = 0; base < cols; base += kChunk) {
      const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + base / 2));
      _mm256_store_si256(reinterpret_cast<__m256i*>(codes), _mm256_and_si256(bytes, low4));
      _mm256_store_si256(reinterpret_cast<__m256i*>(codes + 32), _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4));
      for (int64_t k = 0; k < kChunk && base + k < cols; k += 8) {
        const size_t g = size_t(o * G + cur.next());
        const __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + k)));
        __m256 v;
        if constexpr (S == Q4Scheme::Int4) {
          const float s = w.scales[g];
          v = _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(s)), _mm256_set1_ps(s * float(w.zeros[g])));
        } else {
          const __m256 pos = _mm256_setr_ps(0, 1, 2, 3, 4, 6, 8, 12);
          const __m256 neg = _mm256_setr_ps(-0.0f, -1, -2, -3, -4, -6, -8, -12);
          const __m256 e = _mm256_blendv_ps(_mm256_permutevar8x32_ps(pos, q), _mm256_permutevar8x32_ps(neg, q),
                                            _mm256_castsi256_ps(_mm256_slli_epi32(q, 28)));
          v = _mm256_mul_ps(e, _mm256_set1_ps(w.scale_lut[w.block_scales[g]]));
        }
        _mm256_storeu_ps(d + base + k, v);
      }
    }
  }
}

// Batches: a block of rows is dequantized once per call into a per-thread f32 buffer and the dense
// f32 kernel runs every token over it (its register-tiled GEMM reuses each weight across tokens far
// better than decoding per token block). Nested inside a parallel_for chunk it runs serially.
constexpr int64_t kDecodedRows = 16;  // rows per dequantized block (16 x 11008 f32 = 704 KiB)

template <Q4Scheme S>
LQ_AVX2 void avx2_decoded_rows(const float* x, int64_t n, const Q4Matrix& w, const float* bias, float* y,
                               int64_t r0, int64_t r1) {
  thread_local std::vector<float> block, out;
  block.resize(size_t(kDecodedRows * w.cols));
  out.resize(size_t(n * kDecodedRows));
  for (int64_t rb = r0; rb < r1; rb += kDecodedRows) {
    const int64_t R = std::min(kDecodedRows, r1 - rb);
    if (w.layout == Q4Layout::Lanes)  // rb is a multiple of 16: whole blocks (the last one padded)
      for (int64_t b = rb / kLaneRows; b * kLaneRows < rb + R; ++b)
        dequantize_lanes(w, b, block.data() + (b * kLaneRows - rb) * w.cols);
    else
      dequantize_block<S>(w, rb, rb + R, block.data());
    linear(x, n, DenseMatrix{WeightType::F32, R, w.cols, block.data()}, nullptr, out.data());
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < R; ++r) y[t * w.rows + rb + r] = out[size_t(t * R + r)] + (bias ? bias[rb + r] : 0.0f);
  }
}

// ---- W4A16: the Lanes layout as the GEMM's panel source ------------------------------------------
//
// A Lanes step (32 bytes) holds 8 rows x 8 inputs with row r in 32-bit lane r: the code of input e of
// the step is (lane >> s_e) & 15 with s_e = 8 e (e < 4) or 8 (e - 4) + 4, i.e. one shift and one mask
// give a whole panel column (8 rows) of one k. Each 8-row part of a panel is decoded step by step
// into the packed f32 panel with the values dequantize_lanes writes (q s - s z; 2 e2m1 * bs / 2), so
// the GEMM over these panels gives exactly the result of the dense f32 GEMM over the dequantized
// matrix (the old 16-row path's result) while the codes are read once per call and never expanded
// beyond one panel block.
LQ_AVX2 void pack_lanes_panel(const void* ctx, int64_t o0, int rows, int64_t k0, int64_t kc, int width, float* dst) {
  const Q4Matrix& w = *static_cast<const Q4Matrix*>(ctx);
  const int64_t G = w.groups_per_row();
  const __m256i low4 = _mm256_set1_epi32(15);
  const __m256i table = _mm256_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12,  //
                                         0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
  const __m256i nibbles = _mm256_set1_epi8(15);
  for (int part = 0; part < width / 8; ++part) {
    const int64_t b = o0 / kLaneRows + part;
    float* d = dst + part * 8;
    if (part * 8 >= rows || b >= w.row_blocks()) {
      for (int64_t k = 0; k < kc; ++k) _mm256_store_ps(d + k * width, _mm256_setzero_ps());
      continue;
    }
    const uint8_t* p = w.packed.data() + b * w.cols * 4 + k0 / kStep * kStepBytes;
    if (w.scheme == Q4Scheme::Int4) {
      const uint8_t* z = w.zeros.data() + b * G * kLaneRows;
      int64_t g_loaded = -1;
      __m256 sc = _mm256_setzero_ps(), sz = sc;
      for (int64_t k = 0; k < kc; k += kStep, p += kStepBytes) {
        const int64_t g = (k0 + k) / w.group;  // groups are multiples of 64: a step never straddles two
        if (g != g_loaded) {
          sc = avx2_lanes::lane_scales8(w, b, g);
          const __m256 zf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(z + g * kLaneRows))));
          sz = _mm256_mul_ps(sc, zf);
          g_loaded = g;
        }
        const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        for (int e = 0; e < 8; ++e) {
          const int shift = e < 4 ? 8 * e : 8 * (e - 4) + 4;
          const __m256 q = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(bytes, _mm_cvtsi32_si128(shift)), low4));
          _mm256_store_ps(d + (k + e) * width, _mm256_sub_ps(_mm256_mul_ps(q, sc), sz));
        }
      }
    } else {
      const uint8_t* bs = w.block_scales.data() + b * G * kLaneRows;
      alignas(32) float s8[kLaneRows];
      for (int64_t k = 0; k < kc; k += kStep, p += kStepBytes) {
        const int64_t g = (k0 + k) / 16;
        if ((k0 + k) % 16 == 0)
          for (int r = 0; r < kLaneRows; ++r) s8[r] = w.scale_lut[bs[g * kLaneRows + r]];
        const __m256 sc = _mm256_load_ps(s8);
        const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        const __m256i lo = _mm256_shuffle_epi8(table, _mm256_and_si256(bytes, nibbles));
        const __m256i hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(bytes, 4), nibbles));
        for (int e = 0; e < 8; ++e) {
          const __m256i src = e < 4 ? lo : hi;
          const int up = 24 - 8 * (e % 4);  // the byte of input e to the top, then an arithmetic shift back
          const __m256i v = _mm256_srai_epi32(_mm256_sll_epi32(src, _mm_cvtsi32_si128(up)), 24);
          _mm256_store_ps(d + (k + e) * width, _mm256_mul_ps(_mm256_cvtepi32_ps(v), sc));
        }
      }
    }
  }
}

detail::PanelSource lanes_panels(const Q4Matrix& w) {
  detail::PanelSource s;
  s.rows = w.rows;
  s.cols = w.cols;
  s.ctx = &w;
  s.pack = pack_lanes_panel;
  return s;
}

// ---- 8-bit weights (q8.h) ----------------------------------------------------------------------

// Dots of one row with NT tokens: per 64-input block the exact int32 dot of the signed codes and the
// int8 activations (maddubs(|c|, sign(q, c)): pairs sum to at most 2 x 128 x 127 < 2^15), converted
// and scaled by d_b * s_b into 8 f32 lanes; the lanes summed in hsum's order at the end.
template <int NT>
LQ_AVX2 void q8_row_dots(const Q8Matrix& w, const Q8Acts& a, int64_t o, int64_t t0, float* out) {
  const int8_t* c = w.codes.data() + o * w.cols;
  const float* s = w.scales.data() + o * (w.cols / w.group);
  const int64_t per_group = w.group / kActBlock;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 total[NT];
  for (int t = 0; t < NT; ++t) total[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < w.cols / kActBlock; ++b) {
    _mm_prefetch(reinterpret_cast<const char*>(c + b * kActBlock + 1024), _MM_HINT_T0);
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + b * kActBlock));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + b * kActBlock + 32));
    const __m256i a0 = _mm256_abs_epi8(w0), a1 = _mm256_abs_epi8(w1);
    const float sw = s[b / per_group];
    for (int t = 0; t < NT; ++t) {
      const int8_t* xq = a.q.data() + (t0 + t) * a.stride + b * kActBlock;
      const __m256i x0 = _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq)), w0);
      const __m256i x1 = _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 32)), w1);
      const __m256i dot = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(a0, x0), ones),
                                           _mm256_madd_epi16(_mm256_maddubs_epi16(a1, x1), ones));
      const float scale = a.d[size_t((t0 + t) * a.blocks + b)] * sw;
      total[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(scale), total[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(total[t]);
}

LQ_AVX2 void q8_rows(const Q8Acts& a, const Q8Matrix& w, const float* bias, float* y, int64_t r0, int64_t r1) {
  float dots[4];
  for (int64_t o = r0; o < r1; ++o)
    for (int64_t t = 0; t < a.n; t += 4) {
      const int64_t nt = std::min<int64_t>(4, a.n - t);
      if (nt == 4) q8_row_dots<4>(w, a, o, t, dots);
      if (nt == 3) q8_row_dots<3>(w, a, o, t, dots);
      if (nt == 2) q8_row_dots<2>(w, a, o, t, dots);
      if (nt == 1) q8_row_dots<1>(w, a, o, t, dots);
      for (int64_t k = 0; k < nt; ++k) y[(t + k) * w.rows + o] = dots[k] + (bias ? bias[o] : 0.0f);
    }
}

#endif  // LQ_X86 (the Q8 panel source below is portable)

// W8A16: the codes of a panel block decoded into the GEMM's packed f32 panel.
void pack_q8_panel(const void* ctx, int64_t o0, int rows, int64_t k0, int64_t kc, int width, float* dst) {
  const Q8Matrix& w = *static_cast<const Q8Matrix*>(ctx);
  const int64_t G = w.cols / w.group;
  for (int j = 0; j < width; ++j) {
    if (j >= rows) {
      for (int64_t k = 0; k < kc; ++k) dst[k * width + j] = 0.0f;
      continue;
    }
    const int8_t* c = w.codes.data() + (o0 + j) * w.cols + k0;
    const float* s = w.scales.data() + (o0 + j) * G;
    for (int64_t k = 0; k < kc; ++k) dst[k * width + j] = float(c[k]) * s[(k0 + k) / w.group];
  }
}

#if LQ_X86
// F16C through CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know "f16c".
bool have_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
bool have_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && have_f16c();
  return ok;
}
bool have_avx512vnni() {
  static const bool ok = have_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  return ok;
}
#else
bool have_avx2() { return false; }
bool have_avx512vnni() { return false; }
#endif

// The kernels q4_linear runs: scalar, AVX2, AVX2 running the VNNI formulation (tests), AVX-512 VNNI
// (the Lanes kernels; the rest of the AVX-512 path is the AVX2 code).
enum class SimdPath { Scalar, Avx2, Avx2Vnni, Avx512Vnni };
constexpr const char* kPathNames[] = {"scalar", "avx2", "avx2-vnni", "avx512vnni"};
std::atomic<int> g_forced_path{-1};

SimdPath best_path() {
  return have_avx512vnni() ? SimdPath::Avx512Vnni : have_avx2() ? SimdPath::Avx2 : SimdPath::Scalar;
}
SimdPath current_path() {
  const int forced = g_forced_path.load(std::memory_order_relaxed);
  return forced >= 0 ? SimdPath(forced) : best_path();
}

Q8Acts quantize_activations(const float* x, int64_t n, int64_t cols) {
#if LQ_X86
  if (have_avx2()) return quantize_avx2(x, n, cols);
#endif
  return quantize_scalar(x, n, cols);
}

}  // namespace

// ---- layout -------------------------------------------------------------------------------

uint64_t Q4Matrix::weight_bytes() const {
  return uint64_t(packed.size()) + uint64_t(scales.size()) * sizeof(float) + uint64_t(zeros.size()) +
         uint64_t(lane_scales.size()) + uint64_t(block_scales.size()) + uint64_t(scale_lut.size()) * sizeof(float);
}

float Q4Matrix::group_scale(int64_t o, int64_t g) const {
  if (layout == Q4Layout::Rows) return scales[size_t(o * groups_per_row() + g)];
  const size_t k = group_index(*this, o, g);
  if (lane_scale == LaneScale::F32) {
    float v;
    std::memcpy(&v, lane_scales.data() + 4 * k, 4);
    return v;
  }
  uint16_t h;
  std::memcpy(&h, lane_scales.data() + 2 * k, 2);
  return lane_scale == LaneScale::BF16 ? num::bf16_to_f32(h) : num::f16_to_f32(h);
}

int Q4Matrix::group_zero(int64_t o, int64_t g) const {
  return zeros[group_index(*this, o, g)];
}

int Q4Matrix::code(int64_t o, int64_t i) const {
  if (layout == Q4Layout::Lanes) {
    const int64_t k = i % kStep;
    const uint8_t byte = packed[size_t(o / kLaneRows * cols * 4 + i / kStep * kStepBytes + 4 * (o % kLaneRows) + k % 4)];
    return k < 4 ? byte & 15 : byte >> 4;
  }
  const int64_t base = i / kChunk * kChunk, half = kChunk / 2, k = i - base;
  const uint8_t byte = packed[size_t(o * bytes_per_row() + base / 2 + (k % half))];
  return k < half ? byte & 15 : byte >> 4;
}

float Q4Matrix::weight(int64_t o, int64_t i) const {
  const int q = code(o, i);
  if (scheme == Q4Scheme::Int4) return float(q - group_zero(o, i / group)) * group_scale(o, i / group);
  return num::e2m1_to_f32(uint8_t(q)) * (2.0f * scale_lut[block_scales[group_index(*this, o, i / group)]]);  // the table holds bs / 2 exactly
}

Q4Matrix pack_int4(int64_t rows, int64_t cols, int64_t group, const uint8_t* codes, const float* scales,
                   const uint8_t* zeros, const char* where) {
  check_shape(rows, cols, group, where);
  check_codes(rows, cols, codes, where);
  Q4Matrix m;
  m.scheme = Q4Scheme::Int4;
  m.rows = rows;
  m.cols = cols;
  m.group = group;
  const size_t ng = size_t(rows * (cols / group));
  for (size_t g = 0; g < ng; ++g)
    if (zeros[g] > 15) fail(where, "zero point " + std::to_string(zeros[g]) + " does not fit 4 bits");
  if (group % kChunk == 0) {
    m.layout = Q4Layout::Lanes;
    m.packed = pack_lanes(rows, cols, codes);
    pack_lane_groups(m, scales, zeros);
    return m;
  }
  m.packed = pack_codes(rows, cols, codes);
  m.scales.assign(scales, scales + ng);
  m.zeros.assign(zeros, zeros + ng);
  return m;
}

Q4Matrix pack_nvfp4(int64_t rows, int64_t cols, const uint8_t* codes, const uint8_t* block_scales,
                    float tensor_scale, const char* where) {
  check_shape(rows, cols, 16, where);
  check_codes(rows, cols, codes, where);
  Q4Matrix m;
  m.scheme = Q4Scheme::NvFp4;
  m.rows = rows;
  m.cols = cols;
  m.group = 16;
  const size_t ng = size_t(rows * (cols / 16));
  // Lanes when whole 64-input chunks and no negative block scale (the Lanes kernel decodes the
  // scale bytes without a sign; quantizers never write one): the Rows kernels handle the rest.
  const bool signed_scale = std::any_of(block_scales, block_scales + ng, [](uint8_t b) { return (b & 0x80) != 0; });
  if (cols % kChunk == 0 && !signed_scale) {
    m.layout = Q4Layout::Lanes;
    m.packed = pack_lanes(rows, cols, codes);
    const int64_t G = cols / 16;
    m.block_scales.assign(size_t(m.row_blocks() * G * kLaneRows), 0);
    for (int64_t o = 0; o < rows; ++o)
      for (int64_t g = 0; g < G; ++g) m.block_scales[group_index(m, o, g)] = block_scales[o * G + g];
  } else {
    m.packed = pack_codes(rows, cols, codes);
    m.block_scales.assign(block_scales, block_scales + ng);
  }
  m.tensor_scale = tensor_scale;
  m.scale_lut.resize(256);
  // bs = e4m3 * tensor_scale in f32 (the definition's order); halving is exact for normal floats.
  for (int b = 0; b < 256; ++b) m.scale_lut[size_t(b)] = 0.5f * (num::e4m3_to_f32(uint8_t(b)) * tensor_scale);
  return m;
}

// ---- entry points -------------------------------------------------------------------------

void q4_linear_ref(const float* x, int64_t n, const Q4Matrix& w, const float* bias, float* y) {
  validate_call(x, n, w, y);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t o = 0; o < w.rows; ++o) {
      double acc = bias ? double(bias[o]) : 0.0;
      for (int64_t i = 0; i < w.cols; ++i) acc += double(w.weight(o, i)) * double(x[t * w.cols + i]);
      y[t * w.rows + o] = float(acc);
    }
}

void q8_activations(const float* x, int64_t n, int64_t cols, float* xhat) {
  if (n < 0 || cols < 0) fail("q8_activations", "negative shape");
  const Q8Acts a = quantize_activations(x, n, cols);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < cols; ++i)
      xhat[t * cols + i] = float(a.q[size_t(t * a.stride + i)]) * a.d[size_t(t * a.blocks + i / kActBlock)];
}

int64_t q4_int8_max_tokens() { return g_int8_max_tokens.load(std::memory_order_relaxed); }

void set_q4_int8_max_tokens(int64_t n) {
  g_int8_max_tokens.store(n < 0 ? kInt8MaxTokensDefault : n, std::memory_order_relaxed);
}

void q4_linear_scalar(const float* x, int64_t n, const Q4Matrix& w, const float* bias, float* y) {
  validate_call(x, n, w, y);
  if (n == 0) return;
  Q8Acts a = quantize_scalar(x, n, w.cols);
  if (w.scheme == Q4Scheme::Int4) group_sums(a, w.group);
  for_row_ranges(n, w, [&](int64_t r0, int64_t r1) { scalar_rows(a, w, bias, y, r0, r1); });
}

void q4_linear(const float* x, int64_t n, const Q4Matrix& w, const float* bias, float* y) {
#if LQ_X86
  const SimdPath path = current_path();
  if (path != SimdPath::Scalar) {
    validate_call(x, n, w, y);
    if (n == 0) return;
    if (n > q4_int8_max_tokens()) {
      if (w.layout == Q4Layout::Lanes && detail::gemm_avx2_available() && std::string(gemm_path()) != "scalar")
        return detail::gemm(x, n, lanes_panels(w), bias, y, false);
      parallel_for(w.rows, kDecodedRows, [&](int64_t r0, int64_t r1) {
        if (w.scheme == Q4Scheme::Int4)
          avx2_decoded_rows<Q4Scheme::Int4>(x, n, w, bias, y, r0, r1);
        else
          avx2_decoded_rows<Q4Scheme::NvFp4>(x, n, w, bias, y, r0, r1);
      });
      return;
    }
    Q8Acts a = quantize_avx2(x, n, w.cols);
    prepare_activations(a, w);
    if (w.layout == Q4Layout::Lanes) {
      const int64_t blocks = w.row_blocks(), macs = n * w.rows * w.cols;
      parallel_for(blocks, macs < kMinParallelMacs ? std::max<int64_t>(blocks, 1) : 1, [&](int64_t b0, int64_t b1) {
        if (path == SimdPath::Avx512Vnni)
          avx512_lanes::lanes_rows_dispatch<avx512_lanes::VnniDot>(a, w, bias, y, b0, b1);
        else if (path == SimdPath::Avx2Vnni)
          avx2_lanes::lanes_rows_dispatch<avx2_lanes::VnniEmulatedDot>(a, w, bias, y, b0, b1);
        else
          avx2_lanes::lanes_rows_dispatch<avx2_lanes::MaddDot>(a, w, bias, y, b0, b1);
      });
      return;
    }
    for_row_ranges(n, w, [&](int64_t r0, int64_t r1) { int8_rows_dispatch(a, w, bias, y, r0, r1); });
    return;
  }
#endif
  q4_linear_scalar(x, n, w, bias, y);
}

// ---- 8-bit weights -------------------------------------------------------------------------------

Q8Matrix pack_int8(int64_t rows, int64_t cols, int64_t group, const uint8_t* codes, const float* scales, const char* where) {
  if (rows < 0 || cols < 0) fail(where, "negative shape");
  if (group < kActBlock || group % kActBlock != 0 || (cols > 0 && cols % group != 0))
    fail(where, "group " + std::to_string(group) + " must be a multiple of 64 dividing in_features " + std::to_string(cols));
  Q8Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.group = group;
  m.codes.resize(size_t(rows * cols));
  for (size_t k = 0; k < m.codes.size(); ++k) m.codes[k] = int8_t(int(codes[k]) - 128);
  m.scales.assign(scales, scales + rows * (cols / group));
  return m;
}

void q8_linear_ref(const float* x, int64_t n, const Q8Matrix& w, const float* bias, float* y) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t o = 0; o < w.rows; ++o) {
      double acc = bias ? double(bias[o]) : 0.0;
      for (int64_t i = 0; i < w.cols; ++i) acc += double(w.weight(o, i)) * double(x[t * w.cols + i]);
      y[t * w.rows + o] = float(acc);
    }
}

void q8_linear(const float* x, int64_t n, const Q8Matrix& w, const float* bias, float* y) {
  if (n < 0) fail("q8_linear", "negative token count " + std::to_string(n));
  if (int64_t(w.codes.size()) != w.rows * w.cols || w.group <= 0 || w.cols % w.group != 0 || w.group % kActBlock != 0 ||
      int64_t(w.scales.size()) != w.rows * (w.cols / w.group))
    fail("q8_linear", "inconsistent Q8Matrix (built outside pack_int8?)");
  if (n == 0 || w.rows == 0) return;
  if (n > q4_int8_max_tokens() || !have_avx2()) {
    detail::PanelSource src;
    src.rows = w.rows;
    src.cols = w.cols;
    src.ctx = &w;
    src.pack = pack_q8_panel;
    if (detail::gemm_avx2_available() && std::string(gemm_path()) != "scalar") return detail::gemm(x, n, src, bias, y, false);
    return q8_linear_ref(x, n, w, bias, y);
  }
#if LQ_X86
  const Q8Acts a = quantize_avx2(x, n, w.cols);
  const int64_t macs = n * w.rows * w.cols;
  parallel_for(w.rows, macs < kMinParallelMacs ? std::max<int64_t>(w.rows, 1) : 8,
               [&](int64_t r0, int64_t r1) { q8_rows(a, w, bias, y, r0, r1); });
#endif
}

const char* q4_simd_path() { return kPathNames[int(current_path())]; }

void set_q4_simd_path(const std::string& path) {
  if (path.empty()) {
    g_forced_path.store(-1, std::memory_order_relaxed);
    return;
  }
  for (int k = 0; k < int(std::size(kPathNames)); ++k)
    if (path == kPathNames[k]) {
      const SimdPath p = SimdPath(k);
      const bool ok = p == SimdPath::Scalar || (p == SimdPath::Avx512Vnni ? have_avx512vnni() : have_avx2());
      if (!ok) fail("set_q4_simd_path", "this CPU cannot run the " + path + " path");
      g_forced_path.store(k, std::memory_order_relaxed);
      return;
    }
  fail("set_q4_simd_path", "unknown path '" + path + "' (scalar, avx2, avx2-vnni, avx512vnni)");
}

}  // namespace lq::kernels
