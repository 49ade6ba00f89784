// Packed GEMM (GotoBLAS/BLIS structure) for y[t, o] = sum_i x[t, i] W[o, i] + b[o] with many tokens.
//
// The dot-product formulation (one 8-lane accumulator per output, horizontal reduce) needs a
// reduction per output and loads both operands for every FMA; here the inner loop is an outer
// product instead: a micro-kernel keeps a 6-token x 16-output tile of y in 12 ymm registers and, per
// k, loads 16 weights (2 vectors) and broadcasts 6 activations, feeding 12 FMAs (15 of the 16 ymm
// registers; 8 loads per 12 FMAs, within Zen 3's 3 loads per 2 FMAs per cycle). The weights are repacked for it, k-major in 16-output panels and
// converted from bf16 to f32 on the way, so W itself (often a read-only mmap) is only read.
//
// Loops, outermost first (per thread, over its static range of output columns):
//   jc: kColBlock outputs        - their packed weights (kKBlock x kColBlock f32 = 512 KiB) stay in
//                                  L2/L3 (512 KiB blocks beat 256 and 384 KiB on a 512 KiB-L2 Zen)
//    pc: kKBlock k               - pack W[jc block, pc block] once, reused by every token
//     ic: kTokenBlock tokens     - pack their activations (96 x 256 f32 = 96 KiB, stays in L2),
//                                  6-token tiles interleaved k-major
//      jr: 16-output panels      - the panel (256 x 16 f32 = 16 KiB) stays in L1 ...
//       ir: 6-token tiles        - ... while every token tile of the block sweeps over it
// Each weight is packed once per call; activations once per column block (per kColBlock outputs),
// or not at all for ranges under 64 columns (read in place). Scratch per thread: 608 KiB.
//
// Summation order, identical for every output element: for each k block in order (k0 = 0, 256, ...),
// one FMA chain over the block's k in order starting from 0, added to the running sum; the bias is
// added last. Nothing depends on the thread count, on n or on the tile an element lands in, so
// results are deterministic (and equal for any num_threads()). Shorter chains (256) also keep the
// f32 rounding error near that of the lane-split dot product.
#include "kernels/linear_gemm.h"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LQ_GEMM_X86 1
#endif

#include "io/error.h"
#include "kernels/parallel.h"
#include "num/formats.h"

namespace lq::kernels::detail {

#ifdef LQ_GEMM_X86

namespace {

#define LQ_AVX2_FMA __attribute__((target("avx2,fma")))

constexpr int kTileTokens = 6;    // MR: y rows per micro-tile
constexpr int kPanel = 16;        // NR: y columns per micro-tile = outputs per packed panel
constexpr int64_t kKBlock = 256;  // KC
constexpr int64_t kTokenBlock = 96;   // MC, a multiple of kTileTokens
constexpr int64_t kColBlock = 512;    // NC, a multiple of kPanel
constexpr int64_t kPackTokensMinColumns = 4 * kPanel;
// Work below this many multiply-adds runs on the calling thread (thread hand-off costs more).
constexpr int64_t kMinParallelMacs = 1 << 16;

// 64-byte aligned per-thread scratch, grown on demand and reused across calls (bounded by the
// largest request: one packed weight block).
class ScratchBuffer {
 public:
  float* get(size_t floats) {
    if (floats > size_) {
      const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
      data_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
      if (!data_) fail("linear", "cannot allocate " + std::to_string(bytes) + " bytes of GEMM packing buffer");
      size_ = floats;
    }
    return data_.get();
  }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> data_;
  size_t size_ = 0;
};

struct F32Weights {
  using Elem = float;
  LQ_AVX2_FMA static __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
  static float load1(const float* p) { return *p; }
};

struct Bf16Weights {
  using Elem = uint16_t;
  LQ_AVX2_FMA static __m256 load8(const uint16_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static float load1(const uint16_t* p) { return num::bf16_to_f32(*p); }
};

// In-register 8x8 transpose: r[i][j] becomes r[j][i].
LQ_AVX2_FMA inline void transpose8x8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Elements ahead of the current one that pack_panel prefetches in each weight row.
constexpr int64_t kPrefetchAhead = 64;

// dst[k * 16 + j] = W[o0 + j, k0 + k] as f32 for k < kc, j < rows (<= 16); columns j >= rows are 0.
// Full panels go through 8x8 register transposes; the k tail and short panels element by element.
template <class Weights>
LQ_AVX2_FMA void pack_panel(const typename Weights::Elem* w, int64_t cols, int64_t o0, int rows,
                            int64_t k0, int64_t kc, float* dst) {
  const typename Weights::Elem* base = w + o0 * cols + k0;
  int64_t k = 0;
  if (rows == kPanel) {
    // Eight rows at a time: rows a power-of-two apart share L1 sets, and sixteen would evict each
    // other's lines between the two 8-wide steps that read one line.
    const int64_t k8 = kc & ~int64_t(7);
    for (int half = 0; half < 2; ++half)
      for (k = 0; k < k8; k += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; ++i) {
          // Short row segments in many streams: the hardware prefetchers do not pick them up.
          const typename Weights::Elem* row = base + (half * 8 + i) * cols + k;
          _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchAhead), _MM_HINT_T0);
          r[i] = Weights::load8(row);
        }
        transpose8x8(r);
        for (int i = 0; i < 8; ++i) _mm256_store_ps(dst + (k + i) * kPanel + half * 8, r[i]);
      }
  }
  for (; k < kc; ++k)
    for (int j = 0; j < kPanel; ++j)
      dst[k * kPanel + j] = j < rows ? Weights::load1(base + j * cols + k) : 0.0f;
}

// dst[k * tokens + r] = x[(t0 + r) * cols + k0 + k] for k < kc, r < tokens: a token tile's
// activations interleaved so the micro-kernel reads one sequential stream. Full tiles go through
// 8x8 transposes (rows 6 and 7 zero) whose 8-float columns are stored 6 apart in increasing order,
// each overwriting the previous one's 2 padding floats; the last one writes 2 floats past the tile
// (into the next tile, packed afterwards, or the buffer's slack).
LQ_AVX2_FMA void pack_tokens(const float* x, int64_t cols, int64_t t0, int tokens, int64_t k0,
                             int64_t kc, float* dst) {
  const float* src = x + t0 * cols + k0;
  int64_t k = 0;
  if (tokens == kTileTokens) {
    for (; k + 8 <= kc; k += 8) {
      __m256 r[8];
      for (int i = 0; i < kTileTokens; ++i) r[i] = _mm256_loadu_ps(src + i * cols + k);
      r[6] = r[7] = _mm256_setzero_ps();
      transpose8x8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + (k + i) * kTileTokens, r[i]);
    }
  }
  for (; k < kc; ++k)
    for (int r = 0; r < tokens; ++r) dst[k * tokens + r] = src[r * cols + k];
}

// c[t, 0..16) (=|+=) sum_{k < kc} A(t, k) * b[k * 16 + 0..16) for t < MR, then + bias when given.
// A(t, k) is a[k * MR + t] when `PackedA` (pack_tokens), else a[t * lda + k] (rows of x in place);
// `b` is a packed, 32-byte aligned panel. The sum is one FMA chain per element, from 0, either way.
template <int MR, bool PackedA>
LQ_AVX2_FMA void micro_kernel(int64_t kc, const float* a, int64_t lda, const float* b, float* c,
                              int64_t ldc, bool accumulate, const float* bias) {
  // y rows are far apart (one page each for wide layers) and y is usually beyond L2: start fetching
  // the tile's rows now, they are read (and written) after the k loop.
#pragma GCC unroll 8
  for (int t = 0; t < MR; ++t) {
    _mm_prefetch(reinterpret_cast<const char*>(c + t * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + t * ldc + kPanel - 1), _MM_HINT_T0);
  }
  // The token loops are unrolled so the 2 * MR accumulators live in registers.
  __m256 lo[MR], hi[MR];
#pragma GCC unroll 8
  for (int t = 0; t < MR; ++t) lo[t] = hi[t] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(b + k * kPanel), b1 = _mm256_load_ps(b + k * kPanel + 8);
#pragma GCC unroll 8
    for (int t = 0; t < MR; ++t) {
      const __m256 at = _mm256_broadcast_ss(PackedA ? a + k * MR + t : a + t * lda + k);
      lo[t] = _mm256_fmadd_ps(at, b0, lo[t]);
      hi[t] = _mm256_fmadd_ps(at, b1, hi[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < MR; ++t) {
    float* ct = c + t * ldc;
    __m256 r0 = lo[t], r1 = hi[t];
    if (accumulate) {
      r0 = _mm256_add_ps(_mm256_loadu_ps(ct), r0);
      r1 = _mm256_add_ps(_mm256_loadu_ps(ct + 8), r1);
    }
    if (bias) {
      r0 = _mm256_add_ps(r0, _mm256_loadu_ps(bias));
      r1 = _mm256_add_ps(r1, _mm256_loadu_ps(bias + 8));
    }
    _mm256_storeu_ps(ct, r0);
    _mm256_storeu_ps(ct + 8, r1);
  }
}

using MicroKernel = void (*)(int64_t, const float*, int64_t, const float*, float*, int64_t, bool, const float*);
// Indexed [PackedA][tokens].
constexpr MicroKernel kMicroKernels[2][kTileTokens + 1] = {
    {nullptr, micro_kernel<1, false>, micro_kernel<2, false>, micro_kernel<3, false>,
     micro_kernel<4, false>, micro_kernel<5, false>, micro_kernel<6, false>},
    {nullptr, micro_kernel<1, true>, micro_kernel<2, true>, micro_kernel<3, true>,
     micro_kernel<4, true>, micro_kernel<5, true>, micro_kernel<6, true>}};

// One micro-tile of `tokens` x `outputs` (outputs < 16 for the last panel): full tiles write y in
// place; short ones go through a 16-wide copy so the kernel never touches columns beyond the range.
LQ_AVX2_FMA void run_tile(int tokens, int outputs, int64_t kc, bool packed_a, const float* a,
                          int64_t lda, const float* panel, float* c, int64_t ldc, bool accumulate,
                          const float* bias) {
  const MicroKernel kernel = kMicroKernels[packed_a][tokens];
  if (outputs == kPanel) return kernel(kc, a, lda, panel, c, ldc, accumulate, bias);
  alignas(32) float tile[kTileTokens * kPanel] = {};
  alignas(32) float bias_pad[kPanel] = {};
  for (int t = 0; t < tokens && accumulate; ++t) std::copy_n(c + t * ldc, outputs, tile + t * kPanel);
  if (bias) std::copy_n(bias, outputs, bias_pad);
  kernel(kc, a, lda, panel, tile, kPanel, accumulate, bias ? bias_pad : nullptr);
  for (int t = 0; t < tokens; ++t) std::copy_n(tile + t * kPanel, outputs, c + t * ldc);
}

// Output columns [col_begin, col_end) for all n tokens (one thread's share).
template <class Weights>
LQ_AVX2_FMA void gemm_columns(const float* x, int64_t n, const DenseMatrix& w, const float* bias,
                              float* y, int64_t col_begin, int64_t col_end) {
  const auto* wdata = static_cast<const typename Weights::Elem*>(w.data);
  const int64_t cols = w.cols, ldy = w.rows;
  thread_local ScratchBuffer weight_buffer, token_buffer;
  float* packed = weight_buffer.get(size_t(kKBlock * kColBlock));
  float* tokens = token_buffer.get(size_t(kTokenBlock * kKBlock + 8));  // + pack_tokens' spill
  for (int64_t jc = col_begin; jc < col_end; jc += kColBlock) {
    const int64_t nc = std::min(kColBlock, col_end - jc);
    // Packing the activations pays off only when several panels reuse them (not for the narrow
    // 16-row blocks q4_linear passes, say); otherwise the kernel reads the rows of x in place.
    const bool pack_x = nc >= kPackTokensMinColumns;
    for (int64_t pc = 0; pc < cols; pc += kKBlock) {
      const int64_t kc = std::min(kKBlock, cols - pc);
      const bool first = pc == 0, last = pc + kc == cols;
      for (int64_t p = 0; p < nc; p += kPanel)
        pack_panel<Weights>(wdata, cols, jc + p, int(std::min<int64_t>(kPanel, nc - p)), pc, kc,
                            packed + p * kc);
      for (int64_t ic = 0; ic < n; ic += kTokenBlock) {
        const int64_t mc = std::min(kTokenBlock, n - ic);
        // Tile t of the block starts at (t - ic) * kc: all tiles but the last hold 6 tokens.
        for (int64_t t = ic; t < ic + mc && pack_x; t += kTileTokens)
          pack_tokens(x, cols, t, int(std::min<int64_t>(kTileTokens, ic + mc - t)), pc, kc,
                      tokens + (t - ic) * kc);
        for (int64_t p = 0; p < nc; p += kPanel) {
          const int outputs = int(std::min<int64_t>(kPanel, nc - p));
          const int64_t o = jc + p;
          for (int64_t t = ic; t < ic + mc; t += kTileTokens) {
            const float* a = pack_x ? tokens + (t - ic) * kc : x + t * cols + pc;
            run_tile(int(std::min<int64_t>(kTileTokens, ic + mc - t)), outputs, kc, pack_x, a, cols,
                     packed + p * kc, y + t * ldy + o, ldy, !first, last && bias ? bias + o : nullptr);
          }
        }
      }
    }
  }
}

// No input features: y = bias (or 0).
void fill_bias(int64_t n, int64_t rows, const float* bias, float* y) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t o = 0; o < rows; ++o) y[t * rows + o] = bias ? bias[o] : 0.0f;
}

}  // namespace

bool gemm_avx2_available() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

void gemm_avx2(const float* x, int64_t n, const DenseMatrix& w, const float* bias, float* y) {
  if (w.cols == 0) return fill_bias(n, w.rows, bias, y);
  const int64_t macs = n * w.rows * w.cols;
  // Ranges in whole panels so only the last thread has a short one.
  const int64_t grain = macs < kMinParallelMacs ? w.rows : kPanel;
  parallel_for(w.rows, grain, [&](int64_t begin, int64_t end) {
    if (w.type == WeightType::F32) gemm_columns<F32Weights>(x, n, w, bias, y, begin, end);
    else gemm_columns<Bf16Weights>(x, n, w, bias, y, begin, end);
  });
}

#else  // not x86

bool gemm_avx2_available() { return false; }
void gemm_avx2(const float*, int64_t, const DenseMatrix&, const float*, float*) {
  fail("linear", "the AVX2 GEMM path is not available on this CPU");
}

#endif

}  // namespace lq::kernels::detail
