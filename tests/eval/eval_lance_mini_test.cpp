// evaluate() on lance-mini: the fixture's golden fp32 perplexity, BASE vs itself (all errors exactly
// zero), and BASE vs a fake-quantized RTN int4 g64 copy (errors present and of a sane size).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "eval/evaluate.h"
#include "eval/fake_quant.h"
#include "forward/forward.h"
#include "forward/prompts.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace lq::eval {
namespace {

std::string eval_data(const std::string& name) { return std::string(LQ_SOURCE_DIR) + "/data/eval/" + name; }

struct Mini {
  tok::Tokenizer tok;
  fwd::Engine base, quant;
  fwd::T2iSettings t2i;
};

Mini load_mini(bool fake_quant) {
  const std::string dir = test::lance_mini_dir();
  Mini m{tok::Tokenizer::load(dir), fwd::Engine::load(dir), fwd::Engine::load(dir), fwd::load_t2i_settings(dir)};
  if (fake_quant) {
    quant::QuantParams p;
    p.scheme = quant::Scheme::Int4Asym;
    p.group = 64;
    fake_quantize_engine(m.quant, p);
  }
  return m;
}

EvalOptions small_options(const fwd::T2iSettings& t2i) {
  EvalOptions o;
  o.max_text_tokens = 512;
  o.max_chat = 2;
  o.max_new_tokens = 12;
  o.max_t2i = 1;
  o.sampler = t2i.sampler;
  o.sampler.steps = 8;
  return o;
}

// The fixture README's protocol and golden numbers (fp32): val_tinystories 68.62 over 9690 tokens.
TEST(EvalLanceMini, GoldenPerplexityTinyStories) {
  LQ_REQUIRE_SHARED();
  Mini m = load_mini(false);
  EvalData data;
  data.text_files = {test::lance_mini_dir() + "/val_tinystories.txt"};
  EvalOptions o;  // whole file, 256-token windows
  const EvalResult r = evaluate(m.base, m.quant, m.tok, m.t2i, data, o);
  ASSERT_TRUE(r.has_und);
  EXPECT_EQ(r.und.tokens_scored, 9690);
  EXPECT_NEAR(r.und.base_perplexity, 68.62, 0.005);
  EXPECT_NEAR(r.und.quant_perplexity, 68.62, 0.005);
  EXPECT_NEAR(std::log(r.und.base_perplexity), 4.2285, 5e-5);  // mean NLL in nats
  EXPECT_EQ(r.und.kl_mean, 0.0);
  EXPECT_EQ(r.und.top1_agreement, 1.0);
}

// val_brown: 80835 scored tokens, one engine only. About 30 s of CPU on 2 cores, too slow for the
// default suite: runs when LQ_SLOW_TESTS=1 (ctest -R GoldenPerplexityBrown with it set).
TEST(EvalLanceMini, GoldenPerplexityBrown) {
  LQ_REQUIRE_SHARED();
  if (!std::getenv("LQ_SLOW_TESTS")) GTEST_SKIP() << "slow (316 windows of 256 tokens): set LQ_SLOW_TESTS=1 to run";
  const std::string dir = test::lance_mini_dir();
  const tok::Tokenizer tok = tok::Tokenizer::load(dir);
  const fwd::Engine e = fwd::Engine::load(dir);
  std::ifstream in(dir + "/val_brown.txt", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto windows = text_windows(tok.encode(text), 256, 0);
  ASSERT_EQ(int64_t(windows.size()) * 255, 80835);
  EXPECT_NEAR(engine_perplexity(e, windows, e.config().len_tokenizer), 175.94, 0.005);
}

TEST(EvalLanceMini, AgainstItselfEverythingIsExact) {
  LQ_REQUIRE_SHARED();
  Mini m = load_mini(false);
  const EvalData data{{eval_data("text.txt")}, eval_data("chat.jsonl"), eval_data("t2i_toy_prompts.txt")};
  const EvalResult r = evaluate(m.base, m.quant, m.tok, m.t2i, data, small_options(m.t2i));
  ASSERT_TRUE(r.has_und && r.has_chat && r.has_gen && r.has_layers);
  EXPECT_EQ(r.und.tokens_scored, 2 * 255);
  EXPECT_EQ(r.und.base_perplexity, r.und.quant_perplexity);
  EXPECT_EQ(r.und.kl_mean, 0.0);
  EXPECT_EQ(r.und.kl_p99, 0.0);
  EXPECT_EQ(r.und.top1_agreement, 1.0);
  EXPECT_EQ(r.und.chat_exact_match, 1.0);
  EXPECT_EQ(r.und.chat_levenshtein, 1.0);
  EXPECT_EQ(r.gen.latent_rel_error, 0.0);
  EXPECT_TRUE(std::isinf(r.gen.latent_psnr_db));
  EXPECT_EQ(r.gen.velocity_rel_error, 0.0);
  EXPECT_EQ(r.gen.velocity_cosine, 1.0);
  ASSERT_EQ(r.layers.linears.size(), 56u);  // 4 layers x 2 paths x 7 kinds, all seen by the probes
  for (const auto& l : r.layers.linears) EXPECT_EQ(l.rel_error, 0.0) << l.name;
  ASSERT_EQ(r.layers.und_hidden_error.size(), 5u);
  for (double e : r.layers.gen_hidden_error) EXPECT_EQ(e, 0.0);
}

TEST(EvalLanceMini, AgainstRtnInt4ErrorsAreVisibleAndSane) {
  LQ_REQUIRE_SHARED();
  Mini m = load_mini(true);
  const EvalData data{{eval_data("text.txt")}, eval_data("chat.jsonl"), eval_data("t2i_toy_prompts.txt")};
  const EvalResult r = evaluate(m.base, m.quant, m.tok, m.t2i, data, small_options(m.t2i));
  EXPECT_GT(r.und.kl_mean, 1e-4);
  EXPECT_LT(r.und.kl_mean, 0.5);
  EXPECT_GE(r.und.kl_p99, r.und.kl_mean);
  EXPECT_GT(r.und.top1_agreement, 0.7);
  EXPECT_LT(r.und.top1_agreement, 1.0);
  EXPECT_GT(r.und.quant_perplexity, 0.9 * r.und.base_perplexity);
  EXPECT_LT(r.und.quant_perplexity, 1.5 * r.und.base_perplexity);
  EXPECT_GT(r.gen.latent_rel_error, 1e-4);
  EXPECT_LT(r.gen.latent_rel_error, 0.5);
  EXPECT_GT(r.gen.latent_psnr_db, 10.0);
  EXPECT_GT(r.gen.velocity_cosine, 0.95);
  EXPECT_LT(r.gen.velocity_cosine, 1.0);
  // 4-bit RTN with groups of 64 perturbs each linear's output by a few percent.
  for (const auto& l : r.layers.linears) {
    EXPECT_GT(l.rel_error, 0.005) << l.name;
    EXPECT_LT(l.rel_error, 0.3) << l.name;
  }
  // The residual-stream error starts at zero (same embeddings) and is nonzero after layer 0.
  EXPECT_EQ(r.layers.und_hidden_error.front(), 0.0);
  EXPECT_GT(r.layers.und_hidden_error.back(), 0.0);
}

}  // namespace
}  // namespace lq::eval
