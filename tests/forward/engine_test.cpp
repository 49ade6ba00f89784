// Engine pieces: range-based split-mask attention vs a materialised-mask reference, the linear
// interface (observer sees routed inputs; replace_linear swaps implementations), and bf16 storage
// error against the fp32 goldens.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>

#include "forward/attention.h"
#include "forward/forward.h"
#include "forward/t2i.h"
#include "golden_util.h"
#include "io/error.h"
#include "io/safetensors.h"
#include "forward/quant_linear.h"
#include "quant/quantizer.h"
#include "test_paths.h"
#include "test_random.h"

namespace lq::fwd {
namespace {

std::vector<float> random_vec(size_t n, uint32_t seed) { return lq::test::gaussian(n, 1.0f, seed); }

TEST(Attention, SplitMaskMatchesMaterialisedReference) {
  const AttentionShape s{4, 2, 16};
  // Cached prefix (causal, full, causal) then a chunk (causal, noise, causal): every mask case.
  const std::vector<Split> splits = {{5, SplitMode::Causal}, {4, SplitMode::Full}, {3, SplitMode::Causal},
                                     {2, SplitMode::Causal}, {6, SplitMode::Noise}, {3, SplitMode::Causal}};
  for (int64_t prefix : {int64_t(0), int64_t(12)}) {
    const int64_t keys = 23, rows = keys - prefix;
    const auto q = random_vec(size_t(rows * 64), 1), k = random_vec(size_t(keys * 32), 2),
               v = random_vec(size_t(keys * 32), 3);
    std::vector<float> got(q.size()), want(q.size());
    attention(s, make_attention_layout(splits, prefix, rows), q.data(), k.data(), v.data(), got.data());
    attention_ref(s, splits, prefix, rows, q.data(), k.data(), v.data(), want.data());
    EXPECT_LT(test::rel_max_err(got, want), 1e-5) << "prefix " << prefix;
  }
}

TEST(Attention, NoiseBlockIsInvisibleToLaterRows) {
  const std::vector<Split> splits = {{3, SplitMode::Causal}, {4, SplitMode::Noise}, {2, SplitMode::Causal}};
  const AttentionLayout a = make_attention_layout(splits, 0, 9);
  std::vector<KeyRange> r;
  a.visible(8, r);  // last text row: sees 0..2 and 7..8, not the noise rows 3..6
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].begin, 0);
  EXPECT_EQ(r[0].end, 3);
  EXPECT_EQ(r[1].begin, 7);
  EXPECT_EQ(r[1].end, 9);
  a.visible(3, r);  // first noise row: all text before plus its whole block (one merged range)
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].begin, 0);
  EXPECT_EQ(r[0].end, 7);
  a.visible(1, r);  // causal text row
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].end, 2);
}

// Records the rows each linear saw.
struct RowRecorder : ActivationObserver {
  std::map<std::tuple<int, int, int>, int64_t> rows;
  std::vector<float> layer0_q_und;
  void observe(const LinearId& id, const float* x, int64_t n, int64_t in) override {
    rows[{id.layer, int(id.path), int(id.kind)}] += n;
    if (id.layer == 0 && id.path == Path::Und && id.kind == LinearKind::Q) layer0_q_und.assign(x, x + n * in);
  }
};

// Delegates to the original weights and counts calls.
struct CountingLinear : LinearWeights {
  const LinearWeights& inner;
  mutable int calls = 0;
  explicit CountingLinear(const LinearWeights& w) : inner(w) {}
  int64_t in_features() const override { return inner.in_features(); }
  int64_t out_features() const override { return inner.out_features(); }
  uint64_t weight_bytes() const override { return inner.weight_bytes(); }
  void apply(const float* x, int64_t n, float* y) const override {
    ++calls;
    inner.apply(x, n, y);
  }
};

TEST(LinearInterface, ObserverSeesRoutedRowsAndReplacementIsUsed) {
  LQ_REQUIRE_SHARED();
  Engine e = Engine::load(test::lance_mini_dir());
  io::TensorStore golden(test::lance_mini_dir() + "/golden/gen_golden.safetensors");
  io::TensorStore weights(test::lance_mini_dir() + "/model.safetensors");
  const auto x = golden.read_f32("gen.0.x_tau");
  const T2iPrompt p = build_t2i_prompt(std::vector<int32_t>(10, 100), {200, 201}, {300, 301}, 4259, 4260, {1, 8, 8});
  const Chunk c = full_branch_chunk(e, p.cond, p.vision_start, p.vision_end, p.grid, x.data(), 0.5);
  RowRecorder rec;
  e.set_observer(&rec);
  const auto before = e.forward(c, nullptr, CacheWrite::No);
  e.set_observer(nullptr);
  ASSERT_EQ(rec.rows.size(), size_t(e.num_layers() * 14));
  EXPECT_EQ(e.linear_spec({1, Path::Gen, LinearKind::Gate}).name, "language_model.model.layers.1.mlp_moe_gen.gate_proj");
  for (const auto& [key, n] : rec.rows) EXPECT_EQ(n, std::get<1>(key) == int(Path::Gen) ? 64 : c.rows() - 64);

  // Layer-0 q_proj (und) input = RMSNorm_in(embedding) of the und rows, recomputed here.
  const auto w = weights.read_f32("language_model.model.layers.0.input_layernorm.weight");
  const int64_t H = e.config().hidden_size;
  std::vector<float> want;
  for (int64_t r = 0; r < c.rows(); ++r) {
    if (c.paths[r] != Path::Und) continue;
    double ss = 0;
    for (int64_t i = 0; i < H; ++i) ss += double(c.embeddings[r * H + i]) * c.embeddings[r * H + i];
    for (int64_t i = 0; i < H; ++i) want.push_back(float(w[i] * c.embeddings[r * H + i] / std::sqrt(ss / H + 1e-6)));
  }
  EXPECT_LT(test::rel_max_err(rec.layer0_q_und, want), 1e-6);

  // A replacement linear is what runs; identical weights give identical results.
  const LinearId id{1, Path::Gen, LinearKind::Down};
  Engine original = Engine::load(test::lance_mini_dir());
  auto counting = std::make_unique<CountingLinear>(original.linear(id));
  const CountingLinear* probe = counting.get();
  e.replace_linear(id, std::move(counting));
  EXPECT_EQ(e.forward(c, nullptr, CacheWrite::No), before);
  EXPECT_EQ(probe->calls, 1);
  EXPECT_THROW(e.replace_linear({0, Path::Und, LinearKind::Q}, std::make_unique<CountingLinear>(original.linear(id))),
               lq::Error);
}

// bf16 weight storage: errors are printed (the report quotes them), loosely bounded.
TEST(Bf16Storage, ErrorsAgainstFp32Goldens) {
  LQ_REQUIRE_SHARED();
  LoadOptions o;
  o.storage = WeightStorage::BF16;
  Engine e = Engine::load(test::lance_mini_dir(), o);
  io::TensorStore und(test::lance_mini_dir() + "/golden/und_golden.safetensors");
  io::TensorStore gen(test::lance_mini_dir() + "/golden/gen_golden.safetensors");
  const auto ids = test::read_i32(und, "und.3.input_ids");
  const int64_t T = int64_t(ids.size());
  const auto normed = e.forward(text_chunk(e, ids, text_positions(T), {{T, SplitMode::Causal}}), nullptr, CacheWrite::No);
  const double e_logits = test::rel_max_err(e.logits(normed.data(), T), und.read_f32("und.3.logits"));

  const auto c = test::read_i32(gen, "gen.0.cond.input_ids");
  const auto lens = test::read_i32(gen, "gen.0.cond.split_lens");
  const std::vector<int32_t> s1(c.begin(), c.begin() + lens[0]), s2(c.begin() + lens[0], c.begin() + lens[0] + lens[1]),
      s3(c.begin() + lens[0] + lens[1], c.begin() + lens[0] + lens[1] + lens[2]);
  T2iSampler s(e, build_t2i_prompt(s1, s2, s3, 4259, 4260, {1, 8, 8}));
  const auto x = gen.read_f32("gen.0.x_tau");
  const auto v = s.velocity(true, x.data(), gen.read_f32("gen_taus")[0]);
  const auto v_cond = gen.read_f32("gen.0.v_cond");
  const std::vector<float> v0(v_cond.begin(), v_cond.begin() + 64 * 48);
  const double e_v = test::rel_max_err(v, v0);
  const double e_final = test::rel_l2_err(s.sample(gen.read_f32("gen.0.noise"), {}), gen.read_f32("gen.0.sample.final"));
  std::printf("bf16 weights: und.3 logits rel max err %.3e, gen.0 v_cond(tau0) rel max err %.3e, "
              "gen.0 sample.final rel L2 %.3e\n", e_logits, e_v, e_final);
  EXPECT_LT(e_logits, 5e-2);
  EXPECT_LT(e_v, 5e-2);
  EXPECT_LT(e_final, 5e-2);
}

// The decoder MLP runs over row blocks (set_mlp_block_rows; memory bound for long chunks): a long
// chunk with both paths, one MLP linear 4-bit, gives the same output bit for bit with blocks of 64, 256
// and one block, and the observer sees every row of each linear, block by block.
TEST(MlpBlocks, LongMixedChunkEqualsTheUnblockedForwardBitForBit) {
  LQ_REQUIRE_SHARED();
  Engine e = Engine::load(test::lance_mini_dir());
  std::vector<int32_t> text(700);
  for (size_t i = 0; i < text.size(); ++i) text[i] = int32_t(10 + i * 37 % 4000);
  const T2iPrompt p = build_t2i_prompt(text, {200, 201}, {300, 301}, 4259, 4260, {1, 24, 24});
  const auto x = random_vec(size_t(576 * e.config().latent_channels), 21);
  const Chunk c = full_branch_chunk(e, p.cond, p.vision_start, p.vision_end, p.grid, x.data(), 0.5);
  const int64_t und = std::count(c.paths.begin(), c.paths.end(), Path::Und);
  ASSERT_GT(und, 700);
  ASSERT_EQ(c.rows() - und, 576);
  // A 4-bit linear (W4A16 GEMM above q4_int8_max_tokens() rows) among the dense ones.
  io::TensorStore weights(test::lance_mini_dir() + "/model.safetensors");
  const LinearId qid{1, Path::Gen, LinearKind::Up};
  const auto w = weights.read_f32(e.linear_spec(qid).name + ".weight");
  quant::QuantParams qp;
  qp.scheme = quant::Scheme::Int4Asym;
  qp.group = 64;
  const LinearWeights& dense = e.linear(qid);
  e.replace_linear(qid, make_quant_linear(quant::quantize(w.data(), dense.out_features(), dense.in_features(), qp), {}, "up"));

  struct Blocks : ActivationObserver {
    std::map<std::tuple<int, int, int>, std::pair<int, int64_t>> calls;  // (calls, rows)
    void observe(const LinearId& id, const float*, int64_t n, int64_t) override {
      auto& v = calls[{id.layer, int(id.path), int(id.kind)}];
      ++v.first;
      v.second += n;
    }
  };
  auto run = [&](int64_t block, Blocks& obs) {
    set_mlp_block_rows(block);
    e.set_observer(&obs);
    auto y = e.forward(c, nullptr, CacheWrite::No);
    e.set_observer(nullptr);
    return y;
  };
  Blocks one, b256, b64;
  const auto ref = run(int64_t(1) << 40, one);
  const auto y256 = run(256, b256);
  const auto y64 = run(64, b64);
  set_mlp_block_rows(256);
  EXPECT_EQ(y256, ref);
  EXPECT_EQ(y64, ref);
  for (int l = 0; l < e.num_layers(); ++l)
    for (int path = 0; path < 2; ++path) {
      const int64_t n = path == int(Path::Und) ? und : 576;
      for (int kind : {int(LinearKind::Gate), int(LinearKind::Down)}) {
        EXPECT_EQ(one.calls.at({l, path, kind}), std::make_pair(1, n));
        EXPECT_EQ(b256.calls.at({l, path, kind}), std::make_pair(int(n / 256), n));
        EXPECT_EQ(b64.calls.at({l, path, kind}), std::make_pair(int(n / 64), n));
      }
    }
}

}  // namespace
}  // namespace lq::fwd
