// `lance-quant bench decode` on lance-mini and its RTN INT4 checkpoint: both models measured in their
// own processes, sizes and memory reported, errors named.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using lq::test::exe;
using lq::test::run_command;

uint64_t dir_bytes(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) total += e.file_size();
  return total;
}

TEST(BenchDecodeCli, LanceMiniAgainstItsInt4Checkpoint) {
  LQ_REQUIRE_SHARED();
  const std::string quant = lq::test::scratch_dir("bench_decode_int4") + "/q";
  std::string out;
  ASSERT_EQ(run_command(exe() + " quantize " + lq::test::lance_mini_dir() + " --scheme rtn-int4 --group-size 64 --out " +
                            quant + " 2>&1",
                        &out),
            0)
      << out;
  ASSERT_EQ(run_command(exe() + " bench decode " + lq::test::lance_mini_dir() + " " + quant +
                            " --prompt-tokens 4 --decode-tokens 3 --quant-head stored,int4 --rounds 2 --json 2>/dev/null",
                        &out),
            0)
      << out;
  const auto j = nlohmann::json::parse(out);
  const auto& base = j.at("base");
  const auto& q = j.at("quantized");
  for (const auto* m : {&base, &q}) {
    EXPECT_EQ(m->at("layers"), 4);
    EXPECT_EQ(m->at("decode_tokens"), 3);
    EXPECT_EQ(m->at("generated").size(), 3u);
    EXPECT_GT(m->at("decode_tokens_per_s").get<double>(), 0.0);
    // Two interleaved rounds: the reported speed is the better one, the median their mean.
    const auto& rounds = m->at("decode_tokens_per_s_rounds");
    ASSERT_EQ(rounds.size(), 2u);
    const double r0 = rounds[0].get<double>(), r1 = rounds[1].get<double>();
    EXPECT_EQ(m->at("decode_tokens_per_s").get<double>(), std::max(r0, r1));
    EXPECT_DOUBLE_EQ(m->at("decode_tokens_per_s_median").get<double>(), 0.5 * (r0 + r1));
    EXPECT_TRUE(m->at("same_tokens_every_round").get<bool>());
    const double head = m->at("lm_head_share_of_decode").get<double>();
    EXPECT_GT(head, 0.0);
    EXPECT_LT(head, 1.0);
    // Each child's own peak resident set: at least what it keeps anonymously at the end.
    EXPECT_GE(m->at("memory").at("VmHWM").get<double>(), m->at("memory").at("RssAnon").get<double>());
    EXPECT_GT(m->at("memory").at("VmHWM").get<double>(), 0.0);
  }
  EXPECT_EQ(base.at("disk_bytes").get<uint64_t>(), dir_bytes(lq::test::lance_mini_dir()));
  EXPECT_EQ(q.at("disk_bytes").get<uint64_t>(), dir_bytes(quant));
  // 4-bit linears: well under a third of the f32 model's bytes.
  EXPECT_LT(q.at("layer_weight_bytes").get<double>() * 3, base.at("layer_weight_bytes").get<double>());
  EXPECT_NEAR(j.at("decode_speedup").get<double>(),
              q.at("decode_tokens_per_s").get<double>() / base.at("decode_tokens_per_s").get<double>(), 1e-9);
  // One quantized run per --quant-head entry, in order; the int4 head is quantized at load.
  const auto& runs = j.at("quantized_runs");
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].at("head"), "stored");
  EXPECT_EQ(runs[1].at("head"), "int4");
  EXPECT_EQ(runs[1].at("generated").size(), 3u);
  EXPECT_NEAR(runs[1].at("decode_speedup").get<double>(),
              runs[1].at("decode_tokens_per_s").get<double>() / base.at("decode_tokens_per_s").get<double>(), 1e-9);
}

TEST(BenchDecodeCli, MissingDirectoryIsNamed) {
  LQ_REQUIRE_SHARED();
  std::string out;
  EXPECT_EQ(run_command(exe() + " bench decode " + lq::test::lance_mini_dir() + " /nonexistent-k6 2>&1", &out), 1);
  EXPECT_NE(out.find("/nonexistent-k6"), std::string::npos) << out;
  EXPECT_EQ(run_command(exe() + " bench decode " + lq::test::lance_mini_dir() + " 2>&1", &out), 1);
  EXPECT_NE(out.find("QUANT_DIR"), std::string::npos) << out;
  EXPECT_EQ(run_command(exe() + " bench decode " + lq::test::lance_mini_dir() + " " + lq::test::lance_mini_dir() +
                            " --rounds 0 2>&1",
                        &out),
            1);
  EXPECT_NE(out.find("--rounds"), std::string::npos) << out;
}

}  // namespace
