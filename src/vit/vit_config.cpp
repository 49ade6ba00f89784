#include "vit/vit_config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "formats/checkpoint.h"
#include "forward/quant_linear.h"
#include "io/error.h"
#include "io/json_fields.h"
#include "io/model_files.h"
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

// A JSON object from a file of the directory `dir`, read under the symlink rule (io/model_files.h).
nlohmann::json read_json(const fs::path& dir, const std::string& name) {
  const std::string p = io::model_file(dir.string(), name);
  if (p.empty()) fail((dir / name).string(), "does not exist");
  return io::read_json_object(p);
}

}  // namespace

VitConfig parse_vit_config(const nlohmann::json& j0, const std::string& where) {
  if (!j0.is_object()) fail(where, "vision config is not a JSON object");
  const bool nested = j0.contains("vision_config") && j0["vision_config"].is_object();
  const nlohmann::json& j = nested ? j0["vision_config"] : j0;
  // Strict reads (io/json_fields.h): typed, ranged, never truncated; the bounds keep every derived size
  // (tensor shapes, patch dimension, windows) far inside int64 and the tensor list small.
  const io::JsonFields f(j, nested ? where + ": vision_config" : where);
  VitConfig c;
  c.source = where;
  auto alias = [&](const char* key, const char* other, int64_t lo, int64_t hi, int fallback) {
    return int(f.has(key) ? f.integer(key, lo, hi) : f.integer(other, lo, hi, fallback));
  };
  c.depth = int(f.integer("depth", 1, 1024, c.depth));
  c.hidden_size = alias("hidden_size", "embed_dim", 1, 1 << 16, c.hidden_size);
  c.num_heads = int(f.integer("num_heads", 1, 1024, c.num_heads));
  c.intermediate_size = int(f.integer("intermediate_size", 1, 1 << 18, c.intermediate_size));
  c.out_hidden_size = int(f.integer("out_hidden_size", 1, 1 << 16, c.out_hidden_size));
  c.in_channels = alias("in_channels", "in_chans", 1, 16, c.in_channels);
  c.patch_size = alias("patch_size", "spatial_patch_size", 1, 1024, c.patch_size);
  c.temporal_patch_size = int(f.integer("temporal_patch_size", 1, 64, c.temporal_patch_size));
  c.spatial_merge_size = int(f.integer("spatial_merge_size", 1, 64, c.spatial_merge_size));
  c.window_size = int(f.integer("window_size", 1, 1 << 16, c.window_size));
  c.tokens_per_second = int(f.integer("tokens_per_second", 1, 1 << 16, c.tokens_per_second));
  c.hidden_act = f.string("hidden_act", c.hidden_act);
  if (const nlohmann::json* rp = f.object("rope_parameters"))
    c.rope_theta = io::JsonFields(*rp, f.where() + ": rope_parameters").real("rope_theta", c.rope_theta, true);
  c.rope_theta = f.real("rope_theta", c.rope_theta, true);
  if (const nlohmann::json* a = f.array("fullatt_block_indexes")) {
    c.fullatt_block_indexes.clear();
    for (const auto& v : *a) c.fullatt_block_indexes.push_back(int(f.integer_value(v, "fullatt_block_indexes", 0, c.depth - 1)));
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

void check_vit_tensors(const VitConfig& c, const io::TensorStore& store, const std::string& prefix, const std::string& where,
                       const formats::CheckpointReader* quantized) {
  std::vector<std::string> missing, misshaped, unexpected;
  std::set<std::string> expected;
  for (const auto& t : vit_tensors(c)) {
    const std::string name = prefix + t.name;
    expected.insert(name);
    if (quantized && t.shape.size() >= 2 && name.ends_with(".weight")) {
      const std::string base = name.substr(0, name.size() - 7);
      if (quantized->is_quantized(base)) {
        int64_t in = 1;
        for (size_t k = 1; k < t.shape.size(); ++k) in *= t.shape[k];
        for (const auto& d : quantized->quantized_linears())
          if (d.base == base && (d.out != t.shape[0] || d.in != in))
            misshaped.push_back(base + " (quantized) is [" + std::to_string(d.out) + "," + std::to_string(d.in) + "], expected [" +
                                std::to_string(t.shape[0]) + "," + std::to_string(in) + "]");
        continue;
      }
    }
    if (!store.has(name)) missing.push_back(name + " " + shape_str(t.shape));
    else if (store.info(name).shape != t.shape)
      misshaped.push_back(name + " is " + shape_str(store.info(name).shape) + ", expected " + shape_str(t.shape));
  }
  if (quantized) {
    std::set<std::string> owned;  // the stored parts of quantized ViT linears (checked by the reader)
    for (const auto& d : quantized->quantized_linears()) {
      if (d.base.rfind(prefix, 0) != 0) continue;
      if (!expected.count(d.base + ".weight")) unexpected.push_back(d.base + " (a quantized linear)");
      for (const auto& t : store.names())
        if (t.rfind(d.base + ".", 0) == 0 && t != d.base + ".bias") owned.insert(t);
    }
    for (const auto& name : store.names())
      if (name.rfind(prefix, 0) == 0 && !expected.count(name) && !owned.count(name))
        unexpected.push_back(name + " " + shape_str(store.info(name).shape));
  } else {
    for (const auto& name : store.names())
      if (name.rfind(prefix, 0) == 0 && !expected.count(name)) unexpected.push_back(name + " " + shape_str(store.info(name).shape));
  }
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

namespace {

// The reader of a quantized checkpoint directory, or null for anything else (a dense model, a ViT
// directory). A damaged quantized checkpoint throws, naming what is wrong.
std::unique_ptr<formats::CheckpointReader> quantized_reader(const std::string& dir) {
  if (!fs::is_directory(dir) || !fwd::is_quantized_checkpoint(dir)) return nullptr;
  return std::make_unique<formats::CheckpointReader>(dir);
}

bool has_vit_prefix(const std::vector<std::string>& names) {
  for (const auto& n : names)
    if (n.rfind("vit_model.", 0) == 0) return true;
  return false;
}

}  // namespace

bool model_has_vit(const std::string& model_dir) {
  const fs::path d(model_dir);
  if (const auto r = quantized_reader(model_dir)) {
    std::vector<std::string> names;
    for (const auto& t : r->file().tensors()) names.push_back(t.name);
    return has_vit_prefix(names);
  }
  if (!fs::exists(d / "model.safetensors") && !fs::exists(d / "model.safetensors.index.json")) return false;
  io::TensorStore store(model_dir);
  return has_vit_prefix(store.names());
}

bool model_has_quantized_vit(const std::string& model_dir) {
  const auto r = quantized_reader(model_dir);
  if (!r) return false;
  for (const auto& d : r->quantized_linears())
    if (d.base.rfind("vit_model.", 0) == 0) return true;
  return false;
}

VitLocation locate_vit(const std::string& path) {
  const fs::path d(path);
  VitLocation loc;
  if (const std::string w = io::model_file(path, "vit.safetensors"); !w.empty()) {
    if (io::model_file(path, "config.json").empty()) fail(path, "has vit.safetensors but no config.json (the vision config)");
    loc.weights = w;
    loc.prefix = "";
    loc.config = parse_vit_config(read_json(d, "config.json"), (d / "config.json").string());
    return loc;
  }
  if (!model_has_vit(path))
    fail(path, "no ViT here: expected vit.safetensors + config.json, or a model whose checkpoint holds vit_model.* tensors");
  loc.weights = path;
  loc.prefix = "vit_model.";
  const std::unique_ptr<formats::CheckpointReader> reader = quantized_reader(path);
  if (reader) {
    loc.weights = reader->file().path();
    loc.checkpoint_dir = path;
  }
  const fs::path llm = d / "llm_config.json";
  if (!io::model_file(path, "llm_config.json").empty()) {
    const nlohmann::json j = read_json(d, "llm_config.json");
    if (j.contains("vision_config") && j["vision_config"].is_object() && j["vision_config"].contains("depth")) {
      loc.config = parse_vit_config(j["vision_config"], llm.string() + " vision_config");
      return loc;
    }
  }
  // No stored vision config: Qwen2.5-VL's values with the dims the tensors show.
  io::TensorStore store(loc.weights);
  // The output width of a linear, from its plain weight or its quantized declaration.
  auto rows_of = [&](const std::string& base) -> int64_t {
    if (store.has(base + ".weight") && !store.info(base + ".weight").shape.empty()) return store.info(base + ".weight").shape[0];
    if (reader)
      for (const auto& d : reader->quantized_linears())
        if (d.base == base) return d.out;
    return -1;
  };
  VitConfig c;
  c.source = "Qwen2.5-VL defaults + tensor shapes of " + path;
  int depth = 0;
  while (store.has("vit_model.blocks." + std::to_string(depth) + ".norm1.weight")) ++depth;
  const std::string pe = "vit_model.patch_embed.proj.weight";
  if (!store.has(pe) || store.info(pe).shape.size() != 5) fail(path, "vit_model.* tensors without a 5-D " + pe);
  const auto& s = store.info(pe).shape;
  for (const int64_t v : s)
    if (v < 1 || v > (1 << 16)) fail(path, pe + " has a dimension of " + std::to_string(v) + " (expected 1..65536)");
  for (const char* t : {"vit_model.blocks.0.mlp.gate_proj", "vit_model.merger.mlp.2"})
    if (const int64_t r = rows_of(t); r != -1 && (r < 1 || r > (1 << 18))) fail(path, std::string(t) + " has an implausible shape");
  c.depth = depth;
  c.hidden_size = int(s[0]);
  c.in_channels = int(s[1]);
  c.temporal_patch_size = int(s[2]);
  c.patch_size = int(s[3]);
  if (const int64_t r = rows_of("vit_model.blocks.0.mlp.gate_proj"); r > 0) c.intermediate_size = int(r);
  if (const int64_t r = rows_of("vit_model.merger.mlp.2"); r > 0) c.out_hidden_size = int(r);
  if (depth != 32)
    fail(path, "the ViT has " + std::to_string(depth) + " blocks and llm_config.json has no vision_config: its heads and "
               "full-attention blocks are unknown (Qwen2.5-VL's defaults are for 32 blocks)");
  validate(c, path);
  loc.config = c;
  return loc;
}

}  // namespace lq::vit
