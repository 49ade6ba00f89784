// Generation path against the fp32 goldens of lance-mini: t2i layout and positions, time
// embedding, latent embeddings, the cond residual stream, single-step velocities of the cond /
// uncond (KV-path) / uncond_consistent branches, chunked-vs-one-sequence equality, and the full
// 30-step CFG sampler from the stored noise.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>

#include "forward/forward.h"
#include "forward/prompts.h"
#include "forward/t2i.h"
#include "tokenizer/tokenizer.h"
#include "golden_util.h"
#include "io/error.h"
#include "test_paths.h"

namespace lq::fwd {
namespace {

constexpr double kTol = 1e-4;

struct GoldenLayout {
  std::vector<int32_t> ids;
  std::vector<Position3> positions;
  std::vector<int32_t> split_lens, split_modes;
  int32_t latent_begin = 0, latent_end = 0;
};

GoldenLayout read_layout(const io::TensorStore& g, const std::string& p) {
  GoldenLayout l;
  l.ids = test::read_i32(g, p + "input_ids");
  const auto pos = test::read_i32(g, p + "position_ids");
  const size_t L = l.ids.size();
  for (size_t t = 0; t < L; ++t) l.positions.push_back({pos[t], pos[L + t], pos[2 * L + t]});
  l.split_lens = test::read_i32(g, p + "split_lens");
  l.split_modes = test::read_i32(g, p + "split_modes");
  const auto span = test::read_i32(g, p + "latent_span");
  l.latent_begin = span[0];
  l.latent_end = span[1];
  return l;
}

class GenGolden : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (test::shared_dir().empty()) return;
    engine_ = std::make_unique<Engine>(Engine::load(test::lance_mini_dir()));
    golden_ = std::make_unique<io::TensorStore>(test::lance_mini_dir() + "/golden/gen_golden.safetensors");
  }
  static void TearDownTestSuite() {
    engine_.reset();
    golden_.reset();
  }
  // The prompt rebuilt from the golden cond split token ids (s1, s2, s3) by our own layout code.
  static T2iPrompt prompt(int i, bool consistent = false) {
    const GoldenLayout c = read_layout(*golden_, "gen." + std::to_string(i) + ".cond.");
    std::vector<std::vector<int32_t>> s;
    size_t at = 0;
    for (int k = 0; k < 3; ++k) {
      s.emplace_back(c.ids.begin() + at, c.ids.begin() + at + c.split_lens[k]);
      at += c.split_lens[k];
    }
    return build_t2i_prompt(s[0], s[1], s[2], c.ids[at], vision_end(), {1, 8, 8}, consistent);
  }
  static int32_t vision_end() { return 4260; }  // lance_config.json special_token_ids
  static std::vector<float> slice(const std::vector<float>& v, int64_t index, int64_t size) {
    return {v.begin() + index * size, v.begin() + (index + 1) * size};
  }
  static std::unique_ptr<Engine> engine_;
  static std::unique_ptr<io::TensorStore> golden_;
};
std::unique_ptr<Engine> GenGolden::engine_;
std::unique_ptr<io::TensorStore> GenGolden::golden_;

// Our layout must reproduce the golden ids (minus the noise block), splits and positions.
void expect_branch_matches(const T2iBranch& b, const GoldenLayout& g, const std::string& what) {
  const size_t P = b.prefix_ids.size();
  ASSERT_EQ(P + 66, g.ids.size()) << what;
  EXPECT_EQ(std::vector<int32_t>(g.ids.begin(), g.ids.begin() + P), b.prefix_ids) << what;
  EXPECT_EQ(std::vector<Position3>(g.positions.begin(), g.positions.begin() + P), b.prefix_positions) << what;
  EXPECT_EQ(std::vector<Position3>(g.positions.begin() + P, g.positions.end()), b.noise_positions) << what;
  ASSERT_EQ(b.prefix_splits.size() + 1, g.split_lens.size()) << what;
  for (size_t k = 0; k < b.prefix_splits.size(); ++k) {
    EXPECT_EQ(b.prefix_splits[k].len, g.split_lens[k]) << what;
    EXPECT_EQ(int(b.prefix_splits[k].mode), g.split_modes[k]) << what;
  }
  EXPECT_EQ(g.split_lens.back(), 66) << what;
  EXPECT_EQ(g.split_modes.back(), int(SplitMode::Noise)) << what;
  EXPECT_EQ(g.latent_begin, int32_t(P + 1)) << what;
  EXPECT_EQ(g.latent_end, int32_t(P + 65)) << what;
}

TEST_F(GenGolden, LayoutAndPositionsMatchGetRopeIndex) {
  LQ_REQUIRE_SHARED();
  for (int i = 0; i < 2; ++i) {
    const std::string p = "gen." + std::to_string(i) + ".";
    expect_branch_matches(prompt(i).cond, read_layout(*golden_, p + "cond."), p + "cond");
    expect_branch_matches(prompt(i).uncond, read_layout(*golden_, p + "uncond."), p + "uncond");
    expect_branch_matches(prompt(i, true).uncond, read_layout(*golden_, p + "uncond_consistent."),
                          p + "uncond_consistent");
  }
}

// The full path from caption text: tokenizer + template + layout reproduce the golden cond/uncond ids.
TEST_F(GenGolden, PromptFromCaptionTextMatchesGoldenIds) {
  LQ_REQUIRE_SHARED();
  const char* const captions[2] = {
      "a large red circle in the top left on a white background",
      "a small yellow square at the top and a large blue triangle in the bottom right on a black background"};
  const auto tok = tok::Tokenizer::load(test::lance_mini_dir());
  const T2iSettings settings = load_t2i_settings(test::lance_mini_dir());
  ASSERT_TRUE(settings.grid_from_config);
  for (int i = 0; i < 2; ++i) {
    const std::string p = "gen." + std::to_string(i) + ".";
    const T2iPrompt pr = t2i_prompt(tok, captions[i], settings.instruction, settings.grid);
    expect_branch_matches(pr.cond, read_layout(*golden_, p + "cond."), p + "cond");
    expect_branch_matches(pr.uncond, read_layout(*golden_, p + "uncond."), p + "uncond");
    const auto ids = test::read_i32(*golden_, p + "cond.input_ids");
    EXPECT_EQ(pr.vision_start, ids[pr.cond.prefix_ids.size()]);
  }
}

TEST_F(GenGolden, SamplerScheduleMatches) {
  LQ_REQUIRE_SHARED();
  const auto taus = shifted_taus(30, 3.5);
  const auto want = golden_->read_f32("sampler_taus");
  ASSERT_EQ(taus.size(), want.size());
  for (size_t i = 0; i < taus.size(); ++i) EXPECT_NEAR(taus[i], want[i], 1e-6) << i;
}

TEST_F(GenGolden, EmbeddingsHiddenStatesAndFinalNorm) {
  LQ_REQUIRE_SHARED();
  const double tau = golden_->read_f32("gen_taus")[0];
  const auto te = engine_->time_embedding(tau);
  for (int i = 0; i < 2; ++i) {
    const std::string p = "gen." + std::to_string(i) + ".";
    EXPECT_LT(test::rel_max_err(te, golden_->read_f32(p + "cond.tau0.time_embedding")), kTol);
    const auto x = slice(golden_->read_f32(p + "x_tau"), 0, 64 * 48);
    EXPECT_LT(test::rel_max_err(engine_->latent_embeddings(x.data(), {1, 8, 8}, tau),
                                golden_->read_f32(p + "cond.tau0.latent_embeddings")),
              kTol);
    const T2iPrompt pr = prompt(i);
    const Chunk c = full_branch_chunk(*engine_, pr.cond, pr.vision_start, pr.vision_end, pr.grid, x.data(), tau);
    std::vector<float> states;
    const auto normed = engine_->forward(c, nullptr, CacheWrite::No, &states);
    const auto want = golden_->read_f32(p + "cond.tau0.hidden_states");
    const int64_t per = c.rows() * engine_->config().hidden_size;
    ASSERT_EQ(int64_t(want.size()), per * (engine_->num_layers() + 1));
    for (int l = 0; l <= engine_->num_layers(); ++l)
      EXPECT_LT(test::rel_max_err(states.data() + l * per, want.data() + l * per, size_t(per)), kTol)
          << p << "hidden_states[" << l << "]";
    EXPECT_LT(test::rel_max_err(normed, golden_->read_f32(p + "cond.tau0.final_norm")), kTol);
  }
}

TEST_F(GenGolden, VelocitiesOfAllBranchesChunkedAndOneSequence) {
  LQ_REQUIRE_SHARED();
  const auto taus = golden_->read_f32("gen_taus");
  const int64_t H = engine_->config().hidden_size, n = 64 * 48;
  for (int i = 0; i < 2; ++i) {
    const std::string p = "gen." + std::to_string(i) + ".";
    const auto x_tau = golden_->read_f32(p + "x_tau");
    const auto v_cond = golden_->read_f32(p + "v_cond"), v_uncond = golden_->read_f32(p + "v_uncond");
    const auto v_cons = golden_->read_f32(p + "v_uncond_consistent");
    T2iSampler kv(*engine_, prompt(i));
    T2iSampler kv_consistent(*engine_, prompt(i, true));
    for (int t = 0; t < 3; ++t) {
      const auto x = slice(x_tau, t, n);
      const auto vc = kv.velocity(true, x.data(), taus[t]);
      const auto vu = kv.velocity(false, x.data(), taus[t]);
      const auto vk = kv_consistent.velocity(false, x.data(), taus[t]);
      const double ec = test::rel_max_err(vc, slice(v_cond, t, n)), eu = test::rel_max_err(vu, slice(v_uncond, t, n));
      const double ek = test::rel_max_err(vk, slice(v_cons, t, n));
      std::printf("%s tau %.3f: v_cond %.2e v_uncond %.2e v_uncond_consistent %.2e\n", p.c_str(), taus[t], ec, eu, ek);
      EXPECT_LT(ec, kTol);
      EXPECT_LT(eu, kTol);
      EXPECT_LT(ek, kTol);
      // The one-sequence computation (prefix + noise block, no cache) equals the chunked one.
      const T2iPrompt& pr = kv.prompt();
      const Chunk full = full_branch_chunk(*engine_, pr.cond, pr.vision_start, pr.vision_end, pr.grid, x.data(), taus[t]);
      const auto normed = engine_->forward(full, nullptr, CacheWrite::No);
      const auto v_full = engine_->velocity(normed.data() + (full.rows() - 65) * H, 64);
      EXPECT_LT(test::rel_max_err(vc, v_full), 1e-5);
    }
  }
}

TEST_F(GenGolden, FullCfgSamplerFromStoredNoise) {
  LQ_REQUIRE_SHARED();
  for (int i = 0; i < 2; ++i) {
    const std::string p = "gen." + std::to_string(i) + ".";
    T2iSampler s(*engine_, prompt(i));
    std::vector<float> traj;
    const auto final = s.sample(golden_->read_f32(p + "noise"), SamplerOptions{}, &traj);
    const double e = test::rel_l2_err(final, golden_->read_f32(p + "sample.final"));
    const auto want_traj = golden_->read_f32(p + "sample.trajectory");
    double worst_traj = 0;
    for (int k = 0; k <= 30; ++k)
      worst_traj = std::max(worst_traj, test::rel_l2_err(slice(traj, k, 64 * 48), slice(want_traj, k, 64 * 48)));
    std::printf("%s sample.final rel L2 %.2e, worst trajectory step rel L2 %.2e\n", p.c_str(), e, worst_traj);
    EXPECT_LT(e, 1e-3);
    EXPECT_LT(worst_traj, 1e-3);
  }
}

TEST_F(GenGolden, LatentGridLimitsAreEnforced) {
  LQ_REQUIRE_SHARED();
  const auto& c = engine_->config();
  EXPECT_THROW(check_latent_grid({1, c.max_latent_size, 8}, c), lq::Error);
  EXPECT_THROW(check_latent_grid({1, 8, c.max_latent_size}, c), lq::Error);
  EXPECT_THROW(check_latent_grid({c.max_latent_frames + 1, 8, 8}, c), lq::Error);
  EXPECT_NO_THROW(check_latent_grid({1, c.max_latent_size - 1, 8}, c));
}

}  // namespace
}  // namespace lq::fwd
