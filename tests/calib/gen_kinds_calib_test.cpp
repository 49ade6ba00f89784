// Calibration kinds t2v:FILE, image_edit:FILE and video_edit:FILE on a synthetic tiny model (3 latent
// frames allowed) with a tiny random-weight Wan2.2 VAE: the gen linears see exactly the rows the
// sequences imply (K target rows per branch per step, CFG active on both steps of a 2-step schedule;
// for edits also the clean source rows of both branches' prefixes, counted in tau bucket 0; with a ViT
// the reference block's rows reach the und linears of both branches), and bad inputs are refused before
// any work.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "calib/stats.h"
#include "io/png.h"
#include "media/video_writer.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using lq::calib::StatsFile;

std::string lq(const std::string& args, int* rc) {
  std::string out;
  *rc = lq::test::run_command(lq::test::exe() + " " + args, &out);
  return out;
}

std::vector<uint8_t> picture(int w, int h, int k) {
  std::vector<uint8_t> p(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* q = &p[(size_t(y) * w + x) * 3];
      q[0] = uint8_t(x * 2 + k * 10);
      q[1] = uint8_t(y * 2);
      q[2] = uint8_t((x ^ y) & 255);
    }
  return p;
}

struct World {
  std::string dir, model, vae;
};

const World& world() {
  static const World s = [] {
    World x;
    // Per test: ctest runs this file's tests in parallel processes.
    x.dir = lq::test::scratch_dir(std::string("gen_kinds_calib_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    x.model = x.dir + "/model";
    x.vae = x.dir + "/vae";
    int rc = 0;
    std::string out = lq("synth --preset tiny --seed 5 --out " + x.model, &rc);
    EXPECT_EQ(rc, 0) << out;
    nlohmann::json j = nlohmann::json::parse(std::ifstream(x.model + "/lance_config.json"));
    j["max_num_latent_frames"] = 3;
    std::ofstream(x.model + "/lance_config.json") << j.dump(1);
    out = lq("synth-vae --size tiny --out " + x.vae, &rc);
    EXPECT_EQ(rc, 0) << out;
    out = lq("synth --vit small --vit-out-hidden 128 --seed 6 --out " + x.dir + "/vit", &rc);  // tiny: hidden 128
    EXPECT_EQ(rc, 0) << out;
    fs::create_directories(x.dir + "/media");
    lq::io::write_png_rgb(x.dir + "/media/a.png", picture(128, 128, 0).data(), 128, 128);
    {
      lq::media::VideoWriter vw(x.dir + "/media/v.mp4", 128, 128);
      for (int k = 0; k < 9; ++k) vw.add_frame(picture(128, 128, k).data());
      vw.finish();
    }
    std::ofstream(x.dir + "/t2v.txt") << "a ball bouncing\n";
    std::ofstream(x.dir + "/image_edit.jsonl") << R"({"image": "media/a.png", "prompt": "make it red"})" << "\n";
    std::ofstream(x.dir + "/video_edit.jsonl") << R"({"video": "media/v.mp4", "prompt": "slower"})" << "\n";
    return x;
  }();
  return s;
}

const std::string kGenQ = "language_model.model.layers.0.self_attn.q_proj_moe_gen";
const std::string kUndQ = "language_model.model.layers.0.self_attn.q_proj";

StatsFile calibrate(const std::string& kind, const std::string& extra = "") {
  const World& s = world();
  const std::string out = s.dir + "/" + kind + ".st";
  int rc = 0;
  const std::string log = lq("calibrate " + s.model + " --calib " + kind + ":" + s.dir + "/" + kind + (kind == "t2v" ? ".txt" : ".jsonl") +
                                 " --steps 2 --vae " + s.vae + " --allow-partial --force --out " + out + " " + extra,
                             &rc);
  EXPECT_EQ(rc, 0) << log;
  return StatsFile::load(out);
}

TEST(GenKindsCalib, T2v) {
  const StatsFile st = calibrate("t2v");
  // Default 17 frames capped to the model's 3 latent frames: grid 3 x 8 x 8 = 192 target rows, two steps,
  // CFG on both (tau' 1.0 and 0.78 > 0.4): 2 x 2 x 192 gen rows.
  EXPECT_EQ(st.extra_metadata.at("t2v_grid"), "3x8x8");
  EXPECT_EQ(st.linears.at(kGenQ).all.count, 2 * 2 * 192);
  EXPECT_EQ(st.linears.at(kGenQ).by_tau.at(0).count, 0);
}

TEST(GenKindsCalib, ImageEdit) {
  const StatsFile st = calibrate("image_edit", "--no-vit-reference");
  // 128 x 128 source at the default resolution 16 sqrt(8 x 8) = 128: grid 1 x 8 x 8. Clean source rows in
  // both branches' prefixes (2 x 64, tau 0) plus 2 steps x 2 branches x 64 target rows.
  EXPECT_EQ(st.linears.at(kGenQ).all.count, 2 * 64 + 2 * 2 * 64);
  EXPECT_EQ(st.linears.at(kGenQ).by_tau.at(0).count, 2 * 64);
}

TEST(GenKindsCalib, VideoEdit) {
  const StatsFile st = calibrate("video_edit", "--no-vit-reference");
  // 9 frames at 12 fps: Lance samples all 9 -> grid 3 x 8 x 8 = 192 rows per block.
  EXPECT_EQ(st.linears.at(kGenQ).all.count, 2 * 192 + 2 * 2 * 192);
  EXPECT_EQ(st.linears.at(kGenQ).by_tau.at(0).count, 2 * 192);
}

TEST(GenKindsCalib, EditsWithTheVitReference) {
  const World& s = world();
  for (const std::string kind : {"image_edit", "video_edit"}) {
    const StatsFile without = calibrate(kind, "--no-vit-reference");
    const StatsFile with = calibrate(kind, "--vit " + s.dir + "/vit");
    EXPECT_EQ(with.extra_metadata.at("edit_vit_reference"), "yes");
    EXPECT_EQ(without.extra_metadata.at("edit_vit_reference"), "no");
    // The gen rows are unchanged; each branch's prefix gains the ViT block (K tokens + 2 markers) on the
    // und path. ViT at 7/8 of 128 = 112: 128x128 -> 112x112 -> 4 x 4 merged tokens per temporal patch;
    // image: 2 frames -> 1 patch (K = 16); video: 9 frames + the last repeated -> 5 patches (K = 80).
    const int64_t k = kind == "image_edit" ? 16 : 80;
    EXPECT_EQ(with.linears.at(kGenQ).all.count, without.linears.at(kGenQ).all.count) << kind;
    EXPECT_EQ(with.linears.at(kUndQ).all.count, without.linears.at(kUndQ).all.count + 2 * (k + 2)) << kind;
  }
  // Without a ViT (none in the model) an edit source is refused unless --no-vit-reference.
  int rc = 0;
  const std::string out = lq("calibrate " + s.model + " --calib image_edit:" + s.dir + "/image_edit.jsonl --vae " + s.vae +
                                 " --force --out " + s.dir + "/nv.st",
                             &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("--no-vit-reference"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(s.dir + "/nv.st"));
}

TEST(GenKindsCalib, Errors) {
  const World& s = world();
  int rc = 0;
  std::string out = lq("calibrate " + s.model + " --calib image_edit:" + s.dir + "/image_edit.jsonl --no-vit-reference --force --out " + s.dir + "/e.st", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("--vae"), std::string::npos) << out;
  std::ofstream(s.dir + "/bad.jsonl") << R"({"image": "media/missing.png", "prompt": "x"})" << "\n";
  out = lq("calibrate " + s.model + " --calib image_edit:" + s.dir + "/bad.jsonl --vae " + s.vae + " --no-vit-reference --force --out " + s.dir + "/e.st", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("bad.jsonl:1"), std::string::npos) << out;
  out = lq("calibrate " + s.model + " --calib t2v:" + s.dir + "/t2v.txt --t2v-frames 21 --force --out " + s.dir + "/e.st", &rc);
  EXPECT_EQ(rc, 1);  // 6 latent frames > 3
  EXPECT_NE(out.find("max_num_latent_frames"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(s.dir + "/e.st"));
}

}  // namespace
