// Non-finite values are an error, never an output ("!!!!" with exit 0 before): the forward names the
// first layer where they appear and the non-finite weight when there is one; configs with
// rms_norm_eps / rope_theta <= 0 are refused; text inputs are checked for UTF-8 before any work.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "forward/forward.h"
#include "forward/prompts.h"
#include "io/error.h"
#include "io/safetensors.h"
#include "test_paths.h"

namespace lq::fwd {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// A copy of lance-mini whose tensor `bad` holds `value` at element 5 (and whose llm_config is edited).
std::string mini_with(const std::string& name, const std::string& bad, float value, const std::function<void(json&)>& cfg = {}) {
  const std::string d = test::scratch_dir(name) + "/M", m = test::lance_mini_dir();
  fs::create_directories(d);
  for (const auto& e : fs::directory_iterator(m))
    if (e.is_regular_file() && e.path().filename() != "model.safetensors") fs::copy_file(e.path(), d + "/" + e.path().filename().string());
  const io::SafetensorsFile in(m + "/model.safetensors");
  io::SafetensorsWriter w(d + "/model.safetensors");
  for (const auto& t : in.tensors()) w.declare(t.name, t.dtype, t.shape);
  for (const auto& t : in.tensors()) {
    std::vector<float> v = in.read_f32(t.name);
    if (t.name == bad) v[5] = value;
    w.write(v.data(), v.size() * 4);
  }
  w.finish();
  if (cfg) {
    json c = json::parse(std::ifstream(d + "/llm_config.json"));
    cfg(c);
    std::ofstream(d + "/llm_config.json") << c.dump();
  }
  return d;
}

std::string run(const std::string& args, int* rc) {
  std::string out;
  *rc = test::run_command(test::exe() + " run " + args, &out);
  return out;
}

TEST(NonFinite, NanWeightIsNamedWithItsLayer) {
  LQ_REQUIRE_SHARED();
  const std::string bad = "language_model.model.layers.2.mlp.down_proj.weight";
  const std::string d = mini_with("nonfinite_weight", bad, std::nanf(""));
  int rc = 0;
  const std::string out = run(d + " --task text --raw --prompt 'Once upon a time' --max-new-tokens 4", &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("first appear in the output of decoder layer 2 (und row"), std::string::npos) << out;
  EXPECT_NE(out.find("the weight " + bad + " holds NaN / Inf"), std::string::npos) << out;
  EXPECT_EQ(out.find("!!!!"), std::string::npos) << out;
}

TEST(NonFinite, InfInTheLmHeadIsNamed) {
  LQ_REQUIRE_SHARED();
  const std::string d = mini_with("nonfinite_head", "language_model.lm_head.weight", INFINITY);
  int rc = 0;
  const std::string out = run(d + " --task text --raw --prompt 'Once upon a time' --max-new-tokens 2", &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("in the logits (lm_head output); the weight language_model.lm_head.weight holds NaN / Inf"), std::string::npos)
      << out;
}

TEST(NonFinite, NonPositiveEpsAndThetaAreRefused) {
  LQ_REQUIRE_SHARED();
  const std::string d = mini_with("nonfinite_eps", "", 0, [](json& c) { c["rms_norm_eps"] = 0.0; });
  int rc = 0;
  std::string out = run(d + " --task text --raw --prompt hi --max-new-tokens 2", &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("key 'rms_norm_eps' must be a finite positive number"), std::string::npos) << out;
  const std::string t = mini_with("nonfinite_theta", "", 0, [](json& c) { c["rope_theta"] = -1.0; });
  out = run(t + " --task text --raw --prompt hi --max-new-tokens 2", &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("key 'rope_theta' must be a finite positive number"), std::string::npos) << out;
}

TEST(TextInputs, InvalidUtf8PromptIsRefusedBeforeTheSampler) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("run_utf8");
  for (const char* task : {"t2i", "text"}) {
    const auto t0 = std::chrono::steady_clock::now();
    int rc = 0;
    const std::string out = run(m + " --task " + task + " --prompt \"$(printf 'a red \\377 circle')\" --seed 1 --out " + d + "/x.safetensors", &rc);
    EXPECT_EQ(rc, 1) << task << ": " << out;
    EXPECT_NE(out.find("[--prompt:1] invalid UTF-8 at byte 6"), std::string::npos) << task << ": " << out;
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0) << "the sampler ran first";
    EXPECT_FALSE(fs::exists(d + "/x.safetensors"));
  }
}

TEST(T2iSettings, ValuesAreTyped) {
  const std::string d = test::scratch_dir("config_t2i");
  std::ofstream(d + "/lance_config.json") << R"({"num_timesteps": "30"})";
  try {
    fwd::load_t2i_settings(d);
    FAIL() << "accepted a string step count";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("key 'num_timesteps' must be an integer"), std::string::npos) << e.what();
  }
  std::ofstream(d + "/lance_config.json") << R"({"t2i_latent_grid_thw": [1, 0, 8]})";
  EXPECT_THROW(fwd::load_t2i_settings(d), Error);
}
}  // namespace
}  // namespace lq::fwd
