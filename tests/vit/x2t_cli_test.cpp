// `run --task x2t` end to end: a small ViT written by `synth --vit` beside a copy of lance-mini, read
// either from --vit DIR or as vit_model.* tensors inside the checkpoint (Lance_3B_Video's layout), on an
// image, a video file and a folder of frames. The ViT's weights are random: this checks the plumbing
// (shapes, grids, determinism, both ViT locations agreeing, errors), not the answers' content.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/png.h"
#include "io/safetensors.h"
#include "media/image_io.h"
#include "test_paths.h"
#include "vit_fixtures.h"

namespace lq::vit {
namespace {

namespace fs = std::filesystem;

std::string data(const std::string& rel) { return std::string(LQ_SOURCE_DIR) + "/data/" + rel; }

int sh(const std::string& cmd, std::string* out) { return test::run_command(cmd, out); }

nlohmann::json run_json(const std::string& args) {
  std::string out;
  const int rc = sh(test::exe() + " run " + args + " --json", &out);
  EXPECT_EQ(rc, 0) << out;
  const auto brace = out.rfind("\n{");
  return nlohmann::json::parse(brace == std::string::npos ? out : out.substr(brace + 1));
}

class X2tCli : public ::testing::Test {
 protected:
  // Every test has its own scratch directory: ctest runs the tests of this suite in parallel processes.
  void SetUp() override {
    if (test::shared_dir().empty()) GTEST_SKIP() << "shared fixtures not found; skipping";
    dir_ = test::scratch_dir(std::string("x2t_cli_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::string out;
    ASSERT_EQ(sh(test::exe() + " synth --vit small --vit-out-hidden 256 --seed 3 --out " + dir_ + "/vit", &out), 0) << out;
    embed_vit(test::lance_mini_dir(), dir_ + "/vit", dir_ + "/mini-video");
  }
  std::string dir_;
};

TEST_F(X2tCli, ImageFromVitDirAndFromInsideTheCheckpointAgree) {
  const std::string q = " --task x2t --image " + data("images/chelsea.jpg") + " --resolution 224 --prompt 'what animal is this?'"
                        " --max-new-tokens 12";
  const auto a = run_json(test::lance_mini_dir() + q + " --vit " + dir_ + "/vit");
  // chelsea 451x300 (ratio 1.50) -> 4:3 bucket at 224: 256x192 -> cropped to 252x168 -> 18x12 patches -> 9x6 tokens.
  EXPECT_EQ(a["grid_thw"], nlohmann::json::parse("[1, 6, 9]"));
  EXPECT_EQ(a["vit_tokens"], 54);
  EXPECT_EQ(a["frames"], 2);  // an image is repeated to 2 frames
  EXPECT_EQ(a["generated_ids"].size(), 12u);
  const auto b = run_json(dir_ + "/mini-video" + q);
  EXPECT_EQ(a["generated_ids"], b["generated_ids"]);
  EXPECT_EQ(a["prompt_tokens"], b["prompt_tokens"]);
  const auto c = run_json(test::lance_mini_dir() + q + " --vit " + dir_ + "/vit");
  EXPECT_EQ(a["generated_ids"], c["generated_ids"]);  // deterministic
}

TEST_F(X2tCli, VideoFileAndFolderOfFrames) {
  // chelsea_pan.mp4: 36 frames at 24 fps = 1.5 s -> 18 -> 17 sampled frames + the last again = 18 -> 9 temporal patches.
  const auto v = run_json(test::lance_mini_dir() + " --task x2t --vit " + dir_ + "/vit --video " + data("videos/chelsea_pan.mp4") +
                          " --resolution 224 --prompt 'what moves?' --max-new-tokens 4");
  EXPECT_EQ(v["frames"], 18);
  EXPECT_EQ(v["grid_thw"][0], 9);
  // A folder of 10 PNG frames at --fps 5: 2 s -> 24 -> 21 frames + 1 -> 11 temporal patches.
  const std::string frames = dir_ + "/frames";
  fs::create_directories(frames);
  const media::RgbImage im = media::read_image(data("images/astronaut.jpg"));
  for (int k = 0; k < 10; ++k) io::write_png_rgb(frames + "/f" + std::to_string(k) + ".png", im.rgb.data(), im.width, im.height);
  const auto f = run_json(test::lance_mini_dir() + " --task x2t --vit " + dir_ + "/vit --video " + frames +
                          " --fps 5 --resolution 224 --prompt 'what moves?' --max-new-tokens 4");
  EXPECT_EQ(f["frames"], 22);
  EXPECT_EQ(f["grid_thw"], nlohmann::json::parse("[11, 8, 8]"));
}

TEST_F(X2tCli, InspectShowsTheVitAndRefusesAnIncompleteOne) {
  std::string out;
  ASSERT_EQ(sh(test::exe() + " inspect " + dir_ + "/mini-video", &out), 0) << out;
  EXPECT_NE(out.find("vit            4 blocks, width 64, 4 heads"), std::string::npos) << out;
  EXPECT_NE(out.find("54 tensors with prefix vit_model."), std::string::npos) << out;
  ASSERT_EQ(sh(test::exe() + " inspect " + dir_ + "/vit --json", &out), 0) << out;
  EXPECT_NE(out.find("\"out_hidden_size\": 256"), std::string::npos) << out;
  embed_vit(test::lance_mini_dir(), dir_ + "/vit", dir_ + "/mini-broken", "blocks.2.mlp.up_proj.bias");
  EXPECT_NE(sh(test::exe() + " inspect " + dir_ + "/mini-broken", &out), 0);
  EXPECT_NE(out.find("missing: vit_model.blocks.2.mlp.up_proj.bias"), std::string::npos) << out;
  EXPECT_NE(sh(test::exe() + " run " + dir_ + "/mini-broken --task x2t --image " + data("images/camera.png") + " --prompt q", &out), 0);
  EXPECT_NE(out.find("vit_model.blocks.2.mlp.up_proj.bias"), std::string::npos) << out;
}

TEST_F(X2tCli, ClearErrors) {
  std::string out;
  EXPECT_NE(sh(test::exe() + " run " + test::lance_mini_dir() + " --task x2t --image " + data("images/camera.png") + " --prompt q", &out), 0);
  EXPECT_NE(out.find("give the ViT directory with --vit DIR"), std::string::npos) << out;
  EXPECT_NE(sh(test::exe() + " run " + test::lance_mini_dir() + " --task x2t --vit " + dir_ + "/vit --image /nonexistent.png --prompt q", &out), 0);
  EXPECT_NE(out.find("/nonexistent.png"), std::string::npos) << out;
  EXPECT_NE(sh(test::exe() + " run " + test::lance_mini_dir() + " --task x2t --vit " + dir_ + "/vit --image a.png --video b.mp4 --prompt q", &out), 0);
  EXPECT_NE(out.find("exactly one of --image"), std::string::npos) << out;
  // A ViT whose merger width is not the model's hidden size.
  ASSERT_EQ(sh(test::exe() + " synth --vit small --out " + dir_ + "/vit48 --vit-out-hidden 48", &out), 0) << out;
  EXPECT_NE(sh(test::exe() + " run " + test::lance_mini_dir() + " --task x2t --vit " + dir_ + "/vit48 --image " + data("images/camera.png") + " --prompt q", &out), 0);
  EXPECT_NE(out.find("outputs 48 values per token, the model's hidden size is 256"), std::string::npos) << out;
}

}  // namespace
}  // namespace lq::vit
