// Calibration capture against the fixture's golden statistics: the fixture's 8 und windows and 8 t2i
// training-layout sequences run once through the engine with the StatsObserver; mean |x| and mean x^2
// per channel of all 56 target linears must match within 1e-4 relative.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "calib/calibrate.h"
#include "io/safetensors.h"
#include "test_paths.h"

namespace {

std::vector<int32_t> read_i32(const lq::io::SafetensorsFile& f, const std::string& name) {
  auto b = f.bytes(f.info(name));
  std::vector<int32_t> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}

// The golden calibration sequence j of kind "und" or "gen", as an engine chunk.
lq::fwd::Chunk golden_chunk(const lq::fwd::Engine& e, const lq::io::SafetensorsFile& g, const std::string& kind, int j) {
  const std::string p = "calib." + kind + "." + std::to_string(j) + ".";
  const auto ids = read_i32(g, p + "input_ids");
  const int64_t n = int64_t(ids.size());
  if (kind == "und")
    return lq::fwd::text_chunk(e, ids, lq::fwd::text_positions(n), {lq::fwd::Split{n, lq::fwd::SplitMode::Causal}});
  const auto pos = read_i32(g, p + "position_ids");  // [3, L]
  std::vector<lq::fwd::Position3> positions(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) positions[size_t(i)] = {pos[size_t(i)], pos[size_t(n + i)], pos[size_t(2 * n + i)]};
  std::vector<lq::fwd::Split> splits;
  const auto lens = read_i32(g, p + "split_lens"), modes = read_i32(g, p + "split_modes");
  for (size_t s = 0; s < lens.size(); ++s) splits.push_back({lens[s], lq::fwd::SplitMode(modes[s])});
  lq::fwd::Chunk c = lq::fwd::text_chunk(e, ids, positions, splits);
  const auto span = read_i32(g, p + "latent_span");
  const float tau = g.read_f32(p + "tau")[0];
  const auto x = g.read_f32(p + "x_tau");
  const auto lat = e.latent_embeddings(x.data(), {1, 8, 8}, tau);
  const int64_t hidden = e.config().hidden_size;
  std::copy(lat.begin(), lat.end(), c.embeddings.begin() + span[0] * hidden);
  for (int64_t r = span[0]; r < span[1]; ++r) c.paths[size_t(r)] = lq::fwd::Path::Gen;
  return c;
}

double rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  double m = 0, s = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    m = std::max(m, std::fabs(double(got[i]) - want[i]));
    s = std::max(s, std::fabs(double(want[i])));
  }
  return m / s;
}

}  // namespace

TEST(CalibGolden, StatisticsOfAll56LinearsMatchTheFixture) {
  LQ_REQUIRE_SHARED();
  const std::string dir = lq::test::lance_mini_dir();
  lq::fwd::Engine e = lq::fwd::Engine::load(dir);
  lq::io::SafetensorsFile g(dir + "/golden/calib_golden.safetensors");
  lq::calib::StatsFile stats;
  lq::calib::StatsObserver obs(stats, false);
  e.set_observer(&obs);
  for (const char* kind : {"und", "gen"})
    for (int j = 0; j < 8; ++j) e.forward(golden_chunk(e, g, kind, j), nullptr, lq::fwd::CacheWrite::No);
  e.set_observer(nullptr);

  ASSERT_EQ(stats.linears.size(), 56u);
  double worst = 0;
  for (const auto& [name, s] : stats.linears) {
    SCOPED_TRACE(name);
    EXPECT_EQ(s.all.count, read_i32(g, name + ".count").at(0));
    const double e_abs = rel_err(s.all.mean_abs(), g.read_f32(name + ".mean_abs"));
    const double e_sq = rel_err(s.all.mean_sq(), g.read_f32(name + ".mean_sq"));
    const double e_max = rel_err(s.all.max_abs, g.read_f32(name + ".abs_max"));
    EXPECT_LT(e_abs, 1e-4);
    EXPECT_LT(e_sq, 1e-4);
    EXPECT_LT(e_max, 1e-4);
    worst = std::max({worst, e_abs, e_sq, e_max});
  }
  std::printf("worst relative error over 56 linears (mean|x|, mean x^2, max|x|): %.3g\n", worst);
}
