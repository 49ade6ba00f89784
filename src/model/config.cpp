#include "model/config.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/error.h"

namespace lq::model {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) fail(p.string(), "cannot open");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail(p.string(), std::string("not valid JSON: ") + e.what());
  }
}
template <class T>
T need(const json& j, const char* key, const std::string& file) {
  if (!j.contains(key)) fail(file, std::string("missing key '") + key + "'");
  try {
    return j[key].get<T>();
  } catch (const json::exception&) {
    fail(file, std::string("key '") + key + "' has the wrong type");
  }
}
template <class T>
T want(const json& j, const char* key, T fallback) {
  return j.contains(key) && !j[key].is_null() ? j[key].get<T>() : fallback;
}
}  // namespace

ModelConfig load_config(const std::string& dir) {
  fs::path d(dir), file = d / "llm_config.json";
  if (!fs::exists(file)) file = d / "config.json";
  if (!fs::exists(file)) fail(dir, "no llm_config.json or config.json in the model directory");
  const json j = read_json(file);
  const std::string f = file.string();
  ModelConfig c;
  c.source = f;
  c.hidden_size = need<int>(j, "hidden_size", f);
  c.intermediate_size = need<int>(j, "intermediate_size", f);
  c.num_layers = need<int>(j, "num_hidden_layers", f);
  c.num_heads = need<int>(j, "num_attention_heads", f);
  c.num_kv_heads = want<int>(j, "num_key_value_heads", c.num_heads);
  c.vocab_size = need<int>(j, "vocab_size", f);
  c.max_position_embeddings = want<int>(j, "max_position_embeddings", 32768);
  c.rope_theta = want<double>(j, "rope_theta", 1e6);
  c.rms_norm_eps = want<double>(j, "rms_norm_eps", 1e-6);
  c.tie_word_embeddings = want<bool>(j, "tie_word_embeddings", false);
  if (c.hidden_size <= 0 || c.num_heads <= 0 || c.num_kv_heads <= 0 || c.num_layers <= 0 || c.intermediate_size <= 0 || c.vocab_size <= 0)
    fail(f, "dimensions must be positive");
  if (c.hidden_size % c.num_heads) fail(f, "hidden_size is not a multiple of num_attention_heads");
  if (c.num_heads % c.num_kv_heads) fail(f, "num_attention_heads is not a multiple of num_key_value_heads");
  c.head_dim = want<int>(j, "head_dim", c.hidden_size / c.num_heads);
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object() && j["rope_scaling"].contains("mrope_section")) {
    auto s = j["rope_scaling"]["mrope_section"];
    if (!s.is_array() || s.size() != 3) fail(f, "rope_scaling.mrope_section must have 3 entries");
    for (int i = 0; i < 3; ++i) c.mrope_section[i] = s[i].get<int>();
    if (c.mrope_section[0] + c.mrope_section[1] + c.mrope_section[2] != c.head_dim / 2)
      fail(f, "mrope_section does not sum to head_dim/2");
  }
  c.len_tokenizer = c.vocab_size;
  fs::path lf = d / "lance_config.json";
  if (fs::exists(lf)) {
    const json l = read_json(lf);
    c.latent_channels = want<int>(l, "latent_channels", c.latent_channels);
    c.max_latent_size = want<int>(l, "max_latent_size", c.max_latent_size);
    c.max_latent_frames = want<int>(l, "max_num_latent_frames", c.max_latent_frames);
    c.time_embed_freq_dim = want<int>(l, "time_embed_freq_dim", c.time_embed_freq_dim);
    c.len_tokenizer = want<int>(l, "len_tokenizer", c.len_tokenizer);
    c.latent_pos_embed_rows = want<int>(l, "latent_pos_embed_rows", c.max_latent_size * c.max_latent_size);
  }
  return c;
}

}  // namespace lq::model
