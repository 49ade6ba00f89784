// Blocked ("flash") attention against the materialised-mask reference on long chunks with every split
// kind (the latent noise blocks of t2i, a cached text prefix, causal text after them), and the
// vectorised element-wise pieces (vec_math.h) against their scalar definitions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "forward/attention.h"
#include "forward/vec_math.h"
#include "golden_util.h"
#include "kernels/parallel.h"
#include "test_random.h"

namespace lq::fwd {
namespace {

struct Problem {
  AttentionShape shape;
  std::vector<Split> splits;
  int64_t prefix;
  std::vector<float> q, k, v;
  int64_t keys() const {
    int64_t n = 0;
    for (const Split& s : splits) n += s.len;
    return n;
  }
  int64_t rows() const { return keys() - prefix; }
  Problem(AttentionShape s, std::vector<Split> sp, int64_t pre, uint32_t seed) : shape(s), splits(std::move(sp)), prefix(pre) {
    q = lq::test::gaussian(size_t(rows() * s.num_heads * s.head_dim), 1.0f, seed);
    k = lq::test::gaussian(size_t(keys() * s.num_kv_heads * s.head_dim), 1.0f, seed + 1);
    v = lq::test::gaussian(size_t(keys() * s.num_kv_heads * s.head_dim), 1.0f, seed + 2);
  }
  std::vector<float> run(void (*fn)(const AttentionShape&, const AttentionLayout&, const float*, const float*,
                                    const float*, float*)) const {
    std::vector<float> out(q.size(), NAN);
    fn(shape, make_attention_layout(splits, prefix, rows()), q.data(), k.data(), v.data(), out.data());
    return out;
  }
  std::vector<float> ref() const {
    std::vector<float> out(q.size());
    attention_ref(shape, splits, prefix, rows(), q.data(), k.data(), v.data(), out.data());
    return out;
  }
};

// Scores of N(0, 1) q, k scaled by 1/sqrt(hd) spread the softmax over many keys, so the output is a
// weighted mean of many values: f32 accumulation over ~1000 keys (scores, the sum l, P V) stays within
// a few 1e-6 of the double reference relative to the largest output.
constexpr double kBudget = 1e-5;

TEST(BlockedAttention, LongNoiseBlockAfterCachedText) {
  // A t2i denoising step: 37 cached text rows (causal), a 600-row noise block as the chunk.
  const Problem p({8, 2, 64}, {{37, SplitMode::Causal}, {600, SplitMode::Noise}}, 37, 1);
  EXPECT_LT(test::rel_max_err(p.run(attention_blocked), p.ref()), kBudget);
}

TEST(BlockedAttention, EverySplitKindInOneChunk) {
  // Causal text, a full (clean image) block, a noise block, then causal text that must not see it; in
  // blocks that straddle the split boundaries and tiles that straddle range ends.
  for (int64_t prefix : {int64_t(0), int64_t(45)}) {
    const Problem p({4, 2, 32},
                    {{45, SplitMode::Causal}, {70, SplitMode::Full}, {130, SplitMode::Noise}, {33, SplitMode::Causal}},
                    prefix, 7);
    EXPECT_LT(test::rel_max_err(p.run(attention_blocked), p.ref()), kBudget) << "prefix " << prefix;
    EXPECT_LT(test::rel_max_err(p.run(attention_rowwise), p.ref()), kBudget) << "prefix " << prefix;
  }
}

TEST(BlockedAttention, GroupsAndHeadDims) {
  // GQA groups 1, 4 and 8 (Lance 3B: 16 / 2), head dims 16, 48 and 128, a row count off the 16-row blocks.
  for (const AttentionShape s : {AttentionShape{2, 2, 16}, AttentionShape{8, 2, 48}, AttentionShape{16, 2, 128}}) {
    const Problem p(s, {{20, SplitMode::Causal}, {77, SplitMode::Noise}}, 20, 3);
    EXPECT_LT(test::rel_max_err(p.run(attention_blocked), p.ref()), kBudget) << s.num_heads << "/" << s.head_dim;
  }
}

TEST(BlockedAttention, DispatchAndThreadCountInvariance) {
  const Problem p({4, 1, 32}, {{10, SplitMode::Causal}, {90, SplitMode::Noise}, {5, SplitMode::Causal}}, 0, 5);
  const std::vector<float> blocked = p.run(attention_blocked);
  EXPECT_EQ(p.run(attention), blocked);  // 105 rows: the blocked path
  kernels::set_num_threads(1);
  const std::vector<float> one = p.run(attention_blocked);
  kernels::set_num_threads(3);
  const std::vector<float> three = p.run(attention_blocked);
  kernels::set_num_threads(0);
  EXPECT_EQ(one, blocked);
  EXPECT_EQ(three, blocked);
  // Decode-sized chunks take the row-wise path.
  const Problem d({4, 1, 32}, {{60, SplitMode::Causal}, {3, SplitMode::Causal}}, 60, 9);
  EXPECT_EQ(d.run(attention), d.run(attention_rowwise));
  EXPECT_LT(test::rel_max_err(d.run(attention), d.ref()), kBudget);
}

// ---- vec_math ---------------------------------------------------------------------------------

double ulp_distance(float a, float b) {
  if (a == b) return 0.0;
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  if ((ia < 0) != (ib < 0)) return INFINITY;
  return std::fabs(double(ia) - double(ib));
}

TEST(VecMath, ExpWithinTwoUlp) {
  std::vector<float> x;
  for (float v = -87.0f; v <= 88.5f; v += 0.01337f) x.push_back(v);
  for (float v : {0.0f, -0.0f, 1e-8f, -1e-8f, 1.0f, -1.0f, 0.5f * std::log(2.0f)}) x.push_back(v);
  std::vector<float> y(x.size());
  exp_f32(x.data(), y.data(), int64_t(x.size()));
  double worst = 0.0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, ulp_distance(y[i], std::exp(x[i])));
  std::printf("vector exp: worst %.0f ulp over %zu points (%s)\n", worst, x.size(), vec_math_simd() ? "AVX2" : "scalar");
  EXPECT_LE(worst, 2.0);
  // Edges: far below the range 0, above +inf, -inf 0, NaN stays NaN.
  const float edge[5] = {-1000.0f, 1000.0f, -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity(), NAN};
  float out[5];
  exp_f32(edge, out, 5);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], std::numeric_limits<float>::infinity());
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_EQ(out[3], std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(out[4]));
}

TEST(VecMath, VectorPiecesMatchScalarDefinitions) {
  const int64_t rows = 37, dim = 136, half = 36, heads = 3;
  const std::vector<float> x = lq::test::gaussian(size_t(rows * dim), 2.0f, 1), w = lq::test::gaussian(size_t(dim), 1.0f, 2);
  std::vector<const float*> wp(size_t(rows), w.data());
  std::vector<float> a(x.size()), b(x.size());
  rms_norm_rows(x.data(), rows, dim, 1e-6, wp.data(), a.data());
  set_vec_math_scalar(true);
  rms_norm_rows(x.data(), rows, dim, 1e-6, wp.data(), b.data());
  set_vec_math_scalar(false);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_LE(ulp_distance(a[i], b[i]), 2.0) << i;  // inv may differ in its last bit

  std::vector<float> g = lq::test::gaussian(5000, 4.0f, 3), gs = g;
  const std::vector<float> u = lq::test::gaussian(5000, 1.0f, 4);
  silu_mul(g.data(), u.data(), int64_t(g.size()));
  for (size_t i = 0; i < gs.size(); ++i) gs[i] = gs[i] / (1.0f + std::exp(-gs[i])) * u[i];
  for (size_t i = 0; i < g.size(); ++i) ASSERT_LE(ulp_distance(g[i], gs[i]), 4.0) << i;

  std::vector<float> r = lq::test::gaussian(size_t(rows * heads * 2 * half), 1.0f, 5), rs = r;
  const std::vector<float> cs = lq::test::gaussian(size_t(rows * half), 1.0f, 6), sn = lq::test::gaussian(size_t(rows * half), 1.0f, 7);
  rope_rotate(r.data(), rows, heads, int(half), cs.data(), sn.data());
  set_vec_math_scalar(true);
  rope_rotate(rs.data(), rows, heads, int(half), cs.data(), sn.data());
  set_vec_math_scalar(false);
  EXPECT_EQ(r, rs);
}

}  // namespace
}  // namespace lq::fwd
