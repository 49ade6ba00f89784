// AMX-BF16 GEMM (amx.h): one kernel over a tile policy, run by the instructions or by a scalar model.
//
// Blocking (per thread, over its output columns): jc 512 outputs, pc kGemmKBlock k - the block's
// panels are packed once as bf16 pairs (a B tile: 16 rows of k pairs x 16 outputs), reused by every
// token; ic 128 tokens - their activations rounded to bf16, rows padded to 32 with zeros; then per
// 32 x 32 block four C tiles over k in steps of 32 (A0, A1 = two 16-token tiles, B0, B1 = two panels).
#include "kernels/amx.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define LQ_AMX_X86 1
#endif

#include "io/error.h"
#include "num/formats.h"

namespace lq::kernels::detail {

namespace {

constexpr int64_t kColBlock = 512;
constexpr int64_t kTokenBlock = 128;
constexpr int kTileRows = 16, kTileBytes = 64, kKStep = 32;  // bf16 k per tile row

// ---- the scalar model of the tile instructions ------------------------------------------------

// DAZ on inputs / FTZ on outputs: a denormal becomes a zero of the same sign.
inline float flush(float v) { return std::fpclassify(v) == FP_SUBNORMAL ? std::copysign(0.0f, v) : v; }
inline float bf16(uint16_t h) { return flush(num::bf16_to_f32(h)); }

struct ModelTiles {
  alignas(64) uint8_t t[8][kTileRows][kTileBytes];
};
thread_local ModelTiles g_model;

// TDPBF16PS per the SDM's pseudo-code: per destination row m, two f32 chains per column n (the even
// and the odd element of each bf16 pair) start from zero, take one FMA per k (the products of bf16
// values are exact in f32, so each FMA rounds once, RNE, DAZ / FTZ), then the pair is summed and
// added to the destination (each add rounding once, FTZ).
void model_dp(float c[16][16], const uint16_t a[16][32], const uint16_t b[16][32]) {
  for (int m = 0; m < 16; ++m) {
    float even[16] = {}, odd[16] = {};
    for (int k = 0; k < 16; ++k)
      for (int n = 0; n < 16; ++n) {
        even[n] = flush(std::fma(bf16(a[m][2 * k]), bf16(b[k][2 * n]), even[n]));
        odd[n] = flush(std::fma(bf16(a[m][2 * k + 1]), bf16(b[k][2 * n + 1]), odd[n]));
      }
    for (int n = 0; n < 16; ++n) c[m][n] = flush(flush(c[m][n]) + flush(even[n] + odd[n]));
  }
}

struct Model {
  template <int T>
  static void zero() {
    std::memset(g_model.t[T], 0, sizeof g_model.t[T]);
  }
  template <int T>
  static void load(const void* base, int64_t stride) {
    for (int r = 0; r < kTileRows; ++r) std::memcpy(g_model.t[T][r], static_cast<const uint8_t*>(base) + r * stride, kTileBytes);
  }
  template <int T>
  static void store(void* base, int64_t stride) {
    for (int r = 0; r < kTileRows; ++r) std::memcpy(static_cast<uint8_t*>(base) + r * stride, g_model.t[T][r], kTileBytes);
  }
  template <int C, int A, int B>
  static void dp() {
    model_dp(reinterpret_cast<float(*)[16]>(g_model.t[C]), reinterpret_cast<const uint16_t(*)[32]>(g_model.t[A]),
             reinterpret_cast<const uint16_t(*)[32]>(g_model.t[B]));
  }
  static void begin() {}
  static void end() {}
};

#ifdef LQ_AMX_X86
// block_kernel carries the AMX target so the hardware policy's operations inline into it (the model's
// are plain code either way).
#define LQ_AMX_KERNEL_TARGET __attribute__((target("amx-tile,amx-bf16")))
#else
#define LQ_AMX_KERNEL_TARGET
#endif

// ---- the instructions -------------------------------------------------------------------------

#ifdef LQ_AMX_X86
#define LQ_AMX_TARGET __attribute__((target("amx-tile,amx-bf16")))

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// The intrinsics take tile numbers as literal tokens: each operation spelled out per tile.
struct Hardware {
  template <int T>
  LQ_AMX_TARGET static void zero() {
    if constexpr (T == 0) _tile_zero(0);
    else if constexpr (T == 1) _tile_zero(1);
    else if constexpr (T == 2) _tile_zero(2);
    else if constexpr (T == 3) _tile_zero(3);
    else static_assert(T < 4, "accumulator tiles are 0-3");
  }
  template <int T>
  LQ_AMX_TARGET static void load(const void* base, int64_t stride) {
    if constexpr (T == 4) _tile_loadd(4, base, stride);
    else if constexpr (T == 5) _tile_loadd(5, base, stride);
    else if constexpr (T == 6) _tile_loadd(6, base, stride);
    else if constexpr (T == 7) _tile_loadd(7, base, stride);
    else static_assert(T >= 4, "operand tiles are 4-7");
  }
  template <int T>
  LQ_AMX_TARGET static void store(void* base, int64_t stride) {
    if constexpr (T == 0) _tile_stored(0, base, stride);
    else if constexpr (T == 1) _tile_stored(1, base, stride);
    else if constexpr (T == 2) _tile_stored(2, base, stride);
    else if constexpr (T == 3) _tile_stored(3, base, stride);
    else static_assert(T < 4, "accumulator tiles are 0-3");
  }
  template <int C, int A, int B>
  LQ_AMX_TARGET static void dp() {
    if constexpr (C == 0 && A == 4 && B == 6) _tile_dpbf16ps(0, 4, 6);
    else if constexpr (C == 1 && A == 4 && B == 7) _tile_dpbf16ps(1, 4, 7);
    else if constexpr (C == 2 && A == 5 && B == 6) _tile_dpbf16ps(2, 5, 6);
    else if constexpr (C == 3 && A == 5 && B == 7) _tile_dpbf16ps(3, 5, 7);
    else static_assert(C < 0, "unsupported tile triple");
  }
  LQ_AMX_TARGET static void begin() {
    TileConfig cfg;
    for (int t = 0; t < 8; ++t) {
      cfg.colsb[t] = kTileBytes;
      cfg.rows[t] = kTileRows;
    }
    _tile_loadconfig(&cfg);
  }
  LQ_AMX_TARGET static void end() { _tile_release(); }
};
#endif

// c[32][32] (f32, row stride 32) = the 2 x 2 tile block: tokens a[0..32) (bf16 rows of a_stride
// elements, k steps of 32 from a), outputs of panels b0, b1 (ksteps tiles of 16 x 32 bf16 each).
template <class T>
LQ_AMX_KERNEL_TARGET void block_kernel(int64_t ksteps, const uint16_t* a, int64_t a_stride, const uint16_t* b0, const uint16_t* b1,
                  float* c) {
  asm volatile("" ::: "memory");  // the packed operands are written before the tile loads read them
  T::template zero<0>();
  T::template zero<1>();
  T::template zero<2>();
  T::template zero<3>();
  const int64_t stride_bytes = a_stride * 2;
  for (int64_t s = 0; s < ksteps; ++s) {
    T::template load<4>(a + s * kKStep, stride_bytes);
    T::template load<5>(a + kTileRows * a_stride + s * kKStep, stride_bytes);
    T::template load<6>(b0 + s * kTileRows * kKStep, kTileBytes);
    T::template load<7>(b1 + s * kTileRows * kKStep, kTileBytes);
    T::template dp<0, 4, 6>();
    T::template dp<1, 4, 7>();
    T::template dp<2, 5, 6>();
    T::template dp<3, 5, 7>();
  }
  T::template store<0>(c, 32 * 4);
  T::template store<1>(c + 16, 32 * 4);
  T::template store<2>(c + 16 * 32, 32 * 4);
  T::template store<3>(c + 16 * 32 + 16, 32 * 4);
  asm volatile("" ::: "memory");
}

template <class T>
struct AlignedBuffer {
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> data;
  size_t size = 0;
  T* get(size_t n) {
    if (n > size) {
      const size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
      data.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
      if (!data) fail("linear", "cannot allocate " + std::to_string(bytes) + " bytes of AMX packing buffer");
      size = n;
    }
    return data.get();
  }
};

template <class T>
void gemm_columns(const float* x, int64_t n, const PanelSource& w, const float* bias, float* y, int64_t col_begin,
                  int64_t col_end) {
  const int64_t cols = w.cols, ldy = w.rows;
  const int64_t max_ksteps = kGemmKBlock / kKStep, panel_elems = max_ksteps * kTileRows * kKStep;
  thread_local AlignedBuffer<float> f32_panel;
  thread_local AlignedBuffer<uint16_t> b_buf, a_buf;
  thread_local AlignedBuffer<float> c_buf;
  float* fp = f32_panel.get(size_t(kGemmKBlock * kAmxPanel));
  uint16_t* bp = b_buf.get(size_t((kColBlock / kAmxPanel + 1) * panel_elems));
  uint16_t* ap = a_buf.get(size_t(kTokenBlock * kGemmKBlock));
  float* cb = c_buf.get(32 * 32);
  T::begin();
  for (int64_t jc = col_begin; jc < col_end; jc += kColBlock) {
    const int64_t nc = std::min(kColBlock, col_end - jc);
    const int64_t panels = (nc + kAmxPanel - 1) / kAmxPanel, panels_even = (panels + 1) / 2 * 2;
    for (int64_t pc = 0; pc < cols; pc += kGemmKBlock) {
      const int64_t kc = std::min(kGemmKBlock, cols - pc), ksteps = (kc + kKStep - 1) / kKStep, kpad = ksteps * kKStep;
      const bool first = pc == 0, last = pc + kc == cols;
      // Panels as bf16 pairs: tile s, row r, column j holds W[o0 + j, pc + 32 s + 2 r + {0, 1}].
      for (int64_t p = 0; p < panels_even; ++p) {
        uint16_t* dst = bp + p * panel_elems;
        if (p >= panels) {
          std::memset(dst, 0, sizeof(uint16_t) * size_t(ksteps * kTileRows * kKStep));
          continue;
        }
        w.pack(w.ctx, jc + p * kAmxPanel, int(std::min<int64_t>(kAmxPanel, nc - p * kAmxPanel)), pc, kc, int(kAmxPanel), fp);
        for (int64_t k = 0; k < kpad; ++k)
          for (int64_t j = 0; j < kAmxPanel; ++j) {
            const uint16_t v = k < kc ? num::f32_to_bf16(fp[k * kAmxPanel + j]) : 0;
            dst[(k / kKStep) * kTileRows * kKStep + (k % kKStep) / 2 * kKStep + j * 2 + k % 2] = v;
          }
      }
      for (int64_t ic = 0; ic < n; ic += kTokenBlock) {
        const int64_t mc = std::min(kTokenBlock, n - ic), mpad = (mc + 31) / 32 * 32;
        for (int64_t t = 0; t < mpad; ++t)
          for (int64_t k = 0; k < kpad; ++k)
            ap[t * kpad + k] = t < mc && k < kc ? num::f32_to_bf16(x[(ic + t) * cols + pc + k]) : 0;
        for (int64_t p = 0; p < panels_even; p += 2)
          for (int64_t t0 = 0; t0 < mpad; t0 += 32) {
            block_kernel<T>(ksteps, ap + t0 * kpad, kpad, bp + p * panel_elems, bp + (p + 1) * panel_elems, cb);
            const int64_t o0 = jc + p * kAmxPanel;
            const int64_t outs = std::min<int64_t>(32, jc + nc - o0), toks = std::min<int64_t>(32, mc - t0);
            for (int64_t t = 0; t < toks; ++t) {
              float* yt = y + (ic + t0 + t) * ldy + o0;
              for (int64_t j = 0; j < outs; ++j) {
                float v = cb[t * 32 + j];
                if (!first) v = yt[j] + v;
                if (last && bias) v = v + bias[o0 + j];
                yt[j] = v;
              }
            }
          }
      }
    }
  }
  T::end();
}

}  // namespace

void amx_model_dpbf16ps(float c[16][16], const uint16_t a[16][32], const uint16_t b[16][32]) { model_dp(c, a, b); }

bool amx_available() {
#ifdef LQ_AMX_X86
  static const bool ok = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool tile = (d >> 24) & 1, bf16 = (d >> 22) & 1;
    if (!tile || !bf16) return false;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) return false;  // OSXSAVE
    uint32_t lo = 0, hi = 0;
    asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if (((lo >> 17) & 3) != 3) return false;  // XTILECFG and XTILEDATA enabled by the OS
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
#else
  return false;
#endif
}

void gemm_amx_bf16(const float* x, int64_t n, const PanelSource& w, const float* bias, float* y, int64_t col_begin,
                   int64_t col_end, bool emulated) {
  if (emulated) return gemm_columns<Model>(x, n, w, bias, y, col_begin, col_end);
#ifdef LQ_AMX_X86
  if (!amx_available()) fail("linear", "the AMX path needs AMX-BF16 and the tile state (not available)");
  return gemm_columns<Hardware>(x, n, w, bias, y, col_begin, col_end);
#else
  fail("linear", "the AMX path needs an x86-64 CPU with AMX-BF16");
#endif
}

}  // namespace lq::kernels::detail
