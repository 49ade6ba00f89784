// `run --task edit` with the ViT reference end to end: a small ViT written by `synth --vit` beside
// lance-mini (from --vit DIR or as vit_model.* tensors in a copy of the checkpoint), a tiny random-weight
// Wan2.2 VAE from `synth-vae`. Random weights prove the plumbing only: the reference's grid and frame
// count follow Lance's rules, the ViT's rows reach the sequence (another ViT, or none, changes the
// result), both ViT locations agree, the result is reproducible, and an edit without a ViT is refused
// unless --no-vit-reference says so.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "io/safetensors.h"
#include "media/image_io.h"
#include "media/video_reader.h"
#include "media/video_writer.h"
#include "test_paths.h"
#include "vit/edit_reference.h"
#include "vit_fixtures.h"

namespace lq::vit {
namespace {

std::string data(const std::string& rel) { return std::string(LQ_SOURCE_DIR) + "/data/" + rel; }

class EditCli : public ::testing::Test {
 protected:
  // Every test has its own scratch directory: ctest runs the tests of this suite in parallel processes.
  void SetUp() override {
    if (test::shared_dir().empty()) GTEST_SKIP() << "shared fixtures not found; skipping";
    dir_ = test::scratch_dir(std::string("edit_cli_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    for (const auto& [args, what] : std::vector<std::pair<std::string, std::string>>{
             {"synth --vit small --vit-out-hidden 256 --seed 3 --out " + dir_ + "/vit", "vit"},
             {"synth --vit small --vit-out-hidden 256 --seed 4 --out " + dir_ + "/vit2", "vit2"},
             {"synth-vae --size tiny --seed 4 --out " + dir_ + "/vae", "vae"}}) {
      std::string out;
      ASSERT_EQ(test::run_command(test::exe() + " " + args, &out), 0) << what << ": " << out;
    }
    embed_vit(test::lance_mini_dir(), dir_ + "/vit", dir_ + "/mini-video");
  }

  // Runs `run --task edit` and returns its JSON (rc checked) and the latents written.
  nlohmann::json edit(const std::string& model, const std::string& args, const std::string& name, std::vector<float>* latents = nullptr) {
    std::string out;
    const int rc = test::run_command(test::exe() + " run " + model + " --task edit --prompt 'make it green' --seed 5 --steps 2 --vae " +
                                         dir_ + "/vae --out " + dir_ + "/" + name + ".safetensors " + args + " --json",
                                     &out);
    EXPECT_EQ(rc, 0) << out;
    if (rc != 0) return {};
    if (latents) *latents = io::TensorStore(dir_ + "/" + name + ".safetensors").read_f32("latents");
    const auto brace = out.rfind("\n{");
    return nlohmann::json::parse(brace == std::string::npos ? out : out.substr(brace + 1));
  }
  std::string dir_;
};

TEST_F(EditCli, ImageEditUsesTheVitReference) {
  const std::string src = " --image " + data("images/chelsea.jpg") + " --resolution 128";
  std::vector<float> a, a2, b, c, d;
  const auto j = edit(test::lance_mini_dir(), src + " --vit " + dir_ + "/vit --png " + dir_ + "/a.png", "a", &a);
  ASSERT_FALSE(j.is_null());
  EXPECT_EQ(j["edit"]["vit_reference"], true);
  // VAE 128 -> ViT 112 (7/8, Lance's image rule). chelsea 451x300 (ratio 1.50) -> 4:3 bucket near 112^2
  // with stride 16: 128x96 -> cropped to multiples of 28: 112x84 -> 8x6 patches -> 4x3 merged tokens; the
  // image is repeated to 2 frames -> 1 temporal patch.
  EXPECT_EQ(j["edit"]["vit_resolution"], 112);
  EXPECT_EQ(j["edit"]["vit_grid_thw"], nlohmann::json::parse("[1, 3, 4]"));
  EXPECT_EQ(j["edit"]["vit_frames"], 2);
  EXPECT_EQ(j["grid_thw"], nlohmann::json::parse("[1, 7, 9]"));  // the VAE block: 144x112 at 128
  const auto img = media::read_image(dir_ + "/a.png");
  EXPECT_EQ(img.width, 144);
  EXPECT_EQ(img.height, 112);
  edit(test::lance_mini_dir(), src + " --vit " + dir_ + "/vit", "a2", &a2);
  EXPECT_EQ(a, a2);  // reproducible
  // The same ViT from inside the checkpoint (vit_model.*), found without --vit.
  const auto jb = edit(dir_ + "/mini-video", src, "b", &b);
  EXPECT_EQ(jb["edit"]["vit_reference"], true);
  EXPECT_EQ(a, b);
  // Another ViT's rows, or none, change the result: the reference is wired into the sequence.
  edit(test::lance_mini_dir(), src + " --vit " + dir_ + "/vit2", "c", &c);
  EXPECT_NE(a, c);
  const auto jd = edit(test::lance_mini_dir(), src + " --no-vit-reference", "d", &d);
  EXPECT_EQ(jd["edit"]["vit_reference"], false);
  EXPECT_EQ(jd["edit"].count("vit_grid_thw"), 0u);
  EXPECT_NE(a, d);
  // --vit-resolution overrides the pairing: 224 -> 4:3 bucket 256x192 -> 252x168 -> 9x6 merged tokens.
  const auto je = edit(test::lance_mini_dir(), src + " --vit " + dir_ + "/vit --vit-resolution 224", "e");
  EXPECT_EQ(je["edit"]["vit_grid_thw"], nlohmann::json::parse("[1, 6, 9]"));
}

TEST_F(EditCli, VideoEditReferenceHasTheSourceFrames) {
  // A copy of the checkpoint (ViT inside) that allows 3 latent frames.
  const std::string cfg = dir_ + "/mini-video/lance_config.json";
  nlohmann::json lc = nlohmann::json::parse(std::ifstream(cfg));
  lc["max_num_latent_frames"] = 3;
  std::ofstream(cfg) << lc.dump(1);
  {
    media::VideoWriter w(dir_ + "/src.mp4", 128, 128);
    std::vector<uint8_t> rgb(128 * 128 * 3);
    for (int f = 0; f < 9; ++f) {
      for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = uint8_t((i * 7 + size_t(f) * 29) % 251);
      w.add_frame(rgb.data());
    }
    w.finish();
  }
  const auto j = edit(dir_ + "/mini-video", "--video " + dir_ + "/src.mp4 --resolution 128 --mp4 " + dir_ + "/out.mp4", "v");
  ASSERT_FALSE(j.is_null());
  // 9 frames at 12 fps, all sampled: VAE grid 3 x 8 x 8; the ViT gets the same 9 frames, the last one
  // repeated to an even count (10 -> 5 temporal patches), 128x128 at 112 -> 4 x 4 merged tokens.
  EXPECT_EQ(j["edit"]["source_frames"], 9);
  EXPECT_EQ(j["grid_thw"], nlohmann::json::parse("[3, 8, 8]"));
  EXPECT_EQ(j["edit"]["vit_frames"], 10);
  EXPECT_EQ(j["edit"]["vit_grid_thw"], nlohmann::json::parse("[5, 4, 4]"));
  media::VideoReader r(dir_ + "/out.mp4");
  EXPECT_EQ(r.info().frame_count, 9);
}

TEST_F(EditCli, RefusesAnEditWithoutItsReference) {
  std::string out;
  const std::string base = test::exe() + " run " + test::lance_mini_dir() + " --task edit --image " + data("images/chelsea.jpg") +
                           " --prompt x --seed 1 --vae " + dir_ + "/vae --png " + dir_ + "/x.png";
  EXPECT_EQ(test::run_command(base, &out), 1);
  EXPECT_NE(out.find("ViT reference"), std::string::npos) << out;
  EXPECT_NE(out.find("--no-vit-reference"), std::string::npos) << out;
  ASSERT_EQ(test::run_command(test::exe() + " synth --vit small --vit-out-hidden 48 --out " + dir_ + "/vit48", &out), 0) << out;
  EXPECT_EQ(test::run_command(base + " --vit " + dir_ + "/vit48", &out), 1);
  EXPECT_NE(out.find("hidden size is 256"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(base + " --vit " + dir_ + "/vit --no-vit-reference", &out), 1);
  EXPECT_EQ(test::run_command(test::exe() + " run " + test::lance_mini_dir() + " --task t2i --prompt x --seed 1 --out " + dir_ +
                                  "/t.safetensors --vit-resolution 224",
                              &out),
            1);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/x.png"));
}

// Lance's VAE -> ViT resolution pairs (validation_dataset.py), and 7/8 elsewhere.
TEST(EditReference, VitResolutionPairs) {
  EXPECT_EQ(edit_vit_resolution(768), 672);
  EXPECT_EQ(edit_vit_resolution(512), 448);
  EXPECT_EQ(edit_vit_resolution(256), 224);
  EXPECT_EQ(edit_vit_resolution(640), 616);
  EXPECT_EQ(edit_vit_resolution(480), 476);
  EXPECT_EQ(edit_vit_resolution(128), 112);
  EXPECT_EQ(edit_vit_resolution(1024), 896);
  EXPECT_EQ(edit_vit_resolution(16), 28);
}

}  // namespace
}  // namespace lq::vit
