#include "model/config.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/error.h"
#include "io/json_fields.h"
#include "io/model_files.h"

namespace lq::model {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Upper bounds far above any real checkpoint (Lance_3B: hidden 2048, 36 layers, vocab 151,936) that
// keep every derived size (per-layer specs, tables, products) well inside 64-bit arithmetic. The
// layer count is checked against the tensors as well (model/spec.cpp) before anything is sized by it.
constexpr int64_t kMaxDim = 1 << 20;
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxHeads = 1 << 14;
constexpr int64_t kMaxVocab = 1 << 24;
constexpr int64_t kMaxPositions = 1 << 24;
constexpr int64_t kMaxLatent = 4096;

}  // namespace

ModelConfig load_config(const std::string& dir) {
  std::string f = io::model_file(dir, "llm_config.json");
  if (f.empty()) f = io::model_file(dir, "config.json");
  if (f.empty()) {
    std::error_code ec;
    if (!fs::exists(dir, ec)) fail(dir, "model directory does not exist");
    if (!fs::is_directory(dir, ec)) fail(dir, "is not a directory (expected a model directory)");
    fail(dir, "no llm_config.json or config.json in the model directory");
  }
  const json j = io::read_json_object(f);
  const io::JsonFields r(j, f);
  ModelConfig c;
  c.source = f;
  c.hidden_size = int(r.integer("hidden_size", 1, kMaxDim));
  c.intermediate_size = int(r.integer("intermediate_size", 1, kMaxDim));
  c.num_layers = int(r.integer("num_hidden_layers", 1, kMaxLayers));
  c.num_heads = int(r.integer("num_attention_heads", 1, kMaxHeads));
  c.num_kv_heads = int(r.integer("num_key_value_heads", 1, kMaxHeads, c.num_heads));
  c.vocab_size = int(r.integer("vocab_size", 1, kMaxVocab));
  c.max_position_embeddings = int(r.integer("max_position_embeddings", 1, kMaxPositions, 32768));
  c.rope_theta = r.real("rope_theta", 1e6, true);
  c.rms_norm_eps = r.real("rms_norm_eps", 1e-6, true);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  if (c.hidden_size % c.num_heads) fail(f, "hidden_size is not a multiple of num_attention_heads");
  if (c.num_heads % c.num_kv_heads) fail(f, "num_attention_heads is not a multiple of num_key_value_heads");
  c.head_dim = int(r.integer("head_dim", 2, 1 << 16, c.hidden_size / c.num_heads));
  if (c.head_dim % 2) fail(f, "key 'head_dim' must be even (RoPE rotates pairs), got " + std::to_string(c.head_dim));
  if (int64_t(c.num_heads) * c.head_dim > kMaxDim) fail(f, "num_attention_heads x head_dim exceeds " + std::to_string(kMaxDim));
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object() && j["rope_scaling"].contains("mrope_section")) {
    const json& s = j["rope_scaling"]["mrope_section"];
    if (!s.is_array() || s.size() != 3) fail(f, "rope_scaling.mrope_section must have 3 entries");
    for (int i = 0; i < 3; ++i)
      c.mrope_section[i] = int(r.integer_value(s[size_t(i)], "rope_scaling.mrope_section[" + std::to_string(i) + "]", 0, 1 << 16));
    if (c.mrope_section[0] + c.mrope_section[1] + c.mrope_section[2] != c.head_dim / 2)
      fail(f, "mrope_section does not sum to head_dim/2");
  }
  c.len_tokenizer = c.vocab_size;
  if (const std::string lf = io::model_file(dir, "lance_config.json"); !lf.empty()) {
    const json l = io::read_json_object(lf);
    const io::JsonFields lr(l, lf);
    c.latent_channels = int(lr.integer("latent_channels", 1, 1 << 16, c.latent_channels));
    c.max_latent_size = int(lr.integer("max_latent_size", 1, kMaxLatent, c.max_latent_size));
    c.max_latent_frames = int(lr.integer("max_num_latent_frames", 1, kMaxLatent, c.max_latent_frames));
    c.time_embed_freq_dim = int(lr.integer("time_embed_freq_dim", 2, 1 << 16, c.time_embed_freq_dim));
    c.len_tokenizer = int(lr.integer("len_tokenizer", 1, c.vocab_size, c.len_tokenizer));
    c.latent_pos_embed_rows =
        int(lr.integer("latent_pos_embed_rows", 1, kMaxLatent * kMaxLatent, int64_t(c.max_latent_size) * c.max_latent_size));
  }
  return c;
}

}  // namespace lq::model
