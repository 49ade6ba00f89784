// Prompt templates shared by `run`, calibration and evaluation: the Qwen chat template for
// understanding (x2t without an image) and Lance's text-to-image sequence built from a caption.
#pragma once
#include <string>

#include "forward/t2i.h"

namespace lq::tok {
class Tokenizer;
}

namespace lq::fwd {

inline constexpr const char* kDefaultSystemPrompt = "You are a helpful assistant.";
// Lance's t2i system instruction (used when lance_config.json does not give one).
inline constexpr const char* kDefaultT2iInstruction =
    "Describe the image by detailing the color, quantity, text, shape, size, texture, spatial relationships of the "
    "objects and background:";

// Lance's t2v instruction (data/common.py generate_system_prompt("t2v", "video")).
inline constexpr const char* kDefaultT2vInstruction =
    "Describe the video by detailing the color, quantity, visible text, shape, size, texture, spatial relationships and "
    "motion/camera movements of the objects and background:";
// Lance's editing instruction for a source of type `vision_type` ("image" or "video"):
// generate_system_prompt("image_edit" / "video_edit", vision_type).
std::string edit_instruction(const std::string& vision_type);

// "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
std::string chat_prompt(const std::string& user, const std::string& system = kDefaultSystemPrompt);

// t2i settings of a model directory (lance_config.json: t2i_system_instruction, t2i_latent_grid_thw);
// Lance_3B defaults otherwise (a 768x768 image: latent grid 1 x 48 x 48).
struct T2iSettings {
  std::string instruction = kDefaultT2iInstruction;
  std::string t2v_instruction = kDefaultT2vInstruction;  // lance_config.json t2v_system_instruction
  LatentGrid grid{1, 48, 48};
  bool grid_from_config = false;  // true when lance_config.json gave t2i_latent_grid_thw
  SamplerOptions sampler;         // num_timesteps, timestep_shift, cfg_text_scale, cfg_interval
  // lance-mini's toy VAE (lance_config.json "toy_vae"): token (r, c) holds a patch x patch RGB block,
  // pixel = clamp(latent * std + mean, 0, 1).
  bool has_toy_vae = false;
  int toy_patch = 4;
  double toy_mean = 0.5, toy_std = 0.36;
};
T2iSettings load_t2i_settings(const std::string& model_dir);

// Both sampler branches for `caption` (splits s1 s2 s3 tokenized separately, as Lance does).
T2iPrompt t2i_prompt(const tok::Tokenizer& tokenizer, const std::string& caption, const std::string& instruction,
                     const LatentGrid& grid);

}  // namespace lq::fwd
