// Understanding path against the fp32 goldens of lance-mini: residual stream per layer, final norm,
// logits, greedy continuations (KV-cache decoding), and cache-vs-recompute equality.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>

#include "forward/forward.h"
#include "forward/text.h"
#include "golden_util.h"
#include "io/error.h"
#include "test_paths.h"

namespace lq::fwd {
namespace {

constexpr double kTol = 1e-4;

class UndGolden : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (test::shared_dir().empty()) return;
    engine_ = std::make_unique<Engine>(Engine::load(test::lance_mini_dir()));
    golden_ = std::make_unique<io::TensorStore>(test::lance_mini_dir() + "/golden/und_golden.safetensors");
  }
  static void TearDownTestSuite() {
    engine_.reset();
    golden_.reset();
  }
  static std::vector<int32_t> ids(int i) { return test::read_i32(*golden_, "und." + std::to_string(i) + ".input_ids"); }
  static std::unique_ptr<Engine> engine_;
  static std::unique_ptr<io::TensorStore> golden_;
};
std::unique_ptr<Engine> UndGolden::engine_;
std::unique_ptr<io::TensorStore> UndGolden::golden_;

TEST_F(UndGolden, HiddenStatesFinalNormAndLogits) {
  LQ_REQUIRE_SHARED();
  for (int i = 0; i < 4; ++i) {
    const std::string p = "und." + std::to_string(i) + ".";
    const auto tokens = ids(i);
    const int64_t T = int64_t(tokens.size());
    // Positions: the golden's [3, T] rows must be 0..T-1 (what text_positions gives).
    const auto pos = test::read_i32(*golden_, p + "position_ids");
    const auto mine = text_positions(T);
    for (int64_t t = 0; t < T; ++t)
      for (int a = 0; a < 3; ++a) ASSERT_EQ(pos[a * T + t], mine[t][a]) << p << " position " << t;

    std::vector<float> states;
    const auto normed = engine_->forward(text_chunk(*engine_, tokens, mine, {{T, SplitMode::Causal}}), nullptr,
                                         CacheWrite::No, &states);
    const auto want_states = golden_->read_f32(p + "hidden_states");
    ASSERT_EQ(states.size(), want_states.size());
    const size_t per_layer = size_t(T) * engine_->config().hidden_size;
    for (int l = 0; l <= engine_->num_layers(); ++l) {
      const double e = test::rel_max_err(states.data() + l * per_layer, want_states.data() + l * per_layer, per_layer);
      EXPECT_LT(e, kTol) << p << "hidden_states[" << l << "]";
    }
    const double e_norm = test::rel_max_err(normed, golden_->read_f32(p + "final_norm"));
    const double e_logits = test::rel_max_err(engine_->logits(normed.data(), T), golden_->read_f32(p + "logits"));
    std::printf("und.%d: final_norm rel err %.2e, logits rel err %.2e\n", i, e_norm, e_logits);
    EXPECT_LT(e_norm, kTol) << p << "final_norm";
    EXPECT_LT(e_logits, kTol) << p << "logits";
  }
}

TEST_F(UndGolden, Greedy16WithKvCacheMatchesGolden) {
  LQ_REQUIRE_SHARED();
  GreedyOptions o;
  o.max_new_tokens = 16;
  o.vocab_limit = engine_->config().len_tokenizer;
  for (int i = 0; i < 4; ++i) {
    const auto want = test::read_i32(*golden_, "und." + std::to_string(i) + ".greedy16");
    EXPECT_EQ(greedy_decode(*engine_, ids(i), o), want) << "sequence " << i;
  }
}

TEST_F(UndGolden, KvCacheDecodingEqualsFullRecompute) {
  LQ_REQUIRE_SHARED();
  const auto prompt = ids(2);
  const int64_t T = int64_t(prompt.size());
  // Prefill the first half, then decode the rest one token at a time from the cache; compare
  // every row's logits with one full-sequence pass.
  const int64_t half = T / 2;
  KvCache cache;
  const std::vector<int32_t> head(prompt.begin(), prompt.begin() + half);
  auto normed = engine_->forward(text_chunk(*engine_, head, text_positions(half), {{half, SplitMode::Causal}}), &cache,
                                 CacheWrite::Append);
  std::vector<float> cached = normed;
  for (int64_t t = half; t < T; ++t) {
    auto row = engine_->forward(text_chunk(*engine_, {prompt[t]}, text_positions(1, int32_t(t)), {{1, SplitMode::Causal}}),
                                &cache, CacheWrite::Append);
    cached.insert(cached.end(), row.begin(), row.end());
  }
  EXPECT_EQ(cache.rows(), T);
  const auto full = engine_->forward(text_chunk(*engine_, prompt, text_positions(T), {{T, SplitMode::Causal}}), nullptr,
                                     CacheWrite::No);
  EXPECT_LT(test::rel_max_err(cached, full), 1e-5);

  GreedyOptions o;
  o.max_new_tokens = 12;
  o.vocab_limit = engine_->config().len_tokenizer;
  const auto with_cache = greedy_decode(*engine_, prompt, o);
  o.use_cache = false;
  EXPECT_EQ(greedy_decode(*engine_, prompt, o), with_cache);
}

TEST_F(UndGolden, PromptBeyondPositionLimitFails) {
  LQ_REQUIRE_SHARED();
  const int64_t limit = engine_->config().max_position_embeddings;
  const std::vector<int32_t> too_long(size_t(limit + 1), 100);
  EXPECT_THROW(greedy_decode(*engine_, too_long, {}), lq::Error);
}

}  // namespace
}  // namespace lq::fwd
