// Packed GEMM (GotoBLAS/BLIS structure) for y[t, o] = sum_i x[t, i] W[o, i] + b[o] with many tokens.
//
// The dot-product formulation (one 8-lane accumulator per output, horizontal reduce) needs a
// reduction per output and loads both operands for every FMA; here the inner loop is an outer
// product instead: a micro-kernel keeps an MR-token x NR-output tile of y in registers and, per k,
// loads NR weights (2 vectors) and broadcasts MR activations, feeding 2 MR FMAs. The weights reach
// it as packed panels (k-major, NR outputs wide, f32) written by a PanelSource (linear_gemm.h): dense
// f32 / bf16 matrices (read in place; bf16 widened on the way) or 4-bit codes (q4.cpp).
//
// Paths (gemm_path(), run-time dispatch):
//   avx2        MR 6 x NR 16 (12 ymm accumulators; 8 loads per 12 FMAs, within Zen 3's 3 loads per
//               2 FMAs per cycle)
//   avx512      MR 12 x NR 32 (24 zmm accumulators), AVX-512F
//   avx512-emu  the avx512 tiling with each 512-bit vector emulated by two AVX2 vectors: the exact
//               computation of the avx512 path on CPUs without AVX-512 (tests)
//   amx, amx-emu  AMX-BF16 tiles (amx_gemm.cpp): bf16 and 4-bit weights only
// The f32 paths sum every output element in the same order (one FMA chain per kGemmKBlock block of
// k, blocks added in order, the bias last), so they agree bit for bit; nothing depends on the thread
// count, on n or on the tile an element lands in, so results are deterministic. Shorter chains (256)
// also keep the f32 rounding error near that of the lane-split dot product.
//
// Loops (gemm_f32.inc): jc kColBlock outputs - their packed weights (256 x 512 f32 = 512 KiB) stay in
// L2/L3 (512 KiB blocks beat 256 and 384 KiB on a 512 KiB-L2 Zen); pc kGemmKBlock k - pack W[jc, pc]
// once, reused by every token; ic kTokenBlock tokens - pack their activations (96 x 256 f32 = 96 KiB,
// stays in L2), MR-token tiles interleaved k-major; jr panels (256 x 16 f32 = 16 KiB stays in L1 ...)
// ir token tiles (... while every tile of the block sweeps over it). Each weight is packed once per
// call; activations once per column block, or not at all for ranges under 64 columns (read in place).
#include "kernels/linear_gemm.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <iterator>
#include <memory>
#include <string>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LQ_GEMM_X86 1
#endif

#include "io/error.h"
#include "kernels/amx.h"
#include "kernels/parallel.h"
#include "num/formats.h"

namespace lq::kernels {

namespace detail {

#ifdef LQ_GEMM_X86

namespace {

#define LQ_AVX2_FMA __attribute__((target("avx2,fma")))

constexpr int64_t kTokenBlock = 96;   // MC, a multiple of every path's MR
constexpr int64_t kColBlock = 512;    // NC, a multiple of every path's NR
constexpr int64_t kPackTokensMinColumns = 64;
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

// ---- dense panel sources ---------------------------------------------------------------------

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

// Elements ahead of the current one that pack_dense prefetches in each weight row.
constexpr int64_t kPrefetchAhead = 64;

// PanelSource::pack of a dense matrix. Full panels go through 8x8 register transposes, eight rows
// at a time (rows a power-of-two apart share L1 sets, and sixteen would evict each other's lines
// between the two 8-wide steps that read one line); the k tail and short panels element by element.
template <class Weights>
LQ_AVX2_FMA void pack_dense(const void* ctx, int64_t o0, int rows, int64_t k0, int64_t kc, int width, float* dst) {
  const DenseMatrix& w = *static_cast<const DenseMatrix*>(ctx);
  const int64_t cols = w.cols;
  const typename Weights::Elem* base = static_cast<const typename Weights::Elem*>(w.data) + o0 * cols + k0;
  int64_t k = 0;
  if (rows == width) {
    const int64_t k8 = kc & ~int64_t(7);
    for (int part = 0; part < width / 8; ++part)
      for (k = 0; k < k8; k += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; ++i) {
          // Short row segments in many streams: the hardware prefetchers do not pick them up.
          const typename Weights::Elem* row = base + (part * 8 + i) * cols + k;
          _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchAhead), _MM_HINT_T0);
          r[i] = Weights::load8(row);
        }
        transpose8x8(r);
        for (int i = 0; i < 8; ++i) _mm256_store_ps(dst + (k + i) * width + part * 8, r[i]);
      }
  }
  for (; k < kc; ++k)
    for (int j = 0; j < width; ++j) dst[k * width + j] = j < rows ? Weights::load1(base + j * cols + k) : 0.0f;
}

// ---- the f32 paths, one instantiation per vector policy (gemm_f32.inc) ---------------------------

namespace avx2 {
#define LQ_GEMM_TARGET __attribute__((target("avx2,fma")))
struct V {
  using T = __m256;
  static constexpr int kLanes = 8;
  LQ_GEMM_TARGET static T zero() { return _mm256_setzero_ps(); }
  LQ_GEMM_TARGET static T load(const float* p) { return _mm256_load_ps(p); }
  LQ_GEMM_TARGET static T loadu(const float* p) { return _mm256_loadu_ps(p); }
  LQ_GEMM_TARGET static void storeu(float* p, T v) { _mm256_storeu_ps(p, v); }
  LQ_GEMM_TARGET static T broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  LQ_GEMM_TARGET static T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  LQ_GEMM_TARGET static T add(T a, T b) { return _mm256_add_ps(a, b); }
};
constexpr int kMR = 6;
#include "kernels/gemm_f32.inc"
#undef LQ_GEMM_TARGET
}  // namespace avx2

namespace avx512 {
#define LQ_GEMM_TARGET __attribute__((target("avx2,fma,avx512f")))
struct V {
  using T = __m512;
  static constexpr int kLanes = 16;
  LQ_GEMM_TARGET static T zero() { return _mm512_setzero_ps(); }
  LQ_GEMM_TARGET static T load(const float* p) { return _mm512_load_ps(p); }
  LQ_GEMM_TARGET static T loadu(const float* p) { return _mm512_loadu_ps(p); }
  LQ_GEMM_TARGET static void storeu(float* p, T v) { _mm512_storeu_ps(p, v); }
  LQ_GEMM_TARGET static T broadcast(const float* p) { return _mm512_set1_ps(*p); }
  LQ_GEMM_TARGET static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  LQ_GEMM_TARGET static T add(T a, T b) { return _mm512_add_ps(a, b); }
};
constexpr int kMR = 12;
#include "kernels/gemm_f32.inc"
#undef LQ_GEMM_TARGET
}  // namespace avx512

// The avx512 path's exact computation on AVX2: a 512-bit vector is two 256-bit halves, each lane
// operated on as vfmadd231ps / vaddps would (the same IEEE operation per lane, no lane interaction).
namespace avx512_emu {
#define LQ_GEMM_TARGET __attribute__((target("avx2,fma")))
struct V {
  struct T {
    __m256 lo, hi;
  };
  static constexpr int kLanes = 16;
  LQ_GEMM_TARGET static T zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  LQ_GEMM_TARGET static T load(const float* p) { return {_mm256_load_ps(p), _mm256_load_ps(p + 8)}; }
  LQ_GEMM_TARGET static T loadu(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  LQ_GEMM_TARGET static void storeu(float* p, T v) {
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
  }
  LQ_GEMM_TARGET static T broadcast(const float* p) { return {_mm256_broadcast_ss(p), _mm256_broadcast_ss(p)}; }
  LQ_GEMM_TARGET static T fmadd(T a, T b, T c) { return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; }
  LQ_GEMM_TARGET static T add(T a, T b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
};
constexpr int kMR = 12;
#include "kernels/gemm_f32.inc"
#undef LQ_GEMM_TARGET
}  // namespace avx512_emu

// No input features: y = bias (or 0).
void fill_bias(int64_t n, int64_t rows, const float* bias, float* y) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t o = 0; o < rows; ++o) y[t * rows + o] = bias ? bias[o] : 0.0f;
}

bool cpu_has_avx512f() {
  static const bool ok = gemm_avx2_available() && __builtin_cpu_supports("avx512f");
  return ok;
}

}  // namespace

bool gemm_avx2_available() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

PanelSource dense_panels(const DenseMatrix& w) {
  PanelSource s;
  s.rows = w.rows;
  s.cols = w.cols;
  s.ctx = &w;
  s.pack = w.type == WeightType::F32 ? pack_dense<F32Weights> : pack_dense<Bf16Weights>;
  s.bf16_exact = w.type == WeightType::BF16;
  return s;
}

#else  // not x86

bool gemm_avx2_available() { return false; }
PanelSource dense_panels(const DenseMatrix& w) { return PanelSource{w.rows, w.cols, &w, nullptr, false}; }

#endif

}  // namespace detail

// ---- path selection ----------------------------------------------------------------------------

namespace {

enum class GemmPath { Scalar, Avx2, Avx512Emu, Avx512, AmxEmu, Amx };
constexpr const char* kGemmPathNames[] = {"scalar", "avx2", "avx512-emu", "avx512", "amx-emu", "amx"};
std::atomic<int> g_forced_gemm{-1};

bool can_run(GemmPath p) {
#ifdef LQ_GEMM_X86
  switch (p) {
    case GemmPath::Scalar: return true;
    case GemmPath::Avx2:
    case GemmPath::Avx512Emu:
    case GemmPath::AmxEmu: return detail::gemm_avx2_available();
    case GemmPath::Avx512: return detail::cpu_has_avx512f();
    case GemmPath::Amx: return detail::cpu_has_avx512f() && detail::amx_available();
  }
#endif
  return p == GemmPath::Scalar;
}

// AMX is opt-in (LQ_GEMM_PATH=amx or set_gemm_path("amx")): it rounds activations to bf16, which
// changes what evaluation and the f32 tests measure, and it has not run on hardware in this project yet.
GemmPath best_gemm_path() {
  for (GemmPath p : {GemmPath::Avx512, GemmPath::Avx2})
    if (can_run(p)) return p;
  return GemmPath::Scalar;
}

// LQ_GEMM_PATH=name in the environment forces a path for the whole process (benchmarks of one build
// on several paths); read once, an unknown or unrunnable name is an error at the first GEMM.
int env_gemm_path() {
  static const int v = [] {
    const char* e = std::getenv("LQ_GEMM_PATH");
    if (!e || !*e) return -1;
    for (int k = 0; k < int(std::size(kGemmPathNames)); ++k)
      if (std::string(e) == kGemmPathNames[k]) {
        if (!can_run(GemmPath(k))) fail("LQ_GEMM_PATH", std::string("this CPU cannot run the ") + e + " GEMM path");
        return k;
      }
    fail("LQ_GEMM_PATH", std::string("unknown GEMM path '") + e + "' (scalar, avx2, avx512-emu, avx512, amx-emu, amx)");
  }();
  return v;
}

GemmPath current_gemm_path() {
  const int forced = g_forced_gemm.load(std::memory_order_relaxed);
  if (forced >= 0) return GemmPath(forced);
  const int env = env_gemm_path();
  return env >= 0 ? GemmPath(env) : best_gemm_path();
}

}  // namespace

const char* gemm_path() { return kGemmPathNames[int(current_gemm_path())]; }

void set_gemm_path(const std::string& path) {
  if (path.empty()) {  // back to LQ_GEMM_PATH or the best path
    g_forced_gemm.store(-1, std::memory_order_relaxed);
    return;
  }
  for (int k = 0; k < int(std::size(kGemmPathNames)); ++k)
    if (path == kGemmPathNames[k]) {
      if (!can_run(GemmPath(k))) fail("set_gemm_path", "this CPU cannot run the " + path + " GEMM path");
      g_forced_gemm.store(k, std::memory_order_relaxed);
      return;
    }
  fail("set_gemm_path", "unknown GEMM path '" + path + "' (scalar, avx2, avx512-emu, avx512, amx-emu, amx)");
}

std::vector<std::string> gemm_paths_available() {
  std::vector<std::string> out;
  for (int k = 0; k < int(std::size(kGemmPathNames)); ++k)
    if (can_run(GemmPath(k))) out.push_back(kGemmPathNames[k]);
  return out;
}

namespace detail {

#ifdef LQ_GEMM_X86
void gemm(const float* x, int64_t n, const PanelSource& w, const float* bias, float* y, bool f32_weights) {
  if (w.cols == 0) return fill_bias(n, w.rows, bias, y);
  GemmPath path = current_gemm_path();
  if (path == GemmPath::Scalar) fail("linear", "internal: detail::gemm called on the scalar path");
  const bool amx = path == GemmPath::Amx || path == GemmPath::AmxEmu;
  if (amx && f32_weights) path = cpu_has_avx512f() ? GemmPath::Avx512 : GemmPath::Avx2;  // f32 stays f32
  const int64_t panel = path == GemmPath::Avx2 ? avx2::kNR : path == GemmPath::Amx || path == GemmPath::AmxEmu ? kAmxPanel : avx512::kNR;
  const int64_t macs = n * w.rows * w.cols;
  // Ranges in whole panels so only the last thread has a short one.
  const int64_t grain = macs < kMinParallelMacs ? w.rows : panel;
  parallel_for(w.rows, grain, [&](int64_t begin, int64_t end) {
    switch (path) {
      case GemmPath::Avx2: return avx2::gemm_columns(x, n, w, bias, y, begin, end);
      case GemmPath::Avx512: return avx512::gemm_columns(x, n, w, bias, y, begin, end);
      case GemmPath::Avx512Emu: return avx512_emu::gemm_columns(x, n, w, bias, y, begin, end);
      case GemmPath::Amx: return gemm_amx_bf16(x, n, w, bias, y, begin, end, false);
      case GemmPath::AmxEmu: return gemm_amx_bf16(x, n, w, bias, y, begin, end, true);
      case GemmPath::Scalar: break;
    }
  });
}
#else
void gemm(const float*, int64_t, const PanelSource&, const float*, float*, bool) {
  fail("linear", "the vector GEMM paths are not available on this CPU");
}
#endif

}  // namespace detail

}  // namespace lq::kernels
