#include "calib/stats.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "io/error.h"
#include "test_paths.h"
#include "test_random.h"

using lq::calib::LinearStats;
using lq::calib::StatsFile;

namespace {

std::vector<float> random_rows(int64_t rows, int64_t w, unsigned seed) { return lq::test::gaussian(size_t(rows * w), 2.0f, seed); }

StatsFile stats_from(const std::vector<std::vector<float>>& chunks, int64_t w, float tau) {
  StatsFile f;
  f.model_fingerprint = "m";
  for (const auto& c : chunks) f.linears["lin"].add_rows(c.data(), int64_t(c.size()) / w, w, tau, true);
  return f;
}

double max_rel(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0, s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    m = std::max(m, std::fabs(a[i] - b[i]));
    s = std::max(s, std::fabs(b[i]));
  }
  return s > 0 ? m / s : m;
}

}  // namespace

TEST(ChannelStats, MatchesDirectComputation) {
  const int64_t w = 5;
  auto x = random_rows(7, w, 1);
  lq::calib::ChannelStats s;
  s.add_rows(x.data(), 7, w);
  ASSERT_EQ(s.count, 7);
  for (int64_t c = 0; c < w; ++c) {
    double sa = 0, sq = 0;
    float mx = 0;
    for (int64_t r = 0; r < 7; ++r) {
      float v = x[size_t(r * w + c)];
      sa += std::fabs(v);
      sq += double(v) * v;
      mx = std::max(mx, std::fabs(v));
    }
    EXPECT_DOUBLE_EQ(s.sum_abs[size_t(c)], sa);
    EXPECT_DOUBLE_EQ(s.sum_sq[size_t(c)], sq);
    EXPECT_EQ(s.max_abs[size_t(c)], mx);
    EXPECT_FLOAT_EQ(s.mean_abs()[size_t(c)], float(sa / 7));
  }
}

TEST(StatsFile, MergeIsOrderIndependentAndEqualsOneRun) {
  const int64_t w = 16;
  std::vector<std::vector<float>> chunks;
  for (unsigned i = 0; i < 6; ++i) chunks.push_back(random_rows(3 + i, w, 10 + i));
  StatsFile whole = stats_from(chunks, w, 0.37f);
  StatsFile a = stats_from({chunks[0], chunks[1]}, w, 0.37f);
  StatsFile b = stats_from({chunks[2], chunks[3]}, w, 0.37f);
  StatsFile c = stats_from({chunks[4], chunks[5]}, w, 0.37f);
  StatsFile abc = a, cba = c;
  abc.merge(b, "b");
  abc.merge(c, "c");
  cba.merge(b, "b");
  cba.merge(a, "a");
  for (const StatsFile* m : {&abc, &cba}) {
    const LinearStats& got = m->linears.at("lin");
    const LinearStats& want = whole.linears.at("lin");
    EXPECT_EQ(got.all.count, want.all.count);
    EXPECT_LT(max_rel(got.all.sum_abs, want.all.sum_abs), 1e-12);
    EXPECT_LT(max_rel(got.all.sum_sq, want.all.sum_sq), 1e-12);
    EXPECT_EQ(got.all.max_abs, want.all.max_abs);
    EXPECT_LT(max_rel(got.xtx, want.xtx), 1e-12);
    const int b = lq::calib::tau_bucket(0.37f);
    EXPECT_EQ(got.by_tau[size_t(b)].count, want.all.count);
  }
}

TEST(StatsFile, SaveLoadRoundTrip) {
  const int64_t w = 8;
  StatsFile f = stats_from({random_rows(4, w, 3)}, w, 0.9f);
  f.linears["und_lin"].add_rows(random_rows(2, w, 4).data(), 2, w, -1.0f, false);
  f.data_sources = {"text:abc:file.txt"};
  const std::string path = lq::test::scratch_dir("stats_roundtrip") + "/s.safetensors";
  f.save(path);
  StatsFile g = StatsFile::load(path);
  EXPECT_EQ(g.model_fingerprint, "m");
  EXPECT_EQ(g.data_sources, f.data_sources);
  ASSERT_EQ(g.linears.size(), 2u);
  for (const auto& [name, s] : f.linears) {
    const auto& t = g.linears.at(name);
    EXPECT_EQ(t.all.count, s.all.count);
    EXPECT_EQ(t.all.sum_abs, s.all.sum_abs);
    EXPECT_EQ(t.all.sum_sq, s.all.sum_sq);
    EXPECT_EQ(t.all.max_abs, s.all.max_abs);
    EXPECT_EQ(t.xtx, s.xtx);
    EXPECT_EQ(t.by_tau.size(), s.by_tau.size());
  }
  EXPECT_TRUE(g.linears.at("und_lin").by_tau.empty());
}

TEST(StatsFile, RefusesStatisticsOfAnotherModel) {
  StatsFile a, b;
  a.model_fingerprint = "one";
  b.model_fingerprint = "two";
  a.linears["x"].add_rows(random_rows(1, 4, 1).data(), 1, 4, -1, false);
  try {
    a.merge(b, "other.safetensors");
    FAIL() << "merge of different models accepted";
  } catch (const lq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("other.safetensors"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("different model"), std::string::npos);
  }
}
