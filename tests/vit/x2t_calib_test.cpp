// Calibration kinds x2t_image / x2t_video end to end on lance-mini with a synthetic small ViT: the und
// linears see exactly the rows of the x2t prompts plus their answers (counted through `run --task x2t` and
// `tokenize`, other code paths), shards merge to one run, AWQ takes x2t inputs, and bad inputs are refused
// clearly. Random ViT weights: plumbing only.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "calib/stats.h"
#include "io/text_file.h"
#include "test_paths.h"

namespace lq::vit {
namespace {

std::string src(const std::string& rel) { return std::string(LQ_SOURCE_DIR) + "/" + rel; }
int sh(const std::string& cmd, std::string* out) { return test::run_command(cmd, out); }

class X2tCalib : public ::testing::Test {
 protected:
  // Every test has its own scratch directory: ctest runs the tests of this suite in parallel processes.
  void SetUp() override {
    if (test::shared_dir().empty()) GTEST_SKIP() << "shared fixtures not found; skipping";
    dir_ = test::scratch_dir(std::string("x2t_calib_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::string out;
    ASSERT_EQ(sh(test::exe() + " synth --vit small --vit-out-hidden 256 --seed 5 --out " + dir_ + "/vit", &out), 0) << out;
  }
  std::string calibrate(const std::string& sources, const std::string& out, const std::string& extra = "") {
    return test::exe() + " calibrate " + test::lance_mini_dir() + " " + sources + " --vit " + dir_ +
           "/vit --x2t-resolution 224 --allow-partial --force --out " + out + " " + extra;
  }
  std::string dir_;
};

TEST_F(X2tCalib, UndLinearsSeeThePromptsWithTheirAnswers) {
  std::string out;
  const std::string file = src("data/calib/x2t_image.jsonl");
  ASSERT_EQ(sh(calibrate("--calib x2t_image:" + file + " --max-prompts 3", dir_ + "/a.st"), &out), 0) << out;
  const calib::StatsFile s = calib::StatsFile::load(dir_ + "/a.st");
  // Expected rows: for each of the 3 questions, the prompt (run --task x2t) + answer<|im_end|> (tokenize).
  int64_t want = 0;
  const auto lines = io::read_jsonl_objects(file);
  for (int k = 0; k < 3; ++k) {
    const auto& j = lines[size_t(k)].second;
    const std::string image = src("data/images/") + std::filesystem::path(j["image"].get<std::string>()).filename().string();
    const std::string q = j["question"].get<std::string>(), a = j["answer"].get<std::string>() + "<|im_end|>";
    ASSERT_EQ(sh(test::exe() + " run " + test::lance_mini_dir() + " --task x2t --vit " + dir_ + "/vit --resolution 224 --image " +
                     image + " --prompt \"" + q + "\" --max-new-tokens 1 --json",
                 &out),
              0)
        << out;
    want += nlohmann::json::parse(out.substr(out.rfind("\n{") == std::string::npos ? 0 : out.rfind("\n{") + 1))["prompt_tokens"].get<int64_t>();
    ASSERT_EQ(sh("printf '%s\\n' \"" + a + "\" | " + test::exe() + " tokenize " + test::lance_mini_dir(), &out), 0) << out;
    std::istringstream ids(out);
    int64_t n = 0;
    for (std::string tok; ids >> tok;) ++n;
    want += n;
  }
  const auto& q = s.linears.at("language_model.model.layers.0.self_attn.q_proj");
  EXPECT_EQ(q.all.count, want);
  EXPECT_EQ(s.linears.at("language_model.model.layers.3.mlp.down_proj").all.count, want);
  EXPECT_EQ(s.linears.count("language_model.model.layers.0.self_attn.q_proj_moe_gen") ? s.linears.at("language_model.model.layers.0.self_attn.q_proj_moe_gen").all.count : 0, 0);
  ASSERT_EQ(s.data_sources.size(), 1u);
  EXPECT_EQ(s.data_sources[0].rfind("x2t_image:", 0), 0u) << s.data_sources[0];
}

TEST_F(X2tCalib, ShardsMergeToOneRun) {
  std::string out;
  const std::string srcs = "--calib x2t_image:" + src("data/calib/x2t_image.jsonl") + " --calib x2t_video:" +
                           src("data/calib/x2t_video.jsonl") + " --max-prompts 2";
  ASSERT_EQ(sh(calibrate(srcs, dir_ + "/all.st"), &out), 0) << out;
  ASSERT_EQ(sh(calibrate(srcs, dir_ + "/s0.st", "--shard 0/2"), &out), 0) << out;
  ASSERT_EQ(sh(calibrate(srcs, dir_ + "/s1.st", "--shard 1/2"), &out), 0) << out;
  ASSERT_EQ(sh(test::exe() + " merge-stats " + dir_ + "/s0.st " + dir_ + "/s1.st --force --out " + dir_ + "/m.st", &out), 0) << out;
  const calib::StatsFile a = calib::StatsFile::load(dir_ + "/all.st"), m = calib::StatsFile::load(dir_ + "/m.st");
  for (const auto& [name, st] : a.linears) {
    EXPECT_EQ(m.linears.at(name).all.count, st.all.count) << name;
    EXPECT_EQ(m.linears.at(name).all.max_abs, st.all.max_abs) << name;
  }
}

TEST_F(X2tCalib, AwqTakesX2tInputs) {
  std::string out;
  const std::string m = test::lance_mini_dir();
  ASSERT_EQ(sh("LQ_PROGRESS_SECONDS=0 " + test::exe() + " quantize " + m + " --scheme awq-int4 --group-size 64 --calib text:" + src("data/calib/text.txt") +
                   " --calib x2t_image:" + src("data/calib/x2t_image.jsonl") + " --calib t2i:" + m +
                   "/calib_prompts.txt --max-prompts 1 --steps 2 --t2i-taus 1 --awq-rows 256 --max-tokens 512 --vit-dir " + dir_ +
                   "/vit --x2t-resolution 224 --out " + dir_ + "/q --force --json",
               &out),
            0)
      << out;
  // Calibration shows progress from its start, naming the medium the ViT runs on (a video takes minutes at full size).
  EXPECT_NE(out.find("quantize: calibration: 0/"), std::string::npos) << out;
  EXPECT_NE(out.find("x2t astronaut.jpg"), std::string::npos) << out;
  const auto j = nlohmann::json::parse(out.substr(out.find('{')));
  // Text gets half of the 256 und rows (one 256-token window), then the first x2t prompt (~100 rows).
  EXPECT_GT(j["calib_rows_per_layer"]["und"].get<int64_t>(), 256);
  EXPECT_EQ(j["quantized_linears"], 56);
}

TEST_F(X2tCalib, ClearErrors) {
  std::string out;
  const std::string m = test::lance_mini_dir();
  EXPECT_NE(sh(test::exe() + " calibrate " + m + " --calib x2t_image:" + src("data/calib/x2t_image.jsonl") + " --out " + dir_ + "/x.st --force", &out), 0);
  EXPECT_NE(out.find("x2t sources need the ViT"), std::string::npos) << out;
  EXPECT_NE(sh(calibrate("--calib x2t_image:" + src("data/calib/x2t_video.jsonl"), dir_ + "/y.st"), &out), 0);
  EXPECT_NE(out.find("x2t_video.jsonl:1] has \"video\" but this is an x2t_image source"), std::string::npos) << out;
  std::ofstream(dir_ + "/bad.jsonl") << "{\"image\": \"no-such.png\", \"question\": \"q\"}\n";
  EXPECT_NE(sh(calibrate("--calib x2t_image:" + dir_ + "/bad.jsonl", dir_ + "/z.st"), &out), 0);
  EXPECT_NE(out.find("bad.jsonl:1] image not found"), std::string::npos) << out;
}

}  // namespace
}  // namespace lq::vit

namespace lq::vit {
namespace {

// eval's x2t section: a model against itself agrees exactly (KL 0, top-1 100%); QUANT with a 4-bit ViT
// (--vit-quant int4) runs its own ViT and reports its feature error.
TEST_F(X2tCalib, EvalReportsUnderstanding) {
  std::string out;
  const std::string m = test::lance_mini_dir();
  const std::string cmd = test::exe() + " eval " + m + " " + m + " --no-text --no-chat --no-t2i --x2t-image " +
                          src("data/eval/x2t_image.jsonl") + " --x2t-video " + src("data/eval/x2t_video.jsonl") + " --vit " +
                          dir_ + "/vit --x2t-resolution 224 --max-x2t 2 --max-new-tokens 6 --quiet --out ";
  ASSERT_EQ(sh(cmd + dir_ + "/rep-same", &out), 0) << out;
  std::ifstream f(dir_ + "/rep-same/report.json");
  const auto j = nlohmann::json::parse(f)["x2t"];
  EXPECT_EQ(j["items"].size(), 2u);
  EXPECT_EQ(j["exact_match"], 1.0);
  EXPECT_EQ(j["kl_mean"], 0.0);
  EXPECT_EQ(j["top1_agreement"], 1.0);
  EXPECT_EQ(j["quant_vit"], false);
  EXPECT_GT(j["answer_tokens"].get<int>(), 2);
  ASSERT_EQ(sh(cmd + dir_ + "/rep-vit4 --vit-quant int4", &out), 0) << out;
  std::ifstream g(dir_ + "/rep-vit4/report.json");
  const auto k = nlohmann::json::parse(g)["x2t"];
  EXPECT_EQ(k["quant_vit"], true);
  EXPECT_GT(k["vit_rel_error"].get<double>(), 0.0);
  EXPECT_GT(k["kl_mean"].get<double>(), 0.0);
  EXPECT_NE(k["quant_vit_note"].get<std::string>().find("int4 g64"), std::string::npos);
  std::ifstream md(dir_ + "/rep-vit4/report.md");
  std::stringstream s;
  s << md.rdbuf();
  EXPECT_NE(s.str().find("## Image and video understanding (x2t)"), std::string::npos);
}

}  // namespace
}  // namespace lq::vit
