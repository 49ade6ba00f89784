// Every linear path (linear_dot, linear_gemm, the linear() dispatcher, linear_scalar) against the
// double-accumulation reference linear_ref() with an explicit error budget per path, on odd shapes
// (k tails, column counts off the 16-wide panels, token counts that leave tile remainders, every
// cache-block boundary), with and without bias, f32 and bf16 weights; plus determinism across thread
// counts, rows independent of the batch within each path, the dispatch rule, no writes outside y and
// weights read from read-only memory.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "io/error.h"
#include "kernels/linear.h"
#include "num/formats.h"

namespace {

using lq::kernels::DenseMatrix;
using lq::kernels::WeightType;
namespace kernels = lq::kernels;

struct ThreadCountGuard {
  explicit ThreadCountGuard(int n) { kernels::set_num_threads(n); }
  ~ThreadCountGuard() { kernels::set_num_threads(0); }
};

struct Problem {
  int64_t n, in, out;
  WeightType type;
  bool with_bias;
  std::vector<float> x, bias, w_f32;
  std::vector<uint16_t> w_bf16;

  Problem(int64_t n_, int64_t in_, int64_t out_, WeightType t, bool b, uint32_t seed)
      : n(n_), in(in_), out(out_), type(t), with_bias(b) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    x.resize(n * in);
    for (auto& v : x) v = normal(rng);
    w_f32.resize(out * in);
    for (auto& v : w_f32) v = 0.05f * normal(rng);
    if (type == WeightType::BF16) {
      w_bf16.resize(w_f32.size());
      lq::num::f32_to_bf16(w_f32.data(), w_bf16.data(), w_f32.size());
    }
    if (with_bias) {
      bias.resize(out);
      for (auto& v : bias) v = normal(rng);
    }
  }
  DenseMatrix matrix() const {
    const void* data = type == WeightType::F32 ? static_cast<const void*>(w_f32.data())
                                               : static_cast<const void*>(w_bf16.data());
    return {type, out, in, data};
  }
  const float* bias_ptr() const { return with_bias ? bias.data() : nullptr; }
  std::vector<float> run(void (*fn)(const float*, int64_t, const DenseMatrix&, const float*, float*),
                         int64_t tokens = -1, int64_t first_token = 0) const {
    if (tokens < 0) tokens = n;
    // Guard elements after y catch writes past the output (e.g. from short panels or tiles).
    constexpr int64_t kGuard = 64;
    constexpr float kSentinel = 12345.0f;
    std::vector<float> y(tokens * out + kGuard, kSentinel);
    std::fill_n(y.begin(), tokens * out, NAN);
    fn(x.data() + first_token * in, tokens, matrix(), bias_ptr(), y.data());
    for (int64_t i = tokens * out; i < tokens * out + kGuard; ++i)
      EXPECT_EQ(y[i], kSentinel) << "write past y[" << tokens * out << "] at " << i;
    y.resize(tokens * out);
    return y;
  }
  float weight(int64_t o, int64_t i) const {
    return type == WeightType::F32 ? w_f32[o * in + i] : lq::num::bf16_to_f32(w_bf16[o * in + i]);
  }
};

using LinearFn = void (*)(const float*, int64_t, const DenseMatrix&, const float*, float*);

// Worst-case f32 rounding depth of one output (how many roundings its running sum goes through),
// each adding at most one unit roundoff (2^-24) of a magnitude bounded by sum |x w| + |bias|.
// dot:    ceil(in/8) FMAs per lane, a 3-level horizontal sum, in % 8 tail FMAs, the bias add.
// gemm:   one FMA chain per 256-wide k block (at most 256 roundings), one add per block, the bias add.
// scalar: in/8 adds per partial sum, a 3-level pairwise sum, the bias add.
double dot_depth(int64_t in) { return double((in + 7) / 8 + 3 + in % 8 + 1); }
double gemm_depth(int64_t in) { return double(std::min<int64_t>(in, 256) + (in + 255) / 256 + 1); }
double scalar_depth(int64_t in) { return double((in + 7) / 8 + 3 + 1); }

struct Path {
  const char* name;
  LinearFn fn;
  double (*depth)(int64_t in);
};
const Path kDot{"linear_dot", kernels::linear_dot, dot_depth};
const Path kGemm{"linear_gemm", kernels::linear_gemm, gemm_depth};
const Path kScalar{"linear_scalar", kernels::linear_scalar, scalar_depth};
// linear() runs one of the two AVX2 paths; the budget allows either.
double dispatch_depth(int64_t in) { return std::max(dot_depth(in), gemm_depth(in)); }
const Path kDispatch{"linear", kernels::linear, dispatch_depth};

void expect_within_budget(const Problem& p, const Path& path, const std::vector<float>& got,
                          const std::vector<float>& want) {
  const double depth = path.depth(p.in);
  for (int64_t t = 0; t < p.n; ++t)
    for (int64_t o = 0; o < p.out; ++o) {
      double magnitude = p.with_bias ? std::fabs(p.bias[o]) : 0.0;
      for (int64_t i = 0; i < p.in; ++i) magnitude += std::fabs(double(p.x[t * p.in + i]) * p.weight(o, i));
      const double budget = 1.01 * depth * 0x1p-24 * magnitude + 1e-30;
      const int64_t k = t * p.out + o;
      ASSERT_LE(std::fabs(double(got[k]) - double(want[k])), budget)
          << path.name << ": token " << t << " row " << o << " shape n=" << p.n << " in=" << p.in
          << " out=" << p.out << (p.type == WeightType::BF16 ? " bf16" : " f32")
          << (p.with_bias ? " bias" : "") << ": got " << got[k] << " want " << want[k];
    }
}

void expect_matches_reference(const Problem& p, const Path& path) {
  expect_within_budget(p, path, p.run(path.fn), p.run(kernels::linear_ref));
}

TEST(Linear, ReportsSimdPath) {
  const std::string path = kernels::simd_path();
  EXPECT_TRUE(path == "avx2" || path == "scalar") << path;
}

// Token counts around the 6-token GEMM tile and the dispatch threshold; k tails of every length
// mod 8 and k blocks of 256; output counts below, at and past the 16-wide panel.
void check_odd_shapes(const Path& path, uint32_t seed) {
  for (WeightType type : {WeightType::F32, WeightType::BF16})
    for (bool with_bias : {false, true})
      for (int64_t n : {1, 2, 3, 5, 6, 7, 8, 13, 17, 64})
        for (int64_t in : {1, 7, 8, 13, 67, 130, 257, 515})
          for (int64_t out : {1, 3, 13, 16, 17, 37}) {
            const Problem p(n, in, out, type, with_bias, seed++);
            expect_matches_reference(p, path);
            if (::testing::Test::HasFatalFailure()) return;
          }
}

TEST(Linear, DotPathMatchesReferenceOnOddShapes) { check_odd_shapes(kDot, 1); }
TEST(Linear, GemmPathMatchesReferenceOnOddShapes) { check_odd_shapes(kGemm, 20000); }
TEST(Linear, DispatchMatchesReferenceOnOddShapes) { check_odd_shapes(kDispatch, 40000); }

// From 64 output columns per thread the GEMM packs the activations (narrower ranges read x in
// place; BitIdenticalAcrossThreadCounts checks the two agree bit for bit): odd tiles and k tails.
TEST(Linear, GemmWithPackedActivationsMatchesReference) {
  ThreadCountGuard one_thread(1);
  uint32_t seed = 60000;
  for (WeightType type : {WeightType::F32, WeightType::BF16})
    for (int64_t n : {1, 5, 6, 7, 13, 64})
      for (int64_t in : {7, 8, 67, 257, 515}) {
        expect_matches_reference(Problem(n, in, 67, type, true, seed++), kGemm);
        if (HasFatalFailure()) return;
      }
}

// Shapes that cross every blocking boundary. Dot path: several 64-token blocks, 24-row groups and
// 512-wide k blocks, with a k tail. GEMM: several 96-token blocks ending in a 4-token tile, three
// 256-wide k blocks (the last 91 wide, 3 past a multiple of 8), two 512-column blocks ending in a
// 2-column panel.
TEST(Linear, MatchesReferenceAcrossCacheBlocks) {
  for (WeightType type : {WeightType::F32, WeightType::BF16}) {
    expect_matches_reference(Problem(70, 2051, 101, type, true, 99), kDot);
    expect_matches_reference(Problem(196, 603, 530, type, true, 98), kGemm);
    if (HasFatalFailure()) return;
  }
}

TEST(Linear, ScalarPathMatchesReference) {
  uint32_t seed = 1000;
  for (WeightType type : {WeightType::F32, WeightType::BF16})
    for (int64_t n : {1, 3, 17})
      for (int64_t in : {1, 13, 130})
        for (int64_t out : {1, 5, 37}) {
          const Problem p(n, in, out, type, true, seed++);
          expect_matches_reference(p, kScalar);
          if (HasFatalFailure()) return;
        }
}

// Results are deterministic and do not depend on how the output columns are split over threads
// (with 1 thread the GEMM packs the activations, with 7 threads its 37-column ranges read x in place).
TEST(Linear, BitIdenticalAcrossThreadCounts) {
  for (WeightType type : {WeightType::F32, WeightType::BF16})
    for (int64_t n : {1, 6, 8, 17, 100}) {
      // Large enough (in * out > 2^16 multiply-adds) that the rows are really split.
      const Problem p(n, 515, 259, type, true, 77);
      std::vector<float> first;
      for (int threads : {1, 2, 3, 4, 7}) {
        ThreadCountGuard guard(threads);
        const auto y = p.run(kernels::linear);
        if (first.empty()) first = y;
        ASSERT_EQ(std::memcmp(y.data(), first.data(), y.size() * 4), 0)
            << threads << " threads, n=" << n;
      }
    }
}

// Within one path a token's row does not depend on which other tokens share the call. (Across
// paths it may differ in the last bits: linear() switches from dot to GEMM at kGemmMinTokens.)
TEST(Linear, EachPathGivesBatchRowsEqualToSingleTokenCalls) {
  for (const Path* path : {&kDot, &kGemm})
    for (WeightType type : {WeightType::F32, WeightType::BF16}) {
      const Problem p(103, 300, 45, type, true, 5);
      const auto batch = p.run(path->fn);
      for (int64_t t = 0; t < p.n; ++t) {
        const auto one = p.run(path->fn, 1, t);
        ASSERT_EQ(std::memcmp(one.data(), batch.data() + t * p.out, p.out * 4), 0)
            << path->name << " token " << t;
      }
    }
}

TEST(Linear, DispatchesByTokenCount) {
  for (int64_t n : {int64_t(1), kernels::kGemmMinTokens - 1, kernels::kGemmMinTokens, int64_t(40)}) {
    const Problem p(n, 77, 21, WeightType::BF16, true, 11);
    const auto got = p.run(kernels::linear);
    const auto want = p.run(n >= kernels::kGemmMinTokens ? kernels::linear_gemm : kernels::linear_dot);
    ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0) << "n=" << n;
  }
}

#ifdef __linux__
// Checkpoint weights are often a read-only mmap: no path may write to W (packing copies it).
TEST(Linear, ReadsWeightsFromReadOnlyMemory) {
  for (WeightType type : {WeightType::F32, WeightType::BF16}) {
    const Problem p(40, 300, 37, type, true, 21);
    const size_t bytes = size_t(p.in * p.out) * (type == WeightType::F32 ? 4 : 2);
    void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(mem, MAP_FAILED);
    std::memcpy(mem, p.matrix().data, bytes);
    ASSERT_EQ(mprotect(mem, bytes, PROT_READ), 0);
    DenseMatrix ro = p.matrix();
    ro.data = mem;
    for (const Path* path : {&kDot, &kGemm}) {
      std::vector<float> got(size_t(p.n * p.out)), want(got.size());
      path->fn(p.x.data(), p.n, ro, p.bias_ptr(), got.data());
      path->fn(p.x.data(), p.n, p.matrix(), p.bias_ptr(), want.data());
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0) << path->name;
    }
    munmap(mem, bytes);
  }
}
#endif

TEST(Linear, ZeroInputFeaturesGiveBias) {
  const float bias[3] = {1.5f, -2.0f, 0.25f};
  const DenseMatrix w{WeightType::F32, 3, 0, nullptr};
  for (const Path* path : {&kDot, &kGemm, &kDispatch})
    for (int64_t n : {int64_t(2), int64_t(9)}) {
      std::vector<float> y(size_t(n * 3), NAN);
      path->fn(nullptr, n, w, bias, y.data());
      for (int64_t t = 0; t < n; ++t)
        for (int o = 0; o < 3; ++o) EXPECT_EQ(y[size_t(t * 3 + o)], bias[o]) << path->name;
    }
}

TEST(Linear, RejectsInvalidArguments) {
  float x[4] = {}, y[4] = {};
  const DenseMatrix null_w{WeightType::F32, 2, 2, nullptr};
  const float w[4] = {};
  const DenseMatrix ok{WeightType::F32, 2, 2, w};
  for (const Path* path : {&kDot, &kGemm, &kDispatch}) {
    EXPECT_THROW(path->fn(x, 1, null_w, nullptr, y), lq::Error) << path->name;
    EXPECT_THROW(path->fn(x, -1, ok, nullptr, y), lq::Error) << path->name;
    EXPECT_THROW(path->fn(nullptr, 1, ok, nullptr, y), lq::Error) << path->name;
    EXPECT_THROW(path->fn(x, 1, ok, nullptr, nullptr), lq::Error) << path->name;
  }
}

}  // namespace
