// Fused 4-bit linear kernels (layout and math: q4.h).
//
// AVX2 micro-kernel, per output row and block of NT tokens: each 16-code chunk (8 bytes) is widened
// to 32-bit lanes in one load, split into two 8-lane runs of codes by mask / shift, converted to f32
// (NVFP4: a permute table lookup), multiplied by the group scale, and fed to NT x 4 (NT <= 2) or NT x 2 (NT > 2) independent
// accumulators with FMAs, so the decode cost is shared by the token block and the FMA latency
// chains stay short. The zero point correction is a per-group scalar term using the group sums of
// x, prepared once per call.
#include "kernels/q4.h"

#include <algorithm>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LQ_X86 1
#endif

#include "io/error.h"
#include "kernels/linear.h"
#include "num/formats.h"

namespace lq::kernels {

namespace {

constexpr int64_t kChunk = 16;  // codes per packed chunk (8 bytes): byte j = element j | element j + 8 << 4

// 2 * e2m1(code): the sign is bit 3, magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6} doubled to integers.
constexpr int8_t kTwiceE2m1[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

void check_codes(int64_t rows, int64_t cols, const uint8_t* codes, const char* where) {
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

// Packs unpacked codes row by row into the chunk layout of q4.h.
std::vector<uint8_t> pack_codes(int64_t rows, int64_t cols, const uint8_t* codes) {
  std::vector<uint8_t> packed(size_t(rows * cols / 2));
  for (int64_t o = 0; o < rows; ++o) {
    const uint8_t* src = codes + o * cols;
    uint8_t* dst = packed.data() + o * cols / 2;
    for (int64_t base = 0; base < cols; base += kChunk) {
      const int64_t half = kChunk / 2;
      for (int64_t j = 0; j < half; ++j)
        dst[base / 2 + j] = uint8_t(src[base + j] | (src[base + half + j] << 4));
    }
  }
  return packed;
}

void validate_call(const float* x, int64_t n, const Q4Matrix& w, const float* y) {
  if (n < 0) fail("q4_linear", "negative token count " + std::to_string(n));
  if (n > 0 && w.cols > 0 && !x) fail("q4_linear", "input x is null");
  if (n > 0 && w.rows > 0 && !y) fail("q4_linear", "output y is null");
  const int64_t ng = w.rows * w.groups_per_row();
  const bool int4_ok = int64_t(w.scales.size()) == ng && int64_t(w.zeros.size()) == ng;
  const bool nvfp4_ok = int64_t(w.block_scales.size()) == ng && w.scale_lut.size() == 256;
  if (int64_t(w.packed.size()) != w.rows * w.cols / 2 || !(w.scheme == Q4Scheme::Int4 ? int4_ok : nvfp4_ok))
    fail("q4_linear", "inconsistent Q4Matrix (built outside pack_int4 / pack_nvfp4?)");
}

// Group sums of x: xsum[t * G + g] = sum_{i in g} x[t, i] (float, ascending i). Only Int4 needs them.
std::vector<float> group_sums(const float* x, int64_t n, const Q4Matrix& w) {
  const int64_t G = w.groups_per_row();
  std::vector<float> xsum(size_t(n * G), 0.0f);
  if (w.scheme != Q4Scheme::Int4) return xsum;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t g = 0; g < G; ++g) {
      float s = 0.0f;
      const float* xg = x + t * w.cols + g * w.group;
      for (int64_t i = 0; i < w.group; ++i) s += xg[i];
      xsum[size_t(t * G + g)] = s;
    }
  return xsum;
}

// sum_g (s_g z_g) * xsum_g of row o for one token (zero when the scheme has no zero points).
float zero_correction(const Q4Matrix& w, int64_t o, const float* xsum_t) {
  if (w.scheme != Q4Scheme::Int4) return 0.0f;
  const int64_t G = w.groups_per_row();
  const float* s = w.scales.data() + o * G;
  const uint8_t* z = w.zeros.data() + o * G;
  float c = 0.0f;
  for (int64_t g = 0; g < G; ++g) c += (s[g] * float(z[g])) * xsum_t[g];
  return c;
}

// Work below this many multiply-adds stays on the calling thread.
constexpr int64_t kMinParallelMacs = 1 << 16;

template <class F>
void for_row_ranges(int64_t n, const Q4Matrix& w, F&& fn) {
  const int64_t macs = n * w.rows * w.cols;
  const int64_t grain = macs < kMinParallelMacs ? std::max<int64_t>(w.rows, 1) : 4;
  parallel_for(w.rows, grain, fn);
}

// ---- scalar path --------------------------------------------------------------------------

// Decoded q * s (Int4) or 2 e2m1 * (bs / 2) (NvFp4) of one code.
inline float scaled_code(const Q4Matrix& w, int code, float scale) {
  return w.scheme == Q4Scheme::Int4 ? float(code) * scale : float(kTwiceE2m1[code]) * scale;
}

// The f32 scale of group g (flat index): s (Int4) or 0.5 * bs (NvFp4, through the table).
inline float group_scale(const Q4Matrix& w, int64_t g) {
  return w.scheme == Q4Scheme::Int4 ? w.scales[size_t(g)] : w.scale_lut[w.block_scales[size_t(g)]];
}

void scalar_rows(const float* x, int64_t n, const Q4Matrix& w, const float* xsum, const float* bias, float* y,
                 int64_t r0, int64_t r1) {
  const int64_t G = w.groups_per_row();
  for (int64_t o = r0; o < r1; ++o) {
    const uint8_t* p = w.packed.data() + o * w.bytes_per_row();
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * w.cols;
      float acc = 0.0f;
      for (int64_t base = 0; base < w.cols; base += kChunk) {
        const int64_t half = kChunk / 2;
        for (int64_t j = 0; j < kChunk; ++j) {
          const uint8_t byte = p[base / 2 + (j % half)];
          const int code = j < half ? byte & 15 : byte >> 4;
          acc += scaled_code(w, code, group_scale(w, o * G + (base + j) / w.group)) * xt[base + j];
        }
      }
      acc -= zero_correction(w, o, xsum + t * G);
      y[t * w.rows + o] = acc + (bias ? bias[o] : 0.0f);
    }
  }
}

// ---- AVX2 path ----------------------------------------------------------------------------

#if LQ_X86
#define LQ_AVX2 __attribute__((target("avx2,fma")))

LQ_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Decodes the 16 codes at p (8 bytes, byte j = element j | element j + 8 << 4) to f32 values
// q * scale: elements 0..7 into v0, 8..15 into v1. The bytes are widened to 32-bit lanes straight
// from memory, then split into nibbles with one mask and one shift per vector.
template <Q4Scheme S>
LQ_AVX2 inline void decode16(const uint8_t* p, __m256 scale, __m256& v0, __m256& v1) {
  const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  const __m256i q0 = _mm256_and_si256(bytes, _mm256_set1_epi32(15));
  const __m256i q1 = _mm256_srli_epi32(bytes, 4);
  if constexpr (S == Q4Scheme::Int4) {
    v0 = _mm256_mul_ps(_mm256_cvtepi32_ps(q0), scale);
    v1 = _mm256_mul_ps(_mm256_cvtepi32_ps(q1), scale);
  } else {
    // 2 e2m1: lanes pick from the positive or negative half of the table by the sign bit (bit 3),
    // moved to bit 31 as the blend mask.
    const __m256 pos = _mm256_setr_ps(0, 1, 2, 3, 4, 6, 8, 12);
    const __m256 neg = _mm256_setr_ps(-0.0f, -1, -2, -3, -4, -6, -8, -12);
    const __m256 e0 = _mm256_blendv_ps(_mm256_permutevar8x32_ps(pos, q0), _mm256_permutevar8x32_ps(neg, q0),
                                       _mm256_castsi256_ps(_mm256_slli_epi32(q0, 28)));
    const __m256 e1 = _mm256_blendv_ps(_mm256_permutevar8x32_ps(pos, q1), _mm256_permutevar8x32_ps(neg, q1),
                                       _mm256_castsi256_ps(_mm256_slli_epi32(q1, 28)));
    v0 = _mm256_mul_ps(e0, scale);
    v1 = _mm256_mul_ps(e1, scale);
  }
}

// The scale of the group holding input i of the row whose first group is g0, broadcast.
template <Q4Scheme S>
LQ_AVX2 inline __m256 scale_at(const Q4Matrix& w, int64_t g0, int64_t i) {
  if constexpr (S == Q4Scheme::Int4)
    return _mm256_broadcast_ss(w.scales.data() + g0 + i / w.group);
  else
    return _mm256_broadcast_ss(w.scale_lut.data() + w.block_scales[size_t(g0 + i / 16)]);
}

// One output row o for tokens [t0, t0 + NT): the dot products without bias / zero correction
// (the caller adds them). NA accumulators per token (4 or 2) keep FMA dependency chains short.
template <Q4Scheme S, int NT>
LQ_AVX2 void avx2_row(const float* x, const Q4Matrix& w, int64_t o, int64_t t0, float* out /*[NT]*/) {
  constexpr int NA = NT <= 2 ? 4 : 2;
  const int64_t cols = w.cols;
  const uint8_t* p = w.packed.data() + o * w.bytes_per_row();
  const int64_t g0 = o * w.groups_per_row();
  __m256 acc[NT][NA];
  for (int t = 0; t < NT; ++t)
    for (int a = 0; a < NA; ++a) acc[t][a] = _mm256_setzero_ps();
  int64_t base = 0;
  for (; base + 32 <= cols; base += 32) {  // two 16-code chunks (a group holds both: group % 16 == 0)
    __m256 w0, w1, w2, w3;
    decode16<S>(p + base / 2, scale_at<S>(w, g0, base), w0, w1);
    decode16<S>(p + base / 2 + 8, scale_at<S>(w, g0, base + 16), w2, w3);
    for (int t = 0; t < NT; ++t) {
      const float* xt = x + (t0 + t) * cols + base;
      acc[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xt), acc[t][0]);
      acc[t][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xt + 8), acc[t][1]);
      acc[t][2 % NA] = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xt + 16), acc[t][2 % NA]);
      acc[t][3 % NA] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xt + 24), acc[t][3 % NA]);
    }
  }
  if (base < cols) {  // a final single chunk of 16 codes
    __m256 w0, w1;
    decode16<S>(p + base / 2, scale_at<S>(w, g0, base), w0, w1);
    for (int t = 0; t < NT; ++t) {
      const float* xt = x + (t0 + t) * cols + base;
      acc[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xt), acc[t][0]);
      acc[t][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xt + 8), acc[t][1]);
    }
  }
  for (int t = 0; t < NT; ++t) {
    __m256 sum = acc[t][0];
    for (int a = 1; a < NA; ++a) sum = _mm256_add_ps(sum, acc[t][a]);
    out[t] = hsum(sum);
  }
}

template <Q4Scheme S>
LQ_AVX2 void avx2_rows(const float* x, int64_t n, const Q4Matrix& w, const float* xsum, const float* bias, float* y,
                       int64_t r0, int64_t r1) {
  const int64_t G = w.groups_per_row();
  float dots[4];
  for (int64_t o = r0; o < r1; ++o) {
    int64_t t = 0;
    for (; t + 4 <= n; t += 4) {
      avx2_row<S, 4>(x, w, o, t, dots);
      for (int k = 0; k < 4; ++k)
        y[(t + k) * w.rows + o] = dots[k] - zero_correction(w, o, xsum + (t + k) * G) + (bias ? bias[o] : 0.0f);
    }
    const int64_t rest = n - t;
    if (rest == 3) avx2_row<S, 3>(x, w, o, t, dots);
    if (rest == 2) avx2_row<S, 2>(x, w, o, t, dots);
    if (rest == 1) avx2_row<S, 1>(x, w, o, t, dots);
    for (int64_t k = 0; k < rest; ++k)
      y[(t + k) * w.rows + o] = dots[k] - zero_correction(w, o, xsum + (t + k) * G) + (bias ? bias[o] : 0.0f);
  }
}

// Rows [r0, r1) dequantized to f32 into dst ([r1 - r0][cols]): (q - z) * s or e2m1 * bs, each
// value computed as q * s - s * z (exact for bf16 / f16 scales, one rounding for f32 scales).
template <Q4Scheme S>
LQ_AVX2 void dequantize_block(const Q4Matrix& w, int64_t r0, int64_t r1, float* dst) {
  const int64_t cols = w.cols, G = w.groups_per_row();
  for (int64_t o = r0; o < r1; ++o) {
    const uint8_t* p = w.packed.data() + o * w.bytes_per_row();
    float* d = dst + (o - r0) * cols;
    for (int64_t base = 0; base < cols; base += 16) {
      __m256 v0, v1;
      decode16<S>(p + base / 2, scale_at<S>(w, o * G, base), v0, v1);
      if constexpr (S == Q4Scheme::Int4) {
        const size_t g = size_t(o * G + base / w.group);
        const __m256 sz = _mm256_set1_ps(w.scales[g] * float(w.zeros[g]));
        v0 = _mm256_sub_ps(v0, sz);
        v1 = _mm256_sub_ps(v1, sz);
      }
      _mm256_storeu_ps(d + base, v0);
      _mm256_storeu_ps(d + base + 8, v1);
    }
  }
}

// Batches: a block of rows is dequantized once per call into a per-thread f32 buffer and the dense
// f32 kernel runs every token over it (its register-tiled GEMM reuses each weight across tokens far
// better than decoding per token block). Nested inside a parallel_for chunk it runs serially.
constexpr int64_t kDecodedBatch = 8;   // tokens from which the decoded-block path is used
constexpr int64_t kDecodedRows = 16;   // rows per dequantized block (16 x 11008 f32 = 704 KiB)

template <Q4Scheme S>
LQ_AVX2 void avx2_decoded_rows(const float* x, int64_t n, const Q4Matrix& w, const float* bias, float* y,
                               int64_t r0, int64_t r1) {
  thread_local std::vector<float> block, out;
  block.resize(size_t(kDecodedRows * w.cols));
  out.resize(size_t(n * kDecodedRows));
  for (int64_t rb = r0; rb < r1; rb += kDecodedRows) {
    const int64_t R = std::min(kDecodedRows, r1 - rb);
    dequantize_block<S>(w, rb, rb + R, block.data());
    linear(x, n, DenseMatrix{WeightType::F32, R, w.cols, block.data()}, nullptr, out.data());
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < R; ++r) y[t * w.rows + rb + r] = out[size_t(t * R + r)] + (bias ? bias[rb + r] : 0.0f);
  }
}

bool have_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
#else
bool have_avx2() { return false; }
#endif

}  // namespace

// ---- layout -------------------------------------------------------------------------------

uint64_t Q4Matrix::weight_bytes() const {
  return uint64_t(packed.size()) + uint64_t(scales.size()) * sizeof(float) + uint64_t(zeros.size()) +
         uint64_t(block_scales.size()) + uint64_t(scale_lut.size()) * sizeof(float);
}

int Q4Matrix::code(int64_t o, int64_t i) const {
  const int64_t base = i / kChunk * kChunk, half = kChunk / 2, k = i - base;
  const uint8_t byte = packed[size_t(o * bytes_per_row() + base / 2 + (k % half))];
  return k < half ? byte & 15 : byte >> 4;
}

float Q4Matrix::weight(int64_t o, int64_t i) const {
  const size_t g = size_t(o * groups_per_row() + i / group);
  const int q = code(o, i);
  if (scheme == Q4Scheme::Int4) return float(q - int(zeros[g])) * scales[g];
  return num::e2m1_to_f32(uint8_t(q)) * (2.0f * scale_lut[block_scales[g]]);  // the table holds bs / 2 exactly
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
  m.packed = pack_codes(rows, cols, codes);
  const size_t ng = size_t(rows * (cols / group));
  m.scales.assign(scales, scales + ng);
  m.zeros.assign(zeros, zeros + ng);
  for (size_t g = 0; g < ng; ++g)
    if (m.zeros[g] > 15) fail(where, "zero point " + std::to_string(m.zeros[g]) + " does not fit 4 bits");
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
  m.packed = pack_codes(rows, cols, codes);
  m.block_scales.assign(block_scales, block_scales + size_t(rows * (cols / 16)));
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

void q4_linear_scalar(const float* x, int64_t n, const Q4Matrix& w, const float* bias, float* y) {
  validate_call(x, n, w, y);
  const std::vector<float> xsum = group_sums(x, n, w);
  for_row_ranges(n, w, [&](int64_t r0, int64_t r1) { scalar_rows(x, n, w, xsum.data(), bias, y, r0, r1); });
}

void q4_linear(const float* x, int64_t n, const Q4Matrix& w, const float* bias, float* y) {
#if LQ_X86
  if (have_avx2()) {
    validate_call(x, n, w, y);
    if (n >= kDecodedBatch) {
      parallel_for(w.rows, kDecodedRows, [&](int64_t r0, int64_t r1) {
        if (w.scheme == Q4Scheme::Int4)
          avx2_decoded_rows<Q4Scheme::Int4>(x, n, w, bias, y, r0, r1);
        else
          avx2_decoded_rows<Q4Scheme::NvFp4>(x, n, w, bias, y, r0, r1);
      });
      return;
    }
    const std::vector<float> xsum = group_sums(x, n, w);
    for_row_ranges(n, w, [&](int64_t r0, int64_t r1) {
      if (w.scheme == Q4Scheme::Int4)
        avx2_rows<Q4Scheme::Int4>(x, n, w, xsum.data(), bias, y, r0, r1);
      else
        avx2_rows<Q4Scheme::NvFp4>(x, n, w, xsum.data(), bias, y, r0, r1);
    });
    return;
  }
#endif
  q4_linear_scalar(x, n, w, bias, y);
}

const char* q4_simd_path() { return have_avx2() ? "avx2" : "scalar"; }

}  // namespace lq::kernels
