// `lance-quant eval` end to end on lance-mini against a fake-quantized copy: exit status, the report
// files, the required report.json keys and the data accounting in report.md; argument errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_paths.h"

namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Width and height from a PNG's IHDR chunk (big-endian at byte offsets 16 and 20).
std::pair<int, int> png_size(const fs::path& p) {
  const std::string b = read_text(p);
  if (b.size() < 24 || b.compare(1, 3, "PNG") != 0) return {0, 0};
  auto be32 = [&](size_t o) {
    return int((uint8_t(b[o]) << 24) | (uint8_t(b[o + 1]) << 16) | (uint8_t(b[o + 2]) << 8) | uint8_t(b[o + 3]));
  };
  return {be32(16), be32(20)};
}

TEST(EvalCli, ReportAgainstFakeQuantizedLanceMini) {
  LQ_REQUIRE_SHARED();
  const std::string mini = lq::test::lance_mini_dir(), out = lq::test::scratch_dir("eval_cli_report");
  std::string log;
  const int rc = lq::test::run_command(lq::test::exe() + " eval " + mini + " " + mini +
                                           " --fake-quant int4_asym:64 --max-text-tokens 512 --max-chat 2"
                                           " --max-new-tokens 8 --max-t2i 1 --steps 6 --quiet --data-dir " +
                                           std::string(LQ_SOURCE_DIR) + "/data/eval --out " + out,
                                       &log);
  ASSERT_EQ(rc, 0) << log;
  EXPECT_NE(log.find("report: "), std::string::npos) << log;
  for (const char* f : {"report.md", "report.json", "linear_error_und.svg", "linear_error_gen.svg", "hidden_error.svg",
                        "velocity_per_tau.svg", "t2i_side_by_side.png"})
    EXPECT_TRUE(fs::exists(fs::path(out) / f)) << f;

  const auto j = nlohmann::json::parse(read_text(fs::path(out) / "report.json"));
  for (const char* k : {"base_perplexity", "quant_perplexity", "kl_mean", "top1_agreement"})
    EXPECT_TRUE(j["und"][k].is_number()) << k;
  EXPECT_TRUE(j["gen"]["latent_rel_error"].is_number());
  EXPECT_TRUE(j["gen"]["latent_psnr_db"].is_number());
  EXPECT_GT(j["und"]["kl_mean"].get<double>(), 0.0);
  EXPECT_EQ(j["und"]["tokens_scored"].get<int>(), 510);  // 2 windows x 255 scored positions
  EXPECT_EQ(j["data"]["chat"]["prompts"].get<int>(), 2);
  EXPECT_EQ(j["data"]["t2i"]["steps"].get<int>(), 6);
  EXPECT_EQ(j["layers"]["linears"].size(), 56u);

  const std::string md = read_text(fs::path(out) / "report.md");
  EXPECT_NE(md.find("data/eval/text.txt"), std::string::npos);
  EXPECT_NE(md.find("510 tokens scored"), std::string::npos);
  EXPECT_NE(md.find("2 questions"), std::string::npos);
  EXPECT_NE(md.find("1 captions"), std::string::npos);
  // One row [BASE | QUANT | diff] of 128 x 128 images (32 x 32 toy images, 4x) with 8-px gutters.
  EXPECT_EQ(png_size(fs::path(out) / "t2i_side_by_side.png"), std::make_pair(3 * 128 + 4 * 8, 128 + 2 * 8));
}

TEST(EvalCli, ArgumentErrorsAreNamed) {
  std::string log;
  EXPECT_EQ(lq::test::run_command(lq::test::exe() + " eval onlybase --out x", &log), 1);
  EXPECT_NE(log.find("needs BASE and QUANT"), std::string::npos) << log;
  EXPECT_EQ(lq::test::run_command(lq::test::exe() + " eval a b", &log), 1);
  EXPECT_NE(log.find("--out"), std::string::npos) << log;
  EXPECT_EQ(lq::test::run_command(lq::test::exe() + " eval a b --out x --max-chat 0", &log), 1);
  EXPECT_NE(log.find("--max-chat"), std::string::npos) << log;
  if (lq::test::shared_dir().empty()) return;
  const std::string mini = lq::test::lance_mini_dir();
  EXPECT_EQ(lq::test::run_command(lq::test::exe() + " eval " + mini + " " + mini + " --fake-quant int3 --no-t2i --no-chat"
                                  " --out " + lq::test::scratch_dir("eval_cli_bad"), &log), 1);
  EXPECT_NE(log.find("int3"), std::string::npos) << log;
}

// The demo on lance-mini with one scheme: quantize (the real subcommand), eval, comparison table.
TEST(EvalCli, DemoOneSchemeQuick) {
  LQ_REQUIRE_SHARED();
  const std::string out = lq::test::scratch_dir("demo_quick");
  std::string log;
  const int rc = lq::test::run_command("cd " + std::string(LQ_SOURCE_DIR) + " && LANCE_QUANT_SHARED=" +
                                           lq::test::shared_dir() + " " + lq::test::exe() +
                                           " demo --quick --schemes rtn-int4 --out " + out,
                                       &log);
  ASSERT_EQ(rc, 0) << log;
  EXPECT_NE(log.find("fixtures/lance-mini"), std::string::npos) << log;  // the default model
  EXPECT_NE(log.find("rtn-int4 "), std::string::npos) << log;             // a table row
  const auto j = nlohmann::json::parse(read_text(fs::path(out) / "report-rtn-int4" / "report.json"));
  EXPECT_GT(j["und"]["kl_mean"].get<double>(), 0.0);  // a real 4-bit checkpoint, loaded by Engine::load
  EXPECT_LT(j["und"]["kl_mean"].get<double>(), 0.1);
  EXPECT_TRUE(fs::exists(fs::path(out) / "rtn-int4"));
}

}  // namespace
