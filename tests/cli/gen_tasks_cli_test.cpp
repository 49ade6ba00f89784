// `run --task t2i | t2v | edit` end to end with the Wan2.2 VAE on a lance-mini-sized model: `synth
// --preset tiny` (its lance_config allowing 3 latent frames) and `synth-vae --size tiny`. Random weights
// only prove the plumbing: pictures and videos of the right size and frame count come out, an edit's
// result depends on its source (the condition is wired in) and is reproducible from the seed, the
// t2v/edit options are validated and no output may replace an input. The tiny model has no ViT, so its
// edits run with --no-vit-reference (tests/vit/edit_cli_test.cpp covers the ViT reference).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/png.h"
#include "io/safetensors.h"
#include "media/image_io.h"
#include "media/video_reader.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;

struct Fixture {
  std::string dir, model, vae;
};

std::string lq(const std::string& args, int* rc) {
  std::string out;
  *rc = lq::test::run_command(lq::test::exe() + " " + args, &out);
  return out;
}

// Built per test (ctest runs the tests of this file in parallel processes): its own scratch directory.
const Fixture& fixture() {
  static const Fixture f = [] {
    Fixture x;
    x.dir = lq::test::scratch_dir(std::string("gen_tasks_cli_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    x.model = x.dir + "/model";
    x.vae = x.dir + "/vae";
    int rc = 0;
    std::string out = lq("synth --preset tiny --seed 3 --out " + x.model, &rc);
    EXPECT_EQ(rc, 0) << out;
    const std::string cfg = x.model + "/lance_config.json";
    nlohmann::json j = nlohmann::json::parse(std::ifstream(cfg));
    j["max_num_latent_frames"] = 3;
    std::ofstream(cfg) << j.dump(1);
    out = lq("synth-vae --size tiny --seed 4 --out " + x.vae, &rc);
    EXPECT_EQ(rc, 0) << out;
    return x;
  }();
  return f;
}

std::vector<float> latents(const std::string& path) { return lq::io::TensorStore(path).read_f32("latents"); }

TEST(GenTasksCli, T2iPicture) {
  const Fixture& f = fixture();
  int rc = 0;
  const std::string out = lq("run " + f.model + " --task t2i --prompt 'a red circle' --seed 1 --steps 3 --vae " + f.vae + " --png " +
                                 f.dir + "/t2i.png --out " + f.dir + "/t2i.safetensors --json",
                             &rc);
  ASSERT_EQ(rc, 0) << out;
  const auto img = lq::media::read_image(f.dir + "/t2i.png");
  EXPECT_EQ(img.width, 128);  // 8 x 8 latents x 16
  EXPECT_EQ(img.height, 128);
  const auto j = nlohmann::json::parse(out.substr(out.find('{')));
  EXPECT_EQ(j["decoded"]["frames"], 1);
}

TEST(GenTasksCli, T2vVideoAndFrames) {
  const Fixture& f = fixture();
  int rc = 0;
  const std::string out = lq("run " + f.model + " --task t2v --prompt 'a red circle moving right' --seed 2 --steps 3 --frames 9 --vae " +
                                 f.vae + " --mp4 " + f.dir + "/t2v.mp4 --frames-dir " + f.dir + "/t2v_frames --out " + f.dir +
                                 "/t2v.safetensors",
                             &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(lq::io::TensorStore(f.dir + "/t2v.safetensors").info("latents").shape, (std::vector<int64_t>{3, 8, 8, 48}));
  int pngs = 0;
  for (const auto& e : fs::directory_iterator(f.dir + "/t2v_frames")) pngs += e.path().extension() == ".png";
  EXPECT_EQ(pngs, 9);
  lq::media::VideoReader r(f.dir + "/t2v.mp4");
  EXPECT_EQ(r.info().frame_count, 9);
  EXPECT_EQ(r.info().width, 128);
  EXPECT_NEAR(r.info().avg_fps, 12.0, 1e-6);
}

TEST(GenTasksCli, EditsDependOnTheirSource) {
  const Fixture& f = fixture();
  int rc = 0;
  std::string out = lq("run " + f.model + " --task t2i --prompt 'a blue square' --seed 7 --steps 2 --vae " + f.vae + " --png " + f.dir +
                           "/src2.png --out " + f.dir + "/src2.safetensors",
                       &rc);
  ASSERT_EQ(rc, 0) << out;
  out = lq("run " + f.model + " --task t2i --prompt 'a red circle' --seed 1 --steps 3 --vae " + f.vae + " --png " + f.dir +
               "/src1.png --out " + f.dir + "/src1.safetensors",
           &rc);
  ASSERT_EQ(rc, 0) << out;
  auto edit = [&](const std::string& src, const std::string& name) {
    int r = 0;
    const std::string o = lq("run " + f.model + " --task edit --no-vit-reference --image " + f.dir + "/" + src + " --prompt 'make it green' --seed 5 --steps 3 --vae " +
                                 f.vae + " --resolution 128 --png " + f.dir + "/" + name + ".png --out " + f.dir + "/" + name + ".safetensors",
                             &r);
    EXPECT_EQ(r, 0) << o;
    return latents(f.dir + "/" + name + ".safetensors");
  };
  const auto a = edit("src1.png", "edit_a"), a2 = edit("src1.png", "edit_a2"), b = edit("src2.png", "edit_b");
  EXPECT_EQ(a, a2);  // reproducible from the seed
  EXPECT_NE(a, b);   // the source conditions the result
  const auto img = lq::media::read_image(f.dir + "/edit_a.png");
  EXPECT_EQ(img.width, 128);
}

TEST(GenTasksCli, VideoEdit) {
  const Fixture& f = fixture();
  int rc = 0;
  std::string out = lq("run " + f.model + " --task t2v --prompt 'waves' --seed 9 --steps 2 --frames 9 --vae " + f.vae + " --mp4 " + f.dir +
                           "/src.mp4",
                       &rc);
  ASSERT_EQ(rc, 0) << out;
  out = lq("run " + f.model + " --task edit --no-vit-reference --video " + f.dir + "/src.mp4 --prompt 'add a boat' --seed 4 --steps 2 --vae " + f.vae +
               " --resolution 128 --mp4 " + f.dir + "/edit.mp4 --json",
           &rc);
  ASSERT_EQ(rc, 0) << out;
  const auto j = nlohmann::json::parse(out.substr(out.find('{')));
  EXPECT_EQ(j["edit"]["source_frames"], 9);  // 9 frames at 12 fps: Lance samples all of them
  EXPECT_EQ(j["grid_thw"], nlohmann::json::array({3, 8, 8}));
  lq::media::VideoReader r(f.dir + "/edit.mp4");
  EXPECT_EQ(r.info().frame_count, 9);
}

TEST(GenTasksCli, EvalComparesPictures) {
  const Fixture& f = fixture();
  std::ofstream(f.dir + "/prompts.txt") << "a red circle\na blue square\n";
  int rc = 0;
  const std::string out = lq("eval " + f.model + " " + f.model + " --fake-quant int4_asym:64 --no-text --no-chat --t2i-prompts " + f.dir +
                                 "/prompts.txt --steps 2 --vae " + f.vae + " --quiet --out " + f.dir + "/report",
                             &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("t2i pictures PSNR"), std::string::npos) << out;
  const auto j = nlohmann::json::parse(std::ifstream(f.dir + "/report/report.json"));
  ASSERT_TRUE(j["gen"].contains("image_ssim")) << j["gen"].dump();
  EXPECT_GT(j["gen"]["image_ssim"].get<double>(), 0.0);
  EXPECT_LE(j["gen"]["image_ssim"].get<double>(), 1.0);
  EXPECT_EQ(j["gen"]["per_prompt"].size(), 2u);
  EXPECT_TRUE(j["gen"]["per_prompt"][0].contains("image_psnr_db"));
  const auto sheet = lq::media::read_image(f.dir + "/report/t2i_side_by_side.png");
  EXPECT_EQ(sheet.width, 3 * 128 + 4 * 8);
  std::ifstream md(f.dir + "/report/report.md");
  const std::string text((std::istreambuf_iterator<char>(md)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("Decoded pictures (Wan2.2 VAE"), std::string::npos);
}

// The outputs of the generation tasks follow io/output.h: a --frames-dir holding files lance-quant did
// not write is refused before the model loads and left untouched; one lance-quant wrote is replaced
// whole (built as DIR.lq-partial-PID, renamed at the end); no output may lie inside an input.
TEST(GenTasksCli, OutputsFollowTheRules) {
  const Fixture& f = fixture();
  const std::string notes = f.dir + "/notes";
  fs::create_directories(notes);
  std::ofstream(notes + "/notes.txt") << "mine\n";
  int rc = 0;
  std::string out = lq("run " + f.model + " --task t2v --prompt x --seed 1 --steps 1 --frames 5 --vae " + f.vae + " --frames-dir " + notes, &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("notes.txt"), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(notes + "/notes.txt"));
  EXPECT_FALSE(fs::exists(notes + "/frame_0000.png"));

  auto pngs = [](const std::string& d) {
    int n = 0;
    for (const auto& e : fs::directory_iterator(d)) n += e.path().extension() == ".png";
    return n;
  };
  const std::string ours = f.dir + "/frames_ours";
  out = lq("run " + f.model + " --task t2v --prompt x --seed 1 --steps 1 --frames 9 --vae " + f.vae + " --frames-dir " + ours, &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(pngs(ours), 9);
  EXPECT_TRUE(fs::exists(ours + "/lance-quant.json"));
  out = lq("run " + f.model + " --task t2v --prompt x --seed 1 --steps 1 --frames 5 --vae " + f.vae + " --frames-dir " + ours, &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(pngs(ours), 5);  // replaced whole, no frames of the earlier run left
  for (const auto& e : fs::directory_iterator(f.dir))
    EXPECT_EQ(e.path().filename().string().find(".lq-"), std::string::npos) << e.path();

  out = lq("run " + f.model + " --task t2i --prompt x --seed 1 --steps 1 --vae " + f.vae + " --png " + f.vae + "/x.png --out " + f.dir +
               "/inside.safetensors",
           &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("--png"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(f.vae + "/x.png"));
  EXPECT_FALSE(fs::exists(f.dir + "/inside.safetensors"));
}

TEST(GenTasksCli, BadOptions) {
  const Fixture& f = fixture();
  std::vector<uint8_t> grey(64 * 64 * 3, 100);
  lq::io::write_png_rgb(f.dir + "/src1.png", grey.data(), 64, 64);
  int rc = 0;
  std::string out = lq("run " + f.model + " --task t2v --prompt x --seed 1 --vae " + f.vae + " --mp4 " + f.dir + "/x.mp4", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("--frames"), std::string::npos) << out;
  out = lq("run " + f.model + " --task edit --image " + f.dir + "/src1.png --prompt x --seed 1 --png " + f.dir + "/y.png", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("--vae"), std::string::npos) << out;
  out = lq("run " + f.model + " --task edit --image " + f.dir + "/src1.png --prompt x --seed 1 --vae " + f.vae + " --png " + f.dir +
               "/src1.png",
           &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("refusing to overwrite"), std::string::npos) << out;
  out = lq("run " + f.model + " --task t2v --prompt x --seed 1 --frames 41 --vae " + f.vae + " --mp4 " + f.dir + "/z.mp4", &rc);
  EXPECT_EQ(rc, 1);  // 11 latent frames > max_num_latent_frames = 3
  EXPECT_NE(out.find("max_num_latent_frames"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(f.dir + "/z.mp4"));
  fs::create_directories(f.dir + "/not-a-vae");  // (the outputs may not lie inside it: an input)
  out = lq("run " + f.model + " --task t2i --prompt x --seed 1 --vae " + f.dir + "/not-a-vae --png " + f.dir + "/w.png --out " + f.dir +
               "/w.st",
           &rc);
  EXPECT_EQ(rc, 1);  // not a VAE directory
  EXPECT_NE(out.find("neither a diffusers VAE"), std::string::npos) << out;
}

}  // namespace
