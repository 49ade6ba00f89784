#include "vit/vit_config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "io/error.h"
#include "io/safetensors.h"

namespace lq::vit {

namespace fs = std::filesystem;

bool VitConfig::full_attention(int block) const {
  return std::find(fullatt_block_indexes.begin(), fullatt_block_indexes.end(), block) != fullatt_block_indexes.end();
}

nlohmann::json VitConfig::to_json() const {
  return {{"model_type", "qwen2_5_vl"},
          {"depth", depth},
          {"hidden_size", hidden_size},
          {"hidden_act", hidden_act},
          {"intermediate_size", intermediate_size},
          {"num_heads", num_heads},
          {"in_channels", in_channels},
          {"patch_size", patch_size},
          {"spatial_merge_size", spatial_merge_size},
          {"temporal_patch_size", temporal_patch_size},
          {"tokens_per_second", tokens_per_second},
          {"window_size", window_size},
          {"out_hidden_size", out_hidden_size},
          {"fullatt_block_indexes", fullatt_block_indexes}};
}

namespace {

void validate(const VitConfig& c, const std::string& where) {
  auto bad = [&](const std::string& what) { fail(where, "vision config: " + what); };
  if (c.depth < 1 || c.hidden_size < 1 || c.num_heads < 1 || c.intermediate_size < 1 || c.out_hidden_size < 1)
    bad("depth, hidden_size, num_heads, intermediate_size and out_hidden_size must be positive");
  if (c.hidden_size % c.num_heads) bad("hidden_size " + std::to_string(c.hidden_size) + " is not divisible by num_heads");
  if (c.head_dim() % 4) bad("head_dim " + std::to_string(c.head_dim()) + " must be a multiple of 4 (2-D rotary halves)");
  if (c.in_channels < 1 || c.patch_size < 1 || c.temporal_patch_size < 1 || c.spatial_merge_size < 1)
    bad("in_channels, patch_size, temporal_patch_size, spatial_merge_size must be positive");
  if (c.window_units() < 1) bad("window_size " + std::to_string(c.window_size) + " is smaller than one merged unit");
  if (c.hidden_act != "silu") bad("hidden_act '" + c.hidden_act + "' is not supported (Qwen2.5-VL uses silu)");
  for (int b : c.fullatt_block_indexes)
    if (b < 0 || b >= c.depth) bad("fullatt_block_indexes has " + std::to_string(b) + ", outside 0.." + std::to_string(c.depth - 1));
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) fail(p.string(), "cannot open");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(p.string(), std::string("not valid JSON: ") + e.what());
  }
}

}  // namespace

VitConfig parse_vit_config(const nlohmann::json& j0, const std::string& where) {
  const nlohmann::json& j = j0.contains("vision_config") && j0["vision_config"].is_object() ? j0["vision_config"] : j0;
  if (!j.is_object()) fail(where, "vision config is not a JSON object");
  VitConfig c;
  c.source = where;
  try {
    c.depth = j.value("depth", c.depth);
    c.hidden_size = j.value("hidden_size", j.value("embed_dim", c.hidden_size));
    c.num_heads = j.value("num_heads", c.num_heads);
    c.intermediate_size = j.value("intermediate_size", c.intermediate_size);
    c.out_hidden_size = j.value("out_hidden_size", c.out_hidden_size);
    c.in_channels = j.value("in_channels", j.value("in_chans", c.in_channels));
    c.patch_size = j.value("patch_size", j.value("spatial_patch_size", c.patch_size));
    c.temporal_patch_size = j.value("temporal_patch_size", c.temporal_patch_size);
    c.spatial_merge_size = j.value("spatial_merge_size", c.spatial_merge_size);
    c.window_size = j.value("window_size", c.window_size);
    c.tokens_per_second = j.value("tokens_per_second", c.tokens_per_second);
    c.hidden_act = j.value("hidden_act", c.hidden_act);
    if (j.contains("rope_parameters") && j["rope_parameters"].is_object())
      c.rope_theta = j["rope_parameters"].value("rope_theta", c.rope_theta);
    c.rope_theta = j.value("rope_theta", c.rope_theta);
    if (j.contains("fullatt_block_indexes")) c.fullatt_block_indexes = j["fullatt_block_indexes"].get<std::vector<int>>();
  } catch (const nlohmann::json::exception& e) {
    fail(where, std::string("bad vision config value: ") + e.what());
  }
  validate(c, where);
  return c;
}

std::vector<TensorShape> vit_tensors(const VitConfig& c) {
  const int64_t h = c.hidden_size, i = c.intermediate_size, m = int64_t(c.hidden_size) * c.merge_unit();
  std::vector<TensorShape> t;
  t.push_back({"patch_embed.proj.weight", {h, c.in_channels, c.temporal_patch_size, c.patch_size, c.patch_size}});
  for (int b = 0; b < c.depth; ++b) {
    const std::string p = "blocks." + std::to_string(b) + ".";
    t.push_back({p + "norm1.weight", {h}});
    t.push_back({p + "norm2.weight", {h}});
    t.push_back({p + "attn.qkv.weight", {3 * h, h}});
    t.push_back({p + "attn.qkv.bias", {3 * h}});
    t.push_back({p + "attn.proj.weight", {h, h}});
    t.push_back({p + "attn.proj.bias", {h}});
    t.push_back({p + "mlp.gate_proj.weight", {i, h}});
    t.push_back({p + "mlp.gate_proj.bias", {i}});
    t.push_back({p + "mlp.up_proj.weight", {i, h}});
    t.push_back({p + "mlp.up_proj.bias", {i}});
    t.push_back({p + "mlp.down_proj.weight", {h, i}});
    t.push_back({p + "mlp.down_proj.bias", {h}});
  }
  t.push_back({"merger.ln_q.weight", {h}});
  t.push_back({"merger.mlp.0.weight", {m, m}});
  t.push_back({"merger.mlp.0.bias", {m}});
  t.push_back({"merger.mlp.2.weight", {c.out_hidden_size, m}});
  t.push_back({"merger.mlp.2.bias", {c.out_hidden_size}});
  return t;
}

void check_vit_tensors(const VitConfig& c, const io::TensorStore& store, const std::string& prefix, const std::string& where) {
  std::vector<std::string> missing, misshaped, unexpected;
  std::set<std::string> expected;
  for (const auto& t : vit_tensors(c)) {
    const std::string name = prefix + t.name;
    expected.insert(name);
    if (!store.has(name)) missing.push_back(name + " " + shape_str(t.shape));
    else if (store.info(name).shape != t.shape)
      misshaped.push_back(name + " is " + shape_str(store.info(name).shape) + ", expected " + shape_str(t.shape));
  }
  for (const auto& name : store.names())
    if (name.rfind(prefix, 0) == 0 && !expected.count(name)) unexpected.push_back(name + " " + shape_str(store.info(name).shape));
  if (missing.empty() && misshaped.empty() && unexpected.empty()) return;
  std::ostringstream m;
  m << "ViT (" << c.depth << " blocks, width " << c.hidden_size << ", config from " << c.source << "): " << missing.size()
    << " missing, " << unexpected.size() << " unexpected, " << misshaped.size() << " mis-shaped tensor(s)";
  auto list = [&m](const char* what, const std::vector<std::string>& v) {
    for (size_t k = 0; k < v.size() && k < 12; ++k) m << "\n  " << what << ": " << v[k];
    if (v.size() > 12) m << "\n  ... " << v.size() - 12 << " more " << what;
  };
  list("missing", missing);
  list("unexpected", unexpected);
  list("mis-shaped", misshaped);
  fail(where, m.str());
}

bool model_has_vit(const std::string& model_dir) {
  const fs::path d(model_dir);
  if (!fs::exists(d / "model.safetensors") && !fs::exists(d / "model.safetensors.index.json")) return false;
  io::TensorStore store(model_dir);
  for (const auto& n : store.names())
    if (n.rfind("vit_model.", 0) == 0) return true;
  return false;
}

VitLocation locate_vit(const std::string& path) {
  const fs::path d(path);
  VitLocation loc;
  if (fs::is_regular_file(d / "vit.safetensors")) {
    if (!fs::is_regular_file(d / "config.json")) fail(path, "has vit.safetensors but no config.json (the vision config)");
    loc.weights = (d / "vit.safetensors").string();
    loc.prefix = "";
    loc.config = parse_vit_config(read_json(d / "config.json"), (d / "config.json").string());
    return loc;
  }
  if (!model_has_vit(path))
    fail(path, "no ViT here: expected vit.safetensors + config.json, or a model whose checkpoint holds vit_model.* tensors");
  loc.weights = path;
  loc.prefix = "vit_model.";
  const fs::path llm = d / "llm_config.json";
  if (fs::exists(llm)) {
    const nlohmann::json j = read_json(llm);
    if (j.contains("vision_config") && j["vision_config"].is_object() && j["vision_config"].contains("depth")) {
      loc.config = parse_vit_config(j["vision_config"], llm.string() + " vision_config");
      return loc;
    }
  }
  // No stored vision config: Qwen2.5-VL's values with the dims the tensors show.
  io::TensorStore store(path);
  VitConfig c;
  c.source = "Qwen2.5-VL defaults + tensor shapes of " + path;
  int depth = 0;
  while (store.has("vit_model.blocks." + std::to_string(depth) + ".norm1.weight")) ++depth;
  const std::string pe = "vit_model.patch_embed.proj.weight";
  if (!store.has(pe) || store.info(pe).shape.size() != 5) fail(path, "vit_model.* tensors without a 5-D " + pe);
  const auto& s = store.info(pe).shape;
  c.depth = depth;
  c.hidden_size = int(s[0]);
  c.in_channels = int(s[1]);
  c.temporal_patch_size = int(s[2]);
  c.patch_size = int(s[3]);
  if (store.has("vit_model.blocks.0.mlp.gate_proj.weight")) c.intermediate_size = int(store.info("vit_model.blocks.0.mlp.gate_proj.weight").shape[0]);
  if (store.has("vit_model.merger.mlp.2.weight")) c.out_hidden_size = int(store.info("vit_model.merger.mlp.2.weight").shape[0]);
  if (depth != 32)
    fail(path, "the ViT has " + std::to_string(depth) + " blocks and llm_config.json has no vision_config: its heads and "
               "full-attention blocks are unknown (Qwen2.5-VL's defaults are for 32 blocks)");
  validate(c, path);
  loc.config = c;
  return loc;
}

}  // namespace lq::vit
