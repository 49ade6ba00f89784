// The GEMM paths (kernels::gemm_path()) against each other, against the references, and the AMX tile
// model against an independent model of the instruction:
//  - the f32 paths (avx2, avx512-emu, avx512 where the CPU has it) give identical bits for dense f32,
//    dense bf16 and 4-bit (W4A16) weights, on odd shapes and token counts;
//  - W4A16 (q4_linear beyond q4_int8_max_tokens() tokens, Lanes layout) equals, bit for bit, the dense
//    f32 GEMM over the dequantized matrix (what the old dequantize-16-rows path computed);
//  - the AMX-BF16 path (amx-emu everywhere, amx where the CPU has it) against the double reference
//    of the bf16-rounded operands, budget: (chain depth) x 2^-24 x sum |x w|; against the f32
//    reference, plus the bf16 rounding of x (and of 4-bit weights): 2^-8 x sum |x w|;
//  - the tile model's TDPBF16PS against SIMDe's VDPBF16PS (same pair semantics, independent code).
// The other kernel tests hold the GEMM to f32 budgets: on a CPU with AMX this file's environment puts
// them on the best f32 path (the AMX path is tested here).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "io/error.h"
#include "kernels/amx.h"
#include "kernels/linear.h"
#include "kernels/q4.h"
#include "num/formats.h"
#include "test_random.h"

#if __has_include(<simde/x86/avx512/dpbf16.h>)
#include <simde/x86/avx512/add.h>
#include <simde/x86/avx512/dpbf16.h>
#include <simde/x86/avx512/loadu.h>
#include <simde/x86/avx512/setzero.h>
#include <simde/x86/avx512/storeu.h>
#define LQ_HAVE_SIMDE_BF16 1
#endif

namespace lq::kernels {
namespace {

bool has(const std::string& path) {
  const auto v = gemm_paths_available();
  return std::find(v.begin(), v.end(), path) != v.end();
}

std::string best_f32_path() { return has("avx512") ? "avx512" : has("avx2") ? "avx2" : "scalar"; }

class F32GemmByDefault : public ::testing::Environment {
 public:
  void SetUp() override {
    if (std::string(gemm_path()).rfind("amx", 0) == 0) set_gemm_path(best_f32_path());
  }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new F32GemmByDefault);

struct PathGuard {
  explicit PathGuard(const std::string& p) : saved(gemm_path()) { set_gemm_path(p); }
  ~PathGuard() { set_gemm_path(saved); }
  std::string saved;
};

std::vector<std::string> f32_paths() {
  std::vector<std::string> p;
  for (const char* name : {"avx2", "avx512-emu", "avx512"})
    if (has(name)) p.push_back(name);
  static bool said = false;
  if (!has("avx512") && !said) std::printf("no AVX-512F here: the avx512 tiling runs only in its AVX2 emulation\n");
  said = true;
  return p;
}
std::vector<std::string> amx_paths() {
  std::vector<std::string> p;
  for (const char* name : {"amx-emu", "amx"})
    if (has(name)) p.push_back(name);
  static bool said = false;
  if (!has("amx") && !said) std::printf("no AMX-BF16 here: the AMX path runs only over the tile model\n");
  said = true;
  return p;
}

struct Dense {
  int64_t out, in;
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  Dense(int64_t o, int64_t i, uint32_t seed) : out(o), in(i), f32(lq::test::gaussian(size_t(o * i), 0.05f, seed)) {
    bf16.resize(f32.size());
    num::f32_to_bf16(f32.data(), bf16.data(), f32.size());
  }
  DenseMatrix matrix(WeightType t) const { return {t, out, in, t == WeightType::F32 ? (const void*)f32.data() : bf16.data()}; }
  float weight(WeightType t, int64_t o, int64_t i) const {
    return t == WeightType::F32 ? f32[size_t(o * in + i)] : num::bf16_to_f32(bf16[size_t(o * in + i)]);
  }
};

std::vector<float> run(const DenseMatrix& m, const std::vector<float>& x, int64_t n, const float* bias) {
  std::vector<float> y(size_t(n * m.rows), NAN);
  linear_gemm(x.data(), n, m, bias, y.data());
  return y;
}

TEST(GemmPaths, ReportsPaths) {
  const auto v = gemm_paths_available();
  ASSERT_FALSE(v.empty());
  for (const auto& p : v) std::printf("GEMM path available: %s\n", p.c_str());
  EXPECT_THROW(set_gemm_path("avx3"), Error);
  if (!has("amx")) {
    EXPECT_THROW(set_gemm_path("amx"), Error);
  }
}

// Odd shapes: k tails (in % 8, in % 256), outputs off the 16 / 32-wide panels, token counts leaving
// tile remainders for 6- and 12-token tiles and the 96-token block.
TEST(GemmPaths, F32PathsGiveIdenticalBits) {
  struct Shape {
    int64_t n, in, out;
  };
  for (const Shape s : {Shape{1, 8, 1}, Shape{7, 300, 45}, Shape{13, 520, 70}, Shape{40, 257, 33}, Shape{97, 64, 130},
                        Shape{33, 1024, 96}})
    for (WeightType t : {WeightType::F32, WeightType::BF16}) {
      const Dense d(s.out, s.in, uint32_t(s.in + s.out));
      const std::vector<float> x = lq::test::gaussian(size_t(s.n * s.in), 1.0f, uint32_t(s.n));
      const std::vector<float> bias = lq::test::gaussian(size_t(s.out), 1.0f, 3);
      std::vector<float> first;
      for (const std::string& p : f32_paths()) {
        PathGuard g(p);
        const std::vector<float> y = run(d.matrix(t), x, s.n, bias.data());
        if (first.empty()) first = y;
        else EXPECT_EQ(y, first) << p << " n=" << s.n << " in=" << s.in << " out=" << s.out;
      }
    }
}

// sum |x w| + |bias| of output (t, o), with x as given.
double magnitude(const Dense& d, WeightType type, const float* x, int64_t o, const float* bias) {
  double m = bias ? std::fabs(bias[o]) : 0.0;
  for (int64_t i = 0; i < d.in; ++i) m += std::fabs(double(x[i]) * d.weight(type, o, i));
  return m;
}

// Roundings an AMX output goes through (each at most 2^-24 of sum |x w|): per 256-k block, 2 chains
// of 16 FMAs, their sum and the add to the tile per 32-k step, then one add per block and the bias.
double amx_rounding_count(int64_t in) {
  const int64_t kc = std::min<int64_t>(in, 256), steps = (kc + 31) / 32;
  return double(steps * 34 + (in + 255) / 256 + 1);
}

// The AMX path over bf16 weights: the result of the bf16-rounded activations within the f32 chain
// budget, and of the original activations within that plus the rounding of x.
TEST(GemmPaths, AmxBf16MatchesReference) {
  struct Shape {
    int64_t n, in, out;
  };
  for (const std::string& p : amx_paths())
    for (const Shape s : {Shape{1, 40, 3}, Shape{33, 300, 45}, Shape{70, 520, 50}, Shape{130, 96, 40}}) {
      const Dense d(s.out, s.in, uint32_t(s.in * 3 + s.out));
      const std::vector<float> x = lq::test::gaussian(size_t(s.n * s.in), 1.0f, uint32_t(s.n + 1));
      std::vector<float> xr(x.size());
      for (size_t i = 0; i < x.size(); ++i) xr[i] = num::bf16_to_f32(num::f32_to_bf16(x[i]));
      const std::vector<float> bias = lq::test::gaussian(size_t(s.out), 1.0f, 4);
      const DenseMatrix m = d.matrix(WeightType::BF16);
      std::vector<float> got, ref_r(size_t(s.n * s.out)), ref_x(ref_r.size());
      {
        PathGuard g(p);
        got = run(m, x, s.n, bias.data());
      }
      linear_ref(xr.data(), s.n, m, bias.data(), ref_r.data());
      linear_ref(x.data(), s.n, m, bias.data(), ref_x.data());
      const double depth = amx_rounding_count(s.in);
      for (int64_t t = 0; t < s.n; ++t)
        for (int64_t o = 0; o < s.out; ++o) {
          const size_t k = size_t(t * s.out + o);
          const double mr = magnitude(d, WeightType::BF16, xr.data() + t * s.in, o, bias.data());
          const double tight = 1.01 * depth * 0x1p-24 * mr + 1e-30;
          ASSERT_LE(std::fabs(double(got[k]) - ref_r[k]), tight) << p << " t=" << t << " o=" << o << " in=" << s.in;
          ASSERT_LE(std::fabs(double(got[k]) - ref_x[k]), tight + 0x1p-8 * mr) << p << " t=" << t << " o=" << o;
        }
    }
}

// On a CPU with AMX: the instructions against the tile model (same tiling; agreement to the bit is
// reported, the budget asserted: the SDM's pseudo-code and Intel's intrinsics guide describe different
// accumulation orders).
TEST(GemmPaths, AmxHardwareAgreesWithTheModel) {
  if (!has("amx")) GTEST_SKIP() << "this CPU has no AMX-BF16 (or the kernel refused the tile state)";
  const Dense d(70, 520, 9);
  const std::vector<float> x = lq::test::gaussian(size_t(45 * 520), 1.0f, 2);
  std::vector<float> hw, emu;
  {
    PathGuard g("amx");
    hw = run(d.matrix(WeightType::BF16), x, 45, nullptr);
  }
  {
    PathGuard g("amx-emu");
    emu = run(d.matrix(WeightType::BF16), x, 45, nullptr);
  }
  size_t same = 0;
  for (int64_t t = 0; t < 45; ++t)
    for (int64_t o = 0; o < 70; ++o) {
      const size_t k = size_t(t * 70 + o);
      same += hw[k] == emu[k];
      const double m = magnitude(d, WeightType::BF16, x.data() + t * 520, o, nullptr);
      ASSERT_LE(std::fabs(double(hw[k]) - emu[k]), 2 * 260 * 0x1p-24 * m) << t << "," << o;
    }
  std::printf("AMX hardware vs tile model: %zu of %zu outputs bit-identical\n", same, hw.size());
}

// ---- W4A16 --------------------------------------------------------------------------------------

struct Q4Case {
  Q4Scheme scheme;
  int64_t rows, cols, group;
};

Q4Matrix random_q4(const Q4Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> codes(size_t(c.rows * c.cols));
  for (auto& q : codes) q = uint8_t(rng() % 16);
  const size_t ng = size_t(c.rows * (c.cols / c.group));
  if (c.scheme == Q4Scheme::Int4) {
    std::vector<float> s(ng);
    std::vector<uint8_t> z(ng);
    std::uniform_real_distribution<float> sd(0.001f, 0.05f);
    for (size_t g = 0; g < ng; ++g) {
      s[g] = num::bf16_to_f32(num::f32_to_bf16(sd(rng)));
      z[g] = uint8_t(rng() % 16);
    }
    return pack_int4(c.rows, c.cols, c.group, codes.data(), s.data(), z.data());
  }
  std::vector<uint8_t> bs(ng);
  for (auto& b : bs) b = num::f32_to_e4m3(std::uniform_real_distribution<float>(1.0f, 448.0f)(rng));
  return pack_nvfp4(c.rows, c.cols, codes.data(), bs.data(), 3.1e-5f);
}

std::vector<Q4Case> q4_cases() {
  return {{Q4Scheme::Int4, 13, 128, 64},   {Q4Scheme::Int4, 40, 576, 64},  {Q4Scheme::Int4, 45, 512, 128},
          {Q4Scheme::Int4, 21, 384, 192},  {Q4Scheme::Int4, 100, 256, 256}, {Q4Scheme::NvFp4, 21, 320, 16},
          {Q4Scheme::NvFp4, 70, 1408, 16}, {Q4Scheme::NvFp4, 5, 64, 16}};
}

TEST(GemmPaths, W4A16EqualsDenseGemmOverDequantizedWeights) {
  for (const Q4Case& c : q4_cases()) {
    const Q4Matrix w = random_q4(c, uint32_t(c.rows + c.cols));
    ASSERT_EQ(w.layout, Q4Layout::Lanes);
    std::vector<float> deq(size_t(c.rows * c.cols));
    for (int64_t o = 0; o < c.rows; ++o)
      for (int64_t i = 0; i < c.cols; ++i) deq[size_t(o * c.cols + i)] = w.weight(o, i);
    const DenseMatrix dm{WeightType::F32, c.rows, c.cols, deq.data()};
    const std::vector<float> bias = lq::test::gaussian(size_t(c.rows), 0.1f, 8);
    for (int64_t n : {33, 64, 101}) {
      ASSERT_GT(n, q4_int8_max_tokens());
      const std::vector<float> x = lq::test::gaussian(size_t(n * c.cols), 1.0f, uint32_t(n));
      std::vector<float> first;
      for (const std::string& p : f32_paths()) {
        PathGuard g(p);
        std::vector<float> got(size_t(n * c.rows), NAN), want(got.size(), NAN);
        q4_linear(x.data(), n, w, bias.data(), got.data());
        linear_gemm(x.data(), n, dm, bias.data(), want.data());
        EXPECT_EQ(got, want) << p << (c.scheme == Q4Scheme::Int4 ? " int4" : " nvfp4") << " rows=" << c.rows
                             << " cols=" << c.cols << " group=" << c.group << " n=" << n;
        if (first.empty()) first = got;
        else EXPECT_EQ(got, first) << p;
      }
    }
  }
}

// W4A16 on the AMX path: weights and activations rounded to bf16 (the dequantized 4-bit values need
// up to 12 significant bits), f32 accumulation: within the chain budget of the rounded operands, and
// within 2 x 2^-8 sum |x w| of the exact product.
TEST(GemmPaths, W4A16OnAmxMatchesReference) {
  for (const std::string& p : amx_paths())
    for (const Q4Case& c : q4_cases()) {
      const Q4Matrix w = random_q4(c, uint32_t(c.rows * 3 + c.cols));
      const int64_t n = 40;
      const std::vector<float> x = lq::test::gaussian(size_t(n * c.cols), 1.0f, 6);
      std::vector<float> got(size_t(n * c.rows), NAN), ref(got.size());
      {
        PathGuard g(p);
        q4_linear(x.data(), n, w, nullptr, got.data());
      }
      q4_linear_ref(x.data(), n, w, nullptr, ref.data());
      const double depth = amx_rounding_count(c.cols);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t o = 0; o < c.rows; ++o) {
          double m = 0.0, exact_r = 0.0;
          for (int64_t i = 0; i < c.cols; ++i) {
            const double xi = num::bf16_to_f32(num::f32_to_bf16(x[size_t(t * c.cols + i)]));
            const double wi = num::bf16_to_f32(num::f32_to_bf16(w.weight(o, i)));
            m += std::fabs(xi * wi);
            exact_r += xi * wi;
          }
          const size_t k = size_t(t * c.rows + o);
          ASSERT_LE(std::fabs(got[k] - exact_r), 1.01 * depth * 0x1p-24 * m + 1e-30) << p << " t=" << t << " o=" << o;
          ASSERT_LE(std::fabs(got[k] - ref[k]), 1.01 * depth * 0x1p-24 * m + 0x1p-7 * m + 1e-30) << p;
        }
    }
}

// ---- the tile model against SIMDe --------------------------------------------------------------

#ifdef LQ_HAVE_SIMDE_BF16
// One TDPBF16PS per the SDM, built from SIMDe's VDPBF16PS (lane i += a[2i] b[2i] + a[2i+1] b[2i+1], in
// that order): per row m, the even chain is a run of VDPBF16PS whose odd elements are zero, the odd
// chain likewise, then the two are added and accumulated into the row.
void simde_tdpbf16ps(float c[16][16], const uint16_t a[16][32], const uint16_t b[16][32]) {
  for (int m = 0; m < 16; ++m) {
    simde__m512 even = simde_mm512_setzero_ps(), odd = simde_mm512_setzero_ps();
    for (int k = 0; k < 16; ++k) {
      uint16_t ae[32] = {}, ao[32] = {}, be[32] = {}, bo[32] = {};
      for (int n = 0; n < 16; ++n) {
        ae[2 * n] = a[m][2 * k];
        ao[2 * n + 1] = a[m][2 * k + 1];
        be[2 * n] = b[k][2 * n];
        bo[2 * n + 1] = b[k][2 * n + 1];
      }
      simde__m512bh vae, vao, vbe, vbo;
      std::memcpy(&vae, ae, 64);
      std::memcpy(&vao, ao, 64);
      std::memcpy(&vbe, be, 64);
      std::memcpy(&vbo, bo, 64);
      even = simde_mm512_dpbf16_ps(even, vae, vbe);
      odd = simde_mm512_dpbf16_ps(odd, vao, vbo);
    }
    const simde__m512 row = simde_mm512_add_ps(simde_mm512_loadu_ps(c[m]), simde_mm512_add_ps(even, odd));
    simde_mm512_storeu_ps(c[m], row);
  }
}

TEST(AmxModel, Tdpbf16psEqualsSimdeComposition) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int trial = 0; trial < 200; ++trial) {
    uint16_t a[16][32], b[16][32];
    float c1[16][16], c2[16][16];
    for (auto& row : a)
      for (auto& v : row) v = num::f32_to_bf16(nd(rng));
    for (auto& row : b)
      for (auto& v : row) v = num::f32_to_bf16(nd(rng) * (trial % 2 ? 1e3f : 1e-3f));
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 16; ++n) c1[m][n] = c2[m][n] = nd(rng) * 10.0f;
    detail::amx_model_dpbf16ps(c1, a, b);
    simde_tdpbf16ps(c2, a, b);
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 16; ++n) ASSERT_EQ(c1[m][n], c2[m][n]) << "trial " << trial << " (" << m << "," << n << ")";
  }
}
#else
TEST(AmxModel, Tdpbf16psEqualsSimdeComposition) {
  GTEST_SKIP() << "SIMDe (Debian libsimde-dev) is not installed: tools/install-deps.sh installs it";
}
#endif

// The model flushes denormal inputs and outputs (DAZ / FTZ), as the SDM states.
TEST(AmxModel, FlushesDenormals) {
  uint16_t a[16][32] = {}, b[16][32] = {};
  float c[16][16] = {};
  a[0][0] = 0x0001;  // the smallest bf16 denormal
  b[0][0] = 0x3f80;  // 1.0
  a[1][0] = 0x0080;  // 2^-126, the smallest normal
  b[0][2] = 0x3f00;  // 0.5: the product 2^-127 is denormal
  detail::amx_model_dpbf16ps(c, a, b);
  EXPECT_EQ(c[0][0], 0.0f);
  EXPECT_EQ(c[1][1], 0.0f);
  a[2][0] = 0x0080;
  detail::amx_model_dpbf16ps(c, a, b);
  EXPECT_EQ(c[2][0], 0x1p-126f);
}

}  // namespace
}  // namespace lq::kernels
