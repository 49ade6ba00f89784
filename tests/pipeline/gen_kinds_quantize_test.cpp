// AWQ / GPTQ calibration rows from every generation task (t2i, t2v, image_edit, video_edit), on a
// synthetic tiny model (3 latent frames allowed) with a tiny random-weight Wan2.2 VAE and a small
// synthetic ViT: the kinds take turns, each sampled sequence is the prefix (an edit's: ViT reference
// block, clean source block) plus the noise block, with the row counts and splits the sequences imply;
// `quantize` runs on them end to end and refuses edits without their VAE or ViT before any work.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "forward/forward.h"
#include "io/png.h"
#include "media/video_writer.h"
#include "pipeline/quantize.h"
#include "pipeline/searches.h"
#include "test_paths.h"

namespace lq::pipeline {
namespace {

namespace fs = std::filesystem;

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
  std::string dir, model, vae, vit;
};

// Per test (ctest runs the tests of this file in parallel processes): its own scratch directory.
const World& world() {
  static const World w = [] {
    World x;
    x.dir = test::scratch_dir(std::string("gen_kinds_quantize_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    x.model = x.dir + "/model";
    x.vae = x.dir + "/vae";
    x.vit = x.dir + "/vit";
    for (const std::string& args : {"synth --preset tiny --seed 5 --out " + x.model, "synth-vae --size tiny --out " + x.vae,
                                    "synth --vit small --vit-out-hidden 128 --seed 6 --out " + x.vit}) {
      std::string out;
      EXPECT_EQ(test::run_command(test::exe() + " " + args, &out), 0) << out;
    }
    nlohmann::json j = nlohmann::json::parse(std::ifstream(x.model + "/lance_config.json"));
    j["max_num_latent_frames"] = 3;
    std::ofstream(x.model + "/lance_config.json") << j.dump(1);
    fs::create_directories(x.dir + "/media");
    io::write_png_rgb(x.dir + "/media/a.png", picture(128, 128, 0).data(), 128, 128);
    {
      media::VideoWriter vw(x.dir + "/media/v.mp4", 128, 128);
      for (int k = 0; k < 9; ++k) vw.add_frame(picture(128, 128, k).data());
      vw.finish();
    }
    std::ofstream(x.dir + "/t2i.txt") << "a red ball\n";
    std::ofstream(x.dir + "/t2v.txt") << "a ball bouncing\n";
    std::ofstream(x.dir + "/image_edit.jsonl") << R"({"image": "media/a.png", "prompt": "make it red"})" << "\n";
    std::ofstream(x.dir + "/video_edit.jsonl") << R"({"video": "media/v.mp4", "prompt": "slower"})" << "\n";
    return x;
  }();
  return w;
}

QuantizeOptions options(const World& w) {
  QuantizeOptions o;
  o.model_dir = w.model;
  o.scheme = parse_scheme_choice("awq-int4", 64, false);
  for (const std::string& src : {"t2i:" + w.dir + "/t2i.txt", "t2v:" + w.dir + "/t2v.txt", "image_edit:" + w.dir + "/image_edit.jsonl",
                                 "video_edit:" + w.dir + "/video_edit.jsonl"})
    o.calib.push_back(calib::parse_source(src));
  o.vae = w.vae;
  o.vit_dir = w.vit;
  o.awq.t2i_steps = 2;
  o.awq.t2i_taus = 1;            // step 0 (tau' = 1: CFG active -> cond and uncond)
  o.awq.rows_per_layer = 100000;  // everything
  return o;
}

int64_t count(const fwd::Chunk& c, fwd::Path p) { return std::count(c.paths.begin(), c.paths.end(), p); }

std::vector<std::pair<int64_t, fwd::SplitMode>> modes(const fwd::Chunk& c) {
  std::vector<std::pair<int64_t, fwd::SplitMode>> m;
  for (const auto& s : c.splits) m.push_back({s.len, s.mode});
  return m;
}

TEST(GenKindsQuantize, EveryGenerationTaskGivesRows) {
  const World& w = world();
  fwd::Engine engine = load_search_engine(w.model);
  const CalibRows rows = collect_calib_rows(options(w), engine);
  // Turns: t2i, t2v, image_edit, video_edit; each the cond and the uncond sequence at tau' = 1.
  ASSERT_EQ(rows.samples.size(), 8u);
  using fwd::Path;
  using fwd::SplitMode;
  // t2i 1 x 8 x 8 (64 latents), t2v 3 x 8 x 8 (17 frames capped to the model's 3 latent frames: 192).
  EXPECT_EQ(count(rows.samples[0], Path::Gen), 64);
  EXPECT_EQ(count(rows.samples[1], Path::Gen), 64);
  EXPECT_EQ(count(rows.samples[2], Path::Gen), 192);
  EXPECT_EQ(count(rows.samples[3], Path::Gen), 192);
  // image_edit: 128 x 128 source at 16 sqrt(8 x 8) = 128 -> 8 x 8 latents, clean (prefix) and noisy:
  // 2 x 64 gen rows per sequence; ViT reference at 112 -> 4 x 4 tokens + 2 markers, und rows.
  EXPECT_EQ(count(rows.samples[4], Path::Gen), 128);
  const auto m4 = modes(rows.samples[4]), m5 = modes(rows.samples[5]);
  ASSERT_EQ(m4.size(), 6u);  // s1, ViT block, source block, caption, s3, target block
  EXPECT_EQ(m4[1], std::make_pair(int64_t(18), SplitMode::Full));
  EXPECT_EQ(m4[2], std::make_pair(int64_t(66), SplitMode::Full));
  EXPECT_EQ(m4[5], std::make_pair(int64_t(66), SplitMode::Noise));
  ASSERT_EQ(m5.size(), 5u);  // uncond: the caption dropped, the ViT block kept
  EXPECT_EQ(m5[1], m4[1]);
  EXPECT_EQ(m5[4], m4[5]);
  // MaPE: the ViT block's t axis starts at 1000; the target copies the source block's positions.
  const fwd::Chunk& e = rows.samples[4];
  const int64_t s1 = m4[0].first;
  EXPECT_EQ(e.positions[size_t(s1)][0], 1000);
  const int64_t src0 = s1 + 18, tgt0 = e.rows() - 66;
  for (int64_t i = 0; i < 66; ++i) ASSERT_EQ(e.positions[size_t(tgt0 + i)], e.positions[size_t(src0 + i)]) << i;
  // video_edit: 9 frames -> 3 x 8 x 8 latents (2 x 192 gen rows); ViT: 10 frames -> 5 x 4 x 4 = 80 tokens.
  EXPECT_EQ(count(rows.samples[6], Path::Gen), 384);
  EXPECT_EQ(modes(rows.samples[6])[1], std::make_pair(int64_t(82), SplitMode::Full));
  EXPECT_EQ(rows.rows_gen, 2 * 64 + 2 * 192 + 2 * 128 + 2 * 384);
  for (size_t i = 0; i < rows.samples.size(); ++i)
    EXPECT_EQ(int64_t(rows.states[i].size()), rows.samples[i].rows() * engine.config().hidden_size) << i;

  // Without the ViT reference the edit sequences lose exactly the ViT block.
  QuantizeOptions o = options(w);
  o.edit_without_vit = true;
  fwd::Engine engine2 = load_search_engine(w.model);
  const CalibRows nv = collect_calib_rows(o, engine2);
  ASSERT_EQ(nv.samples.size(), 8u);
  EXPECT_EQ(nv.samples[4].rows(), rows.samples[4].rows() - 18);
  EXPECT_EQ(nv.samples[6].rows(), rows.samples[6].rows() - 82);
  EXPECT_EQ(nv.rows_gen, rows.rows_gen);
  EXPECT_EQ(nv.samples[0].positions, rows.samples[0].positions);  // t2i unchanged

  // A small budget: t2i's cond (64) and uncond (128 >= 100) sequences, then one (cond) sequence of each
  // other kind, which has given none yet.
  o = options(w);
  o.awq.rows_per_layer = 100;
  fwd::Engine engine3 = load_search_engine(w.model);
  const CalibRows few = collect_calib_rows(o, engine3);
  ASSERT_EQ(few.samples.size(), 5u);
  const std::vector<int64_t> want{64, 64, 192, 128, 384};
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(count(few.samples[i], fwd::Path::Gen), want[i]) << i;
  EXPECT_EQ(few.samples[3].positions, rows.samples[4].positions);  // image_edit's cond sequence
}

TEST(GenKindsQuantize, QuantizeEndToEndAndRefusals) {
  const World& w = world();
  const std::string calib = " --calib t2i:" + w.dir + "/t2i.txt --calib t2v:" + w.dir + "/t2v.txt --calib image_edit:" + w.dir +
                            "/image_edit.jsonl --calib video_edit:" + w.dir + "/video_edit.jsonl --steps 2 --t2i-taus 1 --awq-rows 512";
  std::string out;
  const std::string q = test::exe() + " quantize " + w.model + " --scheme awq-int4 --group-size 64 --allow-partial" + calib;
  ASSERT_EQ(test::run_command(q + " --vae " + w.vae + " --vit-dir " + w.vit + " --json --out " + w.dir + "/q", &out), 0) << out;
  const auto j = nlohmann::json::parse(out.substr(out.find('{')));
  EXPECT_GT(j["calib_rows_per_layer"]["gen"].get<int64_t>(), 0);
  EXPECT_TRUE(fs::exists(w.dir + "/q"));
  EXPECT_EQ(test::run_command(q + " --vit-dir " + w.vit + " --out " + w.dir + "/r", &out), 1);
  EXPECT_NE(out.find("--vae"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(q + " --vae " + w.vae + " --out " + w.dir + "/r", &out), 1);  // the tiny model has no ViT inside
  EXPECT_NE(out.find("--no-vit-reference"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(w.dir + "/r"));
}

}  // namespace
}  // namespace lq::pipeline
