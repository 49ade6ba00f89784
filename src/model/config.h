// The LLM configuration of a checkpoint directory (`llm_config.json`, else `config.json`), plus the
// Lance-level settings (`lance_config.json`) when present. Dims are always read, never assumed.
#pragma once
#include <array>
#include <cstdint>
#include <string>

namespace lq::model {

struct ModelConfig {
  std::string source;  // the file the values came from
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int vocab_size = 0;
  int max_position_embeddings = 0;
  double rope_theta = 1e6;
  double rms_norm_eps = 1e-6;
  std::array<int, 3> mrope_section{0, 0, 0};  // t, h, w halves of head_dim/2; zeros = plain RoPE
  bool tie_word_embeddings = false;           // Lance forces untied at inference
  // Lance-level (lance_config.json, defaults are Lance_3B's)
  int latent_channels = 48;
  int max_latent_size = 64;
  int max_latent_frames = 31;
  int time_embed_freq_dim = 256;
  int latent_pos_embed_rows = 64 * 64;  // rows of the stored latent_pos_embed table (max_latent_size^2)
  int len_tokenizer = 0;  // logits at ids >= this are masked; 0 = vocab_size
};

// Reads DIR/llm_config.json (or DIR/config.json) and DIR/lance_config.json if present.
// Throws lq::Error naming the file and key on missing or inconsistent values.
ModelConfig load_config(const std::string& dir);

}  // namespace lq::model
