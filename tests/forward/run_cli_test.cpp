// `lance-quant run` end to end on lance-mini: text and t2i outputs, the toy-VAE decode against the
// golden image, and the clear errors for bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "forward/toy_vae.h"
#include "golden_util.h"
#include "io/safetensors.h"
#include "test_paths.h"

namespace lq::fwd {
namespace {

namespace fs = std::filesystem;

std::string run(const std::string& args, int* rc) {
  std::string out;
  *rc = test::run_command(test::exe() + " run " + args, &out);
  return out;
}

TEST(ToyVae, DecodingTheGoldenFinalLatentGivesTheGoldenImage) {
  LQ_REQUIRE_SHARED();
  io::TensorStore g(test::lance_mini_dir() + "/golden/gen_golden.safetensors");
  const auto x = g.read_f32("gen.1.sample.final");
  EXPECT_LT(test::rel_max_err(toy_vae_decode(x.data(), {1, 8, 8}, {}), g.read_f32("gen.1.sample.image")), 1e-6);
  const auto rgb = to_rgb8_upscaled({0.0f, 0.5f, 1.0f}, 1, 1, 2);
  EXPECT_EQ(rgb, (std::vector<uint8_t>{0, 128, 255, 0, 128, 255, 0, 128, 255, 0, 128, 255}));
}

TEST(RunCli, TextAnswer) {
  LQ_REQUIRE_SHARED();
  int rc = 0;
  const std::string out = run(test::lance_mini_dir() + " --task text --raw --prompt 'Once upon a time' --max-new-tokens 8 --json", &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("\"generated_ids\":["), std::string::npos) << out;
  EXPECT_NE(out.find("\"prompt_tokens\":"), std::string::npos) << out;
}

TEST(RunCli, T2iWritesLatentsAndPng) {
  LQ_REQUIRE_SHARED();
  const std::string dir = test::scratch_dir("run_t2i");
  int rc = 0;
  const std::string out = run(test::lance_mini_dir() +
                                  " --task t2i --prompt 'a large red circle in the top left on a white background'"
                                  " --seed 5 --steps 6 --out " + dir + "/x.safetensors --png " + dir + "/x.png",
                              &rc);
  ASSERT_EQ(rc, 0) << out;
  io::TensorStore st(dir + "/x.safetensors");
  EXPECT_EQ(st.info("latents").shape, (std::vector<int64_t>{1, 8, 8, 48}));
  std::ifstream png(dir + "/x.png", std::ios::binary);
  std::vector<unsigned char> head(24);
  png.read(reinterpret_cast<char*>(head.data()), 24);
  ASSERT_EQ(png.gcount(), 24);
  EXPECT_EQ(head[1], 'P');
  const auto be32 = [&](int at) { return (head[at] << 24) | (head[at + 1] << 16) | (head[at + 2] << 8) | head[at + 3]; };
  EXPECT_EQ(be32(16), 128);  // 32 px x 4 upscale
  EXPECT_EQ(be32(20), 128);
}

TEST(RunCli, BadInputGivesClearErrors) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir();
  int rc = 0;
  std::string long_prompt;
  for (int i = 0; i < 2100; ++i) long_prompt += "dog cat ";
  std::string out = run(m + " --task text --raw --prompt '" + long_prompt + "'", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("max_position_embeddings"), std::string::npos) << out.substr(0, 300);

  out = run(m + " --task t2i --prompt 'a red circle' --seed 1 --height 1024 --width 1024 --out " + test::scratch_dir("run_big_grid") + "/x.safetensors", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("must be < 64"), std::string::npos) << out;

  const std::string bare = test::scratch_dir("run_no_tokenizer");
  for (const char* f : {"model.safetensors", "llm_config.json", "lance_config.json"})
    fs::create_symlink(fs::path(m) / f, fs::path(bare) / f);
  out = run(bare + " --task text --prompt hello", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("no tokenizer"), std::string::npos) << out;

  out = run(m + " --task video --prompt x", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("--task"), std::string::npos) << out;
}

}  // namespace
}  // namespace lq::fwd
