// Dense linear layer y = x W^T + b: dispatch, the scalar reference and fallback, and the dot-product
// AVX2 path (linear_dot). The packed GEMM used for many tokens lives in linear_gemm.cpp.
//
// The dot-product path is built from one register-tiled micro-kernel, tile_accumulate<NT, NO>, for NT tokens
// x NO output rows, and finalize(): each output element owns one 8-lane accumulator that walks k in
// steps of 8 with FMAs, is reduced horizontally in a fixed order, then the k tail (cols % 8) is added
// with scalar FMAs in order. Every instantiation does exactly this per element, so an output value does not
// depend on the tile it landed in, on the thread split, or on the number of tokens in the call.
//
// linear() takes this path below kGemmMinTokens tokens (it streams W once: best for decode GEMV);
// linear_dot() runs it for any n (benchmarks compare it with the GEMM).
// Paths: up to 16 tokens (decode GEMV, short prompts) each tile runs over all of k with register
// accumulators, streaming W once (stream_rows; 1 token x 4 rows for n == 1). Larger n (prefill) uses
// 4 tokens x 3 rows tiles (12 accumulators + 3 weight vectors + 1 x vector = 16 ymm registers; each
// weight vector loaded feeds 4 FMAs) with k blocked: the lane accumulators are parked in a per-thread
// buffer between k blocks, which keeps the per-lane order, so a block's weight slice stays in cache
// while a 64-token block passes over it (gemm_rows). Threads split the output rows.
#include "kernels/linear.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LQ_X86 1
#endif

#include "io/error.h"
#include "kernels/linear_gemm.h"
#include "kernels/parallel.h"
#include "num/formats.h"

namespace lq::kernels {

namespace {

float weight_at(const DenseMatrix& w, int64_t o, int64_t i) {
  const int64_t k = o * w.cols + i;
  return w.type == WeightType::F32 ? static_cast<const float*>(w.data)[k]
                                   : num::bf16_to_f32(static_cast<const uint16_t*>(w.data)[k]);
}

void validate(const float* x, int64_t n, const DenseMatrix& w, const float* y) {
  if (n < 0) fail("linear", "negative token count " + std::to_string(n));
  if (w.rows < 0 || w.cols < 0)
    fail("linear", "invalid weight shape [" + std::to_string(w.rows) + ", " +
                       std::to_string(w.cols) + "]");
  if (w.rows * w.cols > 0 && !w.data) fail("linear", "weight data is null");
  if (n > 0 && w.cols > 0 && !x) fail("linear", "input x is null");
  if (n > 0 && w.rows > 0 && !y) fail("linear", "output y is null");
}

// Work below this many multiply-adds runs on the calling thread (thread hand-off costs more).
constexpr int64_t kMinParallelMacs = 1 << 16;

// Splits output rows over the pool in multiples of `row_grain`; serial for tiny problems.
template <class F>
void for_row_ranges(int64_t n, const DenseMatrix& w, int64_t row_grain, F&& fn) {
  const int64_t macs = n * w.rows * w.cols;
  const int64_t grain = macs < kMinParallelMacs ? std::max<int64_t>(w.rows, 1) : row_grain;
  parallel_for(w.rows, grain, fn);
}

#ifdef LQ_X86

// ---- AVX2 + FMA ----

struct F32Rows {
  using Elem = float;
  __attribute__((target("avx2,fma"))) static __m256 load8(const float* p) {
    return _mm256_loadu_ps(p);
  }
  static float load1(const float* p) { return *p; }
};

struct Bf16Rows {
  using Elem = uint16_t;
  __attribute__((target("avx2,fma"))) static __m256 load8(const uint16_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static float load1(const uint16_t* p) { return num::bf16_to_f32(*p); }
};

// Fixed-order horizontal sum: ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)).
__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lane accumulators for NT tokens x NO weight rows over k in [k0, k1) (multiples of 8): acc[t * lda
// + o] is loaded (or zeroed when `first`), advanced with one FMA per 8 k, and stored back. Splitting k
// into blocks therefore leaves every lane's summation order unchanged.
template <int NT, int NO, class Rows>
__attribute__((target("avx2,fma"))) void tile_accumulate(const float* x, const typename Rows::Elem* w,
                                                         int64_t cols, int64_t k0, int64_t k1,
                                                         bool first, float* acc_mem, int64_t lda) {
  __m256 acc[NT][NO];
  for (int t = 0; t < NT; ++t)
    for (int o = 0; o < NO; ++o)
      acc[t][o] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(acc_mem + (t * lda + o) * 8);
  for (int64_t k = k0; k < k1; k += 8) {
    __m256 wv[NO];
    for (int o = 0; o < NO; ++o) wv[o] = Rows::load8(w + o * cols + k);
    for (int t = 0; t < NT; ++t) {
      const __m256 xv = _mm256_loadu_ps(x + t * cols + k);
      for (int o = 0; o < NO; ++o) acc[t][o] = _mm256_fmadd_ps(xv, wv[o], acc[t][o]);
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int o = 0; o < NO; ++o) _mm256_storeu_ps(acc_mem + (t * lda + o) * 8, acc[t][o]);
}

// y[t, o] = hsum(lanes) + in-order scalar FMAs over the k tail (cols % 8) + bias, for nt x no outputs.
template <class Rows>
__attribute__((target("avx2,fma"))) void finalize(const float* x, const typename Rows::Elem* w,
                                                  int64_t cols, const float* acc, int64_t lda,
                                                  int nt, int no, const float* bias, float* y,
                                                  int64_t ldy) {
  const int64_t k8 = cols & ~int64_t(7);
  for (int t = 0; t < nt; ++t)
    for (int o = 0; o < no; ++o) {
      float s = hsum(_mm256_loadu_ps(acc + (t * lda + o) * 8));
      for (int64_t k = k8; k < cols; ++k)
        s = __builtin_fmaf(x[t * cols + k], Rows::load1(w + o * cols + k), s);
      y[t * ldy + o] = bias ? s + bias[o] : s;
    }
}

// Accumulators live in float buffers, 8 floats (one lane vector) per output element.
using TileFn = void (*)(const float*, const void*, int64_t, int64_t, int64_t, bool, float*, int64_t);

template <int NT, int NO, class Rows>
__attribute__((target("avx2,fma"))) void tile_erased(const float* x, const void* w, int64_t cols,
                                                     int64_t k0, int64_t k1, bool first,
                                                     float* acc, int64_t lda) {
  tile_accumulate<NT, NO, Rows>(x, static_cast<const typename Rows::Elem*>(w), cols, k0, k1, first,
                                acc, lda);
}

constexpr int kMaxNT = 4, kMaxNO = 4;

// tile_accumulate instantiated for every edge shape, indexed [tokens][rows].
template <class Rows>
struct TileTable {
  TileFn fn[kMaxNT + 1][kMaxNO + 1] = {};
  constexpr TileTable() { fill<1, 1>(); }
  template <int NT, int NO>
  constexpr void fill() {
    fn[NT][NO] = tile_erased<NT, NO, Rows>;
    if constexpr (NO < kMaxNO) fill<NT, NO + 1>();
    else if constexpr (NT < kMaxNT) fill<NT + 1, 1>();
  }
};

constexpr TileTable<F32Rows> kF32Tiles;
constexpr TileTable<Bf16Rows> kBf16Tiles;

// Prefill blocking. For one k block the weight slice of a row group (24 rows x 512 k: 48 KiB f32,
// 24 KiB bf16) stays in L1/L2 while every 4-token tile of the token block sweeps over it, and the
// tile's 4 activation rows (8 KiB) stay in L1 across the group's 8 row tiles. The lane accumulators
// of the block (64 tokens x 24 rows x 32 B = 48 KiB) are parked in a per-thread buffer between k
// blocks. Each weight element is read from memory once per 64-token block. (Block sizes were picked
// from a coarse sweep on a busy 2-core Zen 3; 256..1024 k and 12..48 rows were within noise.)
constexpr int64_t kTokenBlock = 64;
constexpr int64_t kRowGroup = 24;  // multiple of the 3-row tile
constexpr int64_t kKBlock = 512;
constexpr int kPrefillRows = 3, kDecodeRows = 4;
// Up to this many tokens the unblocked streaming path (stream_rows) is used: weights dominate the
// traffic and the tokens' activations (16 x in x 4 B) still fit in L2. Beyond it every row tile would
// re-read all activations from L3/DRAM, so the k-blocked path (gemm_rows) takes over. Measured on
// 2048/11008-wide layers: both paths are within noise of each other from 16 to 128 tokens.
constexpr int64_t kStreamMaxTokens = 16;

// Few tokens (decode, short prompts): each tile runs over the whole k range with its accumulators in
// registers, so the tile's weight rows stream from memory once, sequentially, and are reused from
// L1/L2 by the next token tile. n == 1 uses 4-row tiles (more independent loads in flight), else 3.
template <class Rows>
__attribute__((target("avx2,fma"))) void stream_rows(const float* x, int64_t n, const DenseMatrix& w,
                                                     const float* bias, float* y,
                                                     const TileTable<Rows>& tiles, int64_t row_begin,
                                                     int64_t row_end) {
  using Elem = typename Rows::Elem;
  const Elem* wdata = static_cast<const Elem*>(w.data);
  const int64_t cols = w.cols, k8 = cols & ~int64_t(7), ldy = w.rows;
  const int rows_per_tile = n == 1 ? kDecodeRows : kPrefillRows;
  float acc[kMaxNT * kMaxNO * 8];
  for (int64_t o = row_begin; o < row_end; o += rows_per_tile) {
    const int no = int(std::min<int64_t>(rows_per_tile, row_end - o));
    const Elem* wrow = wdata + o * cols;
    for (int64_t t = 0; t < n; t += kMaxNT) {
      const int nt = int(std::min<int64_t>(kMaxNT, n - t));
      tiles.fn[nt][no](x + t * cols, wrow, cols, 0, k8, true, acc, kMaxNO);
      finalize<Rows>(x + t * cols, wrow, cols, acc, kMaxNO, nt, no, bias ? bias + o : nullptr,
                     y + t * ldy + o, ldy);
    }
  }
}

template <class Rows>
void gemm_rows(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y,
               const TileTable<Rows>& tiles, int64_t row_begin, int64_t row_end) {
  using Elem = typename Rows::Elem;
  const Elem* wdata = static_cast<const Elem*>(w.data);
  const int64_t cols = w.cols, k8 = cols & ~int64_t(7), ldy = w.rows;
  thread_local std::vector<float> acc_buf;  // per worker thread
  acc_buf.resize(size_t(kTokenBlock * kRowGroup * 8));
  float* acc = acc_buf.data();
  for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock) {
    const int64_t t1 = std::min(n, t0 + kTokenBlock);
    for (int64_t g0 = row_begin; g0 < row_end; g0 += kRowGroup) {
      const int64_t g1 = std::min(row_end, g0 + kRowGroup);
      // k loop outermost within the group; k8 == 0 still runs once to zero the accumulators.
      for (int64_t k0 = 0; k0 < k8 || k0 == 0; k0 += kKBlock) {
        const int64_t k1 = std::min(k8, k0 + kKBlock);
        for (int64_t t = t0; t < t1; t += kMaxNT) {
          const int nt = int(std::min<int64_t>(kMaxNT, t1 - t));
          for (int64_t o = g0; o < g1; o += kPrefillRows) {
            const int no = int(std::min<int64_t>(kPrefillRows, g1 - o));
            tiles.fn[nt][no](x + t * cols, wdata + o * cols, cols, k0, k1, k0 == 0,
                             acc + ((t - t0) * kRowGroup + (o - g0)) * 8, kRowGroup);
          }
        }
      }
      finalize<Rows>(x + t0 * cols, wdata + g0 * cols, cols, acc, kRowGroup, int(t1 - t0),
                     int(g1 - g0), bias ? bias + g0 : nullptr, y + t0 * ldy + g0, ldy);
    }
  }
}

template <class Rows>
void linear_rows_avx2(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y,
                      const TileTable<Rows>& tiles, int64_t row_begin, int64_t row_end) {
  if (n <= kStreamMaxTokens) stream_rows<Rows>(x, n, w, bias, y, tiles, row_begin, row_end);
  else gemm_rows<Rows>(x, n, w, bias, y, tiles, row_begin, row_end);
}

bool cpu_has_avx2_fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

#endif  // LQ_X86

}  // namespace

void linear_ref(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y) {
  validate(x, n, w, y);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t o = 0; o < w.rows; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < w.cols; ++i) acc += double(x[t * w.cols + i]) * weight_at(w, o, i);
      y[t * w.rows + o] = float(acc) + (bias ? bias[o] : 0.0f);
    }
}

void linear_scalar(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y) {
  validate(x, n, w, y);
  for_row_ranges(n, w, 8, [&](int64_t ob, int64_t oe) {
    for (int64_t t = 0; t < n; ++t)
      for (int64_t o = ob; o < oe; ++o) {
        // Eight interleaved partial sums, like the SIMD lanes, so long rows keep f32 accuracy.
        float part[8] = {};
        for (int64_t i = 0; i < w.cols; ++i) part[i & 7] += x[t * w.cols + i] * weight_at(w, o, i);
        float s = ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
        y[t * w.rows + o] = bias ? s + bias[o] : s;
      }
  });
}

void linear(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y) {
  if (n >= kGemmMinTokens) linear_gemm(x, n, w, bias, y);
  else linear_dot(x, n, w, bias, y);
}

void linear_gemm(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y) {
  validate(x, n, w, y);
  if (n == 0 || w.rows == 0) return;
  if (detail::gemm_avx2_available() && std::string(gemm_path()) != "scalar")
    return detail::gemm(x, n, detail::dense_panels(w), bias, y, w.type == WeightType::F32);
  linear_scalar(x, n, w, bias, y);
}

void linear_dot(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y) {
  validate(x, n, w, y);
  if (n == 0 || w.rows == 0) return;
#ifdef LQ_X86
  if (cpu_has_avx2_fma()) {
    // Grain 12 = lcm of the 4-row (GEMV) and 3-row (GEMM) tiles, so only the last range has a tail.
    for_row_ranges(n, w, 12, [&](int64_t ob, int64_t oe) {
      if (w.type == WeightType::F32)
        linear_rows_avx2<F32Rows>(x, n, w, bias, y, kF32Tiles, ob, oe);
      else
        linear_rows_avx2<Bf16Rows>(x, n, w, bias, y, kBf16Tiles, ob, oe);
    });
    return;
  }
#endif
  linear_scalar(x, n, w, bias, y);
}

const char* simd_path() {
#ifdef LQ_X86
  if (cpu_has_avx2_fma()) return "avx2";
#endif
  return "scalar";
}

}  // namespace lq::kernels
