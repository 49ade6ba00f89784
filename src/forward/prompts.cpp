#include "forward/prompts.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "io/error.h"
#include "io/json_fields.h"
#include "io/model_files.h"
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
  const std::string path = io::model_file(model_dir, "lance_config.json");
  if (path.empty()) return s;
  const nlohmann::json j = io::read_json_object(path);
  const io::JsonFields f(j, path);
  s.instruction = f.string("t2i_system_instruction", s.instruction);
  s.t2v_instruction = f.string("t2v_system_instruction", s.t2v_instruction);
  if (const nlohmann::json* g = f.array("t2i_latent_grid_thw")) {
    if (g->size() != 3) fail(path, "t2i_latent_grid_thw must be [t, h, w]");
    s.grid = {int(f.integer_value((*g)[0], "t2i_latent_grid_thw[0]", 1, 4096)),
              int(f.integer_value((*g)[1], "t2i_latent_grid_thw[1]", 1, 4096)),
              int(f.integer_value((*g)[2], "t2i_latent_grid_thw[2]", 1, 4096))};
    s.grid_from_config = true;
  }
  s.sampler.steps = int(f.integer("num_timesteps", 1, 100000, s.sampler.steps));
  s.sampler.shift = f.real("timestep_shift", s.sampler.shift, true);
  s.sampler.cfg_scale = f.real("cfg_text_scale", s.sampler.cfg_scale);
  if (const nlohmann::json* iv = f.array("cfg_interval")) {
    if (iv->size() != 2 || !(*iv)[0].is_number() || !(*iv)[1].is_number()) fail(path, "cfg_interval must be [min, max]");
    s.sampler.cfg_min = (*iv)[0].get<double>();
    s.sampler.cfg_max = (*iv)[1].get<double>();
    if (!std::isfinite(s.sampler.cfg_min) || !std::isfinite(s.sampler.cfg_max)) fail(path, "cfg_interval must be finite");
  }
  if (const nlohmann::json* t = f.object("toy_vae")) {
    const io::JsonFields tf(*t, path + ": toy_vae");
    s.has_toy_vae = true;
    s.toy_patch = int(tf.integer("pixel_patch", 1, 256, s.toy_patch));
    s.toy_mean = tf.real("latent_mean", s.toy_mean);
    s.toy_std = tf.real("latent_std", s.toy_std, true);
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
