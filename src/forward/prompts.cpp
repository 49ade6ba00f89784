#include "forward/prompts.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/error.h"
#include "tokenizer/tokenizer.h"

namespace lq::fwd {

std::string chat_prompt(const std::string& user, const std::string& system) {
  return "<|im_start|>system\n" + system + "<|im_end|>\n<|im_start|>user\n" + user +
         "<|im_end|>\n<|im_start|>assistant\n";
}

std::string edit_instruction(const std::string& v) {
  return "Describe the key features of the input " + v +
         " (color, shape, size, texture, objects, background), then explain how the user\u2019s text instruction should "
         "alter or modify the " + v + ". Generate a new " + v +
         " that meets the user\u2019s requirements while maintaining consistency with the original input where "
         "appropriate.";
}

T2iSettings load_t2i_settings(const std::string& model_dir) {
  T2iSettings s;
  const auto path = std::filesystem::path(model_dir) / "lance_config.json";
  if (!std::filesystem::exists(path)) return s;
  std::ifstream in(path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(path.string(), std::string("not valid JSON: ") + e.what());
  }
  if (j.contains("t2i_system_instruction")) s.instruction = j["t2i_system_instruction"].get<std::string>();
  if (j.contains("t2v_system_instruction")) s.t2v_instruction = j["t2v_system_instruction"].get<std::string>();
  if (j.contains("t2i_latent_grid_thw")) {
    const auto& g = j["t2i_latent_grid_thw"];
    if (!g.is_array() || g.size() != 3) fail(path.string(), "t2i_latent_grid_thw must be [t, h, w]");
    s.grid = {g[0].get<int>(), g[1].get<int>(), g[2].get<int>()};
    s.grid_from_config = true;
  }
  try {
    s.sampler.steps = j.value("num_timesteps", s.sampler.steps);
    s.sampler.shift = j.value("timestep_shift", s.sampler.shift);
    s.sampler.cfg_scale = j.value("cfg_text_scale", s.sampler.cfg_scale);
    if (j.contains("cfg_interval")) {
      const auto iv = j["cfg_interval"].get<std::vector<double>>();
      if (iv.size() != 2) fail(path.string(), "cfg_interval must be [min, max]");
      s.sampler.cfg_min = iv[0];
      s.sampler.cfg_max = iv[1];
    }
    if (j.contains("toy_vae")) {
      const auto& t = j["toy_vae"];
      s.has_toy_vae = true;
      s.toy_patch = t.value("pixel_patch", s.toy_patch);
      s.toy_mean = t.value("latent_mean", s.toy_mean);
      s.toy_std = t.value("latent_std", s.toy_std);
    }
  } catch (const nlohmann::json::exception& e) {
    fail(path.string(), std::string("bad sampler / toy_vae settings: ") + e.what());
  }
  return s;
}

namespace {
int32_t special_id(const tok::Tokenizer& t, const char* token) {
  auto id = t.token_id(token);
  if (!id) fail("tokenizer", std::string("has no special token ") + token);
  return *id;
}
}  // namespace

T2iPrompt t2i_prompt(const tok::Tokenizer& tokenizer, const std::string& caption, const std::string& instruction,
                     const LatentGrid& grid) {
  const auto s1 = tokenizer.encode("<|im_start|>system\n" + instruction + "<|im_end|>\n<|im_start|>user\n");
  const auto s2 = tokenizer.encode(caption);
  const auto s3 = tokenizer.encode("<|im_end|>\n<|im_start|>assistant\n");
  return build_t2i_prompt(s1, s2, s3, special_id(tokenizer, "<|vision_start|>"), special_id(tokenizer, "<|vision_end|>"),
                          grid);
}

}  // namespace lq::fwd
