// `lance-quant calibrate` / `merge-stats` end to end on lance-mini: shards merged equal one run,
// merging is order-independent, and a run that leaves the gen path uncalibrated is refused.
#include <gtest/gtest.h>

#include <cmath>

#include "calib/stats.h"
#include "test_paths.h"

namespace {

using lq::calib::StatsFile;

std::string calibrate_cmd(const std::string& out, const std::string& extra) {
  const std::string m = lq::test::lance_mini_dir();
  return lq::test::exe() + " calibrate " + m + " --calib text:" + m + "/val_tinystories.txt --max-tokens 1500 --seq-len 256" +
         " --calib t2i:" + m + "/calib_prompts.txt --max-prompts 3 --steps 6 --out " + out + " --force " + extra;
}

double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0, s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    m = std::max(m, std::fabs(a[i] - b[i]));
    s = std::max(s, std::fabs(b[i]));
  }
  return s > 0 ? m / s : m;
}

void expect_same(const StatsFile& a, const StatsFile& b, double tol) {
  ASSERT_EQ(a.linears.size(), b.linears.size());
  for (const auto& [name, s] : b.linears) {
    SCOPED_TRACE(name);
    const auto& t = a.linears.at(name);
    EXPECT_EQ(t.all.count, s.all.count);
    EXPECT_LE(max_rel_diff(t.all.sum_abs, s.all.sum_abs), tol);
    EXPECT_LE(max_rel_diff(t.all.sum_sq, s.all.sum_sq), tol);
    EXPECT_EQ(t.all.max_abs, s.all.max_abs);
    ASSERT_EQ(t.by_tau.size(), s.by_tau.size());
    for (size_t k = 0; k < s.by_tau.size(); ++k) EXPECT_EQ(t.by_tau[k].count, s.by_tau[k].count);
  }
}

}  // namespace

TEST(CalibrateCli, ShardsMergedEqualOneRunInAnyOrder) {
  LQ_REQUIRE_SHARED();
  const std::string d = lq::test::scratch_dir("calibrate_cli");
  std::string log;
  ASSERT_EQ(lq::test::run_command(calibrate_cmd(d + "/all.st", ""), &log), 0) << log;
  ASSERT_EQ(lq::test::run_command(calibrate_cmd(d + "/s0.st", "--shard 0/2"), &log), 0) << log;
  ASSERT_EQ(lq::test::run_command(calibrate_cmd(d + "/s1.st", "--shard 1/2"), &log), 0) << log;
  ASSERT_EQ(lq::test::run_command(lq::test::exe() + " merge-stats " + d + "/s0.st " + d + "/s1.st --out " + d + "/m01.st", &log), 0) << log;
  ASSERT_EQ(lq::test::run_command(lq::test::exe() + " merge-stats " + d + "/s1.st " + d + "/s0.st --out " + d + "/m10.st", &log), 0) << log;
  const StatsFile all = StatsFile::load(d + "/all.st");
  const StatsFile s0 = StatsFile::load(d + "/s0.st");
  EXPECT_LT(s0.linears.begin()->second.all.count, all.linears.begin()->second.all.count);
  expect_same(StatsFile::load(d + "/m01.st"), all, 1e-6);
  expect_same(StatsFile::load(d + "/m10.st"), all, 1e-6);
  // Every gen linear saw latent rows in several tau buckets (the whole shifted schedule).
  for (const auto& [name, s] : all.linears) {
    if (name.find("_moe_gen") == std::string::npos) continue;
    int buckets = 0;
    for (const auto& b : s.by_tau) buckets += b.count > 0;
    EXPECT_GE(buckets, 4) << name;
  }
}

TEST(CalibrateCli, RefusesToLeaveAPathUncalibratedUnlessAsked) {
  LQ_REQUIRE_SHARED();
  const std::string d = lq::test::scratch_dir("calibrate_partial"), m = lq::test::lance_mini_dir();
  const std::string base = lq::test::exe() + " calibrate " + m + " --calib text:" + m + "/val_tinystories.txt --max-tokens 600 --out " + d + "/p.st";
  std::string log;
  EXPECT_EQ(lq::test::run_command(base, &log), 1);
  EXPECT_NE(log.find("language_model.model.layers.0.self_attn.q_proj_moe_gen"), std::string::npos) << log;
  EXPECT_NE(log.find("28 target linears"), std::string::npos) << log;
  EXPECT_EQ(lq::test::run_command(base + " --allow-partial", &log), 0) << log;
  EXPECT_EQ(StatsFile::load(d + "/p.st").extra_metadata.at("partial"), "true");
}

TEST(CalibrateCli, MergeRefusesStatisticsOfAnotherModel) {
  LQ_REQUIRE_SHARED();
  const std::string d = lq::test::scratch_dir("calibrate_other_model");
  StatsFile other;
  other.model_fingerprint = "0123456789abcdef";
  other.linears["x"].add_rows(std::vector<float>{1, 2}.data(), 1, 2, -1, false);
  other.save(d + "/other.st");
  std::string log;
  ASSERT_EQ(lq::test::run_command(calibrate_cmd(d + "/mini.st", "--allow-partial"), &log), 0) << log;
  EXPECT_EQ(lq::test::run_command(lq::test::exe() + " merge-stats " + d + "/mini.st " + d + "/other.st --out " + d + "/m.st", &log), 1);
  EXPECT_NE(log.find("different model"), std::string::npos) << log;
  EXPECT_NE(log.find("other.st"), std::string::npos) << log;
}
