// `lance-quant inspect DIR`: recognise and strictly validate a checkpoint (model/spec.h), then describe
// it: architecture, dims, tensors and dtypes, targets per path, fusion pairs, kept tensors, and the size
// it would have in each storage scheme.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "cli/commands.h"
#include "formats/checkpoint.h"
#include "io/error.h"
#include "io/json_fields.h"
#include "io/output.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/spec.h"
#include "vit/vit_config.h"

namespace lq::cli {

namespace {

using json = nlohmann::ordered_json;
namespace fs = std::filesystem;

// Storage schemes for the size estimate. Kept tensors (everything but the target weights) and target
// biases are counted as bf16 (2 bytes per element) in every quantized scheme.
struct Scheme {
  const char* name;
  // Bytes of one target weight [out, in]; `in` divides the group sizes for all presets and Lance.
  uint64_t (*target_bytes)(uint64_t out, uint64_t in);
};
// INT4 asymmetric, group g along the input axis, as lance-quant-v1 stores it: 4 bits per weight (two
// codes per byte) + one bf16 scale (2 bytes) + one uint8 zero point (1 byte) per group of g weights.
template <uint64_t G>
uint64_t int4_bytes(uint64_t out, uint64_t in) {
  const uint64_t groups = out * ((in + G - 1) / G);
  return out * in / 2 + groups * (2 + 1);
}
// NVFP4: 4-bit E2M1 codes + one E4M3 byte per block of 16 weights + one fp32 tensor scale.
uint64_t nvfp4_bytes(uint64_t out, uint64_t in) { return out * in / 2 + out * ((in + 15) / 16) + 4; }
uint64_t bf16_bytes(uint64_t out, uint64_t in) { return out * in * 2; }

constexpr Scheme kSchemes[] = {
    {"bf16", bf16_bytes},
    {"int4_g64", int4_bytes<64>},
    {"int4_g128", int4_bytes<128>},
    {"nvfp4", nvfp4_bytes},
};

uint64_t estimate_bytes(const model::ModelSpec& spec, const Scheme& s) {
  uint64_t bytes = 0;
  for (const auto& t : spec.tensors) {
    if (t.role == model::TensorRole::LinearWeight) {
      bytes += s.target_bytes(uint64_t(t.shape[0]), uint64_t(t.shape[1]));
    } else {
      bytes += uint64_t(t.numel()) * 2;
    }
  }
  return bytes;
}

std::string with_commas(uint64_t v) {
  const std::string digits = std::to_string(v);
  std::string s;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) s += ',';
    s += digits[i];
  }
  return s;
}

struct Facts {
  std::map<std::string, int> dtypes;  // dtype name -> tensor count
  uint64_t file_bytes = 0;            // sum of the safetensors file sizes
  uint64_t tensor_bytes = 0;
  int num_files = 0;
};

Facts gather(const io::TensorStore& store) {
  Facts f;
  std::set<std::string> files;
  for (const auto& name : store.names()) {
    ++f.dtypes[io::dtype_name(store.info(name).dtype)];
    files.insert(store.file_of(name).path());
  }
  for (const auto& p : files) f.file_bytes += fs::file_size(p);
  f.tensor_bytes = store.total_tensor_bytes();
  f.num_files = int(store.num_files());
  return f;
}

json linear_json(const model::LinearSpec& l) {
  return {{"name", l.name}, {"layer", l.layer}, {"path", model::path_name(l.path)},
          {"kind", model::linear_kind_name(l.kind)}, {"out", l.out}, {"in", l.in}, {"bias", l.has_bias}};
}

json fusion_json(const model::FusionPair& f) {
  json j = {{"kind", model::fusion_kind_name(f.kind)}, {"layer", f.layer}, {"path", model::path_name(f.path)},
            {"prev", f.prev_tensors}, {"targets", f.targets}, {"num_scales", f.num_scales}};
  if (f.kind == model::FusionKind::VToO) j["heads_per_group"] = f.heads_per_group;
  if (f.tied_across_paths) j["tied_across_paths"] = true;
  return j;
}

json to_json(const model::ModelSpec& spec, const Facts& facts, const std::string& dir) {
  const auto& c = spec.config;
  json schemes = json::object();
  for (const auto& s : kSchemes) schemes[s.name] = estimate_bytes(spec, s);
  json fusions = json::array(), linears = json::array(), kept = json::array();
  for (const auto& f : spec.fusions) fusions.push_back(fusion_json(f));
  for (const auto& l : spec.linears) linears.push_back(linear_json(l));
  for (const auto& t : spec.kept) kept.push_back({{"name", t.name}, {"shape", t.shape}, {"role", model::tensor_role_name(t.role)}});
  json targets = {{"und", spec.num_targets(model::Path::Und)}};
  if (spec.num_paths() > 1) targets["gen"] = spec.num_targets(model::Path::Gen);
  return {{"path", dir},
          {"architecture", model::arch_name(spec.arch)},
          {"num_layers", c.num_layers},
          {"hidden_size", c.hidden_size},
          {"intermediate_size", c.intermediate_size},
          {"num_heads", c.num_heads},
          {"num_kv_heads", c.num_kv_heads},
          {"head_dim", c.head_dim},
          {"vocab_size", c.vocab_size},
          {"has_vit", spec.has_vit},
          {"num_files", facts.num_files},
          {"num_tensors", spec.tensors.size()},
          {"dtypes", facts.dtypes},
          {"file_bytes", facts.file_bytes},
          {"tensor_bytes", facts.tensor_bytes},
          {"targets", targets},
          {"target_weights", spec.target_weights()},
          {"num_fusion_pairs", spec.fusions.size()},
          {"num_kept", spec.kept.size()},
          {"estimated_bytes", schemes},
          {"target_list", linears},
          {"fusion_pairs", fusions},
          {"kept", kept}};
}

void print_text(const model::ModelSpec& spec, const Facts& facts, const std::string& dir, bool list) {
  const auto& c = spec.config;
  std::printf("%s\n", dir.c_str());
  std::printf("  architecture   %s%s\n", model::arch_name(spec.arch), spec.has_vit ? " (with vit_model.*)" : "");
  std::printf("  dims           %d layers, hidden %d, heads %d/%d (head_dim %d), intermediate %d, vocab %d\n",
              c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size, c.vocab_size);
  std::string dtypes;
  for (const auto& [d, n] : facts.dtypes) dtypes += (dtypes.empty() ? "" : ", ") + d + " " + std::to_string(n);
  std::printf("  tensors        %zu in %d file(s) (%s), %s bytes\n", spec.tensors.size(), facts.num_files,
              dtypes.c_str(), with_commas(facts.file_bytes).c_str());
  std::printf("  targets        und %d", spec.num_targets(model::Path::Und));
  if (spec.num_paths() > 1) std::printf(", gen %d", spec.num_targets(model::Path::Gen));
  std::printf(" linears, %s weights\n", with_commas(uint64_t(spec.target_weights())).c_str());
  std::map<std::string, int> by_kind;
  for (const auto& f : spec.fusions) ++by_kind[model::fusion_kind_name(f.kind)];
  std::string kinds;
  for (const auto& [k, n] : by_kind) kinds += (kinds.empty() ? "" : ", ") + k + " " + std::to_string(n);
  std::printf("  fusion pairs   %zu (%s)\n", spec.fusions.size(), kinds.c_str());
  std::map<std::string, int> kept_roles;
  for (const auto& t : spec.kept) ++kept_roles[model::tensor_role_name(t.role)];
  std::string roles;
  for (const auto& [r, n] : kept_roles) roles += (roles.empty() ? "" : ", ") + r + " " + std::to_string(n);
  std::printf("  kept (hi-prec) %zu tensors (%s)\n", spec.kept.size(), roles.c_str());
  std::printf("  estimated size (kept tensors and biases bf16):\n");
  for (const auto& s : kSchemes)
    std::printf("    %-10s %18s bytes\n", s.name, with_commas(estimate_bytes(spec, s)).c_str());
  if (!list) return;
  std::printf("  target linears:\n");
  for (const auto& l : spec.linears)
    std::printf("    %-60s %s %-9s [%lld, %lld]%s\n", l.name.c_str(), model::path_name(l.path),
                model::linear_kind_name(l.kind), (long long)l.out, (long long)l.in, l.has_bias ? " +bias" : "");
  std::printf("  fusion pairs:\n");
  for (const auto& f : spec.fusions) {
    std::printf("    L%d %s %-14s %s ->", f.layer, model::path_name(f.path), model::fusion_kind_name(f.kind),
                f.prev_tensors.front().c_str());
    for (const auto& t : f.targets) std::printf(" %s", t.substr(t.rfind('.') + 1).c_str());
    std::printf("\n");
  }
  std::printf("  kept tensors:\n");
  for (const auto& t : spec.kept) std::printf("    %s\n", t.name.c_str());
}

// The vision tower (a ViT directory, or vit_model.* inside a checkpoint), strictly checked.
json vit_json(const vit::VitLocation& loc) {
  const io::TensorStore store(loc.weights);
  std::unique_ptr<formats::CheckpointReader> reader;  // a quantized checkpoint: linears may be stored 4-bit
  if (!loc.checkpoint_dir.empty()) reader = std::make_unique<formats::CheckpointReader>(loc.checkpoint_dir);
  vit::check_vit_tensors(loc.config, store, loc.prefix, loc.weights, reader.get());
  const auto& c = loc.config;
  int64_t weights = 0, linear_weights = 0;
  uint64_t bytes = 0;
  std::map<std::string, int> dtypes;
  std::map<std::string, json> quantized;  // label -> {linears, bytes, weights}
  json per_linear = json::array();
  for (const auto& t : vit::vit_tensors(c)) {
    const std::string name = loc.prefix + t.name;
    int64_t n = 1;
    for (const int64_t d : t.shape) n *= d;
    weights += n;
    if (t.shape.size() >= 2) linear_weights += n;
    const std::string base = name.size() > 7 ? name.substr(0, name.size() - 7) : name;
    if (reader && t.shape.size() >= 2 && reader->is_quantized(base)) {
      uint64_t b = 0;
      for (const auto& s : reader->file().tensors())
        if (s.name.rfind(base + ".", 0) == 0 && s.name != base + ".bias") b += s.nbytes();
      const auto& decls = reader->quantized_linears();
      const auto d = std::find_if(decls.begin(), decls.end(), [&](const formats::LinearDecl& x) { return x.base == base; });
      const std::string label = std::string(quant::scheme_name(d->scheme)) + " g" + std::to_string(d->group);
      json& q = quantized[label];
      if (q.is_null()) q = {{"linears", 0}, {"bytes", uint64_t(0)}, {"weights", int64_t(0)}};
      q["linears"] = q["linears"].get<int>() + 1;
      q["bytes"] = q["bytes"].get<uint64_t>() + b;
      q["weights"] = q["weights"].get<int64_t>() + n;
      per_linear.push_back({{"name", base}, {"format", label}, {"bytes", b}, {"bits_per_weight", 8.0 * double(b) / double(n)}});
      bytes += b;
      ++dtypes[label];
      continue;
    }
    const auto& info = store.info(name);
    bytes += info.nbytes();
    if (reader && t.shape.size() >= 2)
      per_linear.push_back({{"name", base}, {"format", io::dtype_name(info.dtype)}, {"bytes", info.nbytes()},
                            {"bits_per_weight", 8.0 * double(info.nbytes()) / double(n)}});
    ++dtypes[io::dtype_name(info.dtype)];
  }
  // Lance's 672 x 672 image: 48 x 48 patches, 2 frames -> 1 temporal patch, 576 LLM tokens.
  const int64_t side = 672 / c.patch_size, tokens = (side / c.spatial_merge_size) * (side / c.spatial_merge_size);
  json j = {{"weights", loc.weights},
            {"prefix", loc.prefix},
            {"config_source", c.source},
            {"config", c.to_json()},
            {"num_tensors", vit::vit_tensors(c).size()},
            {"dtypes", dtypes},
            {"num_weights", weights},
            {"linear_weights", linear_weights},
            {"bytes", bytes},
            {"tokens_672_image", tokens}};
  if (!quantized.empty()) {
    j["quantized"] = quantized;
    j["linears"] = per_linear;
  }
  return j;
}

void print_vit(const json& v) {
  const auto& c = v["config"];
  std::string dtypes;
  for (const auto& [d, n] : v["dtypes"].items()) dtypes += (dtypes.empty() ? "" : ", ") + d + " " + std::to_string(n.get<int>());
  std::printf("  vit            %d blocks, width %d, %d heads, MLP %d, window %d px, full attention in",
              c["depth"].get<int>(), c["hidden_size"].get<int>(), c["num_heads"].get<int>(), c["intermediate_size"].get<int>(),
              c["window_size"].get<int>());
  for (int b : c["fullatt_block_indexes"]) std::printf(" %d", b);
  std::printf(", merger -> %d\n", c["out_hidden_size"].get<int>());
  std::printf("                 %zu tensors%s%s (%s), %s weights; a 672x672 image gives %lld LLM tokens\n",
              v["num_tensors"].get<size_t>(), v["prefix"].get<std::string>().empty() ? "" : " with prefix ",
              v["prefix"].get<std::string>().c_str(), dtypes.c_str(), with_commas(v["num_weights"].get<uint64_t>()).c_str(),
              (long long)v["tokens_672_image"].get<int64_t>());
  std::printf("                 config from %s\n", v["config_source"].get<std::string>().c_str());
  if (v.contains("quantized")) {
    std::string q;
    for (const auto& [label, g] : v["quantized"].items())
    {
      char bits[32];
      std::snprintf(bits, sizeof bits, "%.2f", 8.0 * double(g["bytes"].get<uint64_t>()) / double(g["weights"].get<int64_t>()));
      q += (q.empty() ? "" : ", ") + label + " x" + std::to_string(g["linears"].get<int>()) + " (" + bits + " bits/weight)";
    }
    std::printf("                 quantized linears: %s; ViT %s bytes as stored\n", q.c_str(), with_commas(v["bytes"].get<uint64_t>()).c_str());
  }
}

// ---- quantized checkpoints ------------------------------------------------------------------

std::string path_of(const std::string& base) {
  if (base.rfind("vit_model.", 0) == 0) return "vit";
  return base.find("_moe_gen") != std::string::npos ? "gen" : "und";
}

std::string scheme_label(const formats::LinearDecl& d) {
  if (d.scheme == quant::Scheme::NvFp4) return "nvfp4";
  return std::string(quant::scheme_name(d.scheme)) + " g" + std::to_string(d.group) + (d.group == d.in ? " (per channel)" : "");
}

// The method of each linear and the calibration, from what the checkpoint records: lance-quant.json
// (every format lance-quant writes), else lance-quant-v1's meta, else the HF config's quant_method.
struct Provenance {
  std::map<std::string, std::string> method;  // base -> method
  std::string default_method, producer, scheme;
  nlohmann::json tasks = nlohmann::json::array(), calibration, partial;
};

Provenance provenance(const std::string& dir, const formats::CheckpointReader& r) {
  Provenance p;
  const nlohmann::json& cfg = r.config();
  if (r.format() == formats::FormatId::LanceQuantV1) {
    p.default_method = cfg.value("scheme", std::string());
    if (cfg.contains("per_weight") && cfg["per_weight"].is_object())
      for (const auto& [k, v] : cfg["per_weight"].items())
        if (v.is_object() && v.contains("scheme") && v["scheme"].is_string() && k.size() > 7)
          p.method[k.substr(0, k.size() - 7)] = v["scheme"].get<std::string>();
    if (cfg.contains("tasks_calibrated")) p.tasks = cfg["tasks_calibrated"];
    if (cfg.contains("producer") && cfg["producer"].is_string()) p.producer = cfg["producer"];
  } else if (r.format() == formats::FormatId::AutoAwq) {
    p.default_method = "awq";
  } else if (r.format() == formats::FormatId::ModelOpt) {
    p.default_method = "modelopt";
  }
  const fs::path marker = fs::path(dir) / io::kOutputMarker;
  std::error_code ec;
  if (fs::is_regular_file(fs::symlink_status(marker, ec))) {
    try {
      const nlohmann::json m = io::read_json_object(marker.string());
      p.producer = "lance-quant " + m.value("command", std::string("quantize"));
      p.scheme = m.value("scheme", std::string());
      if (m.contains("tasks_calibrated")) p.tasks = m["tasks_calibrated"];
      if (m.contains("calibration")) p.calibration = m["calibration"];
      if (m.contains("partial_calibration")) p.partial = m["partial_calibration"];
      if (m.contains("linears") && m["linears"].is_object())
        for (const auto& [k, v] : m["linears"].items())
          if (v.is_object() && v.contains("method") && v["method"].is_string()) p.method[k] = v["method"].get<std::string>();
    } catch (const Error&) {  // a damaged marker only loses the provenance, not the description
    }
  }
  return p;
}

int inspect_quantized(const std::string& dir, bool json_out, bool list) {
  const formats::CheckpointReader r(dir);
  const model::ModelConfig config = model::load_config(dir);
  std::vector<std::string> names;
  for (const auto& t : r.file().tensors()) names.push_back(t.name);
  model::check_layer_count(config, names, dir);
  const Provenance prov = provenance(dir, r);
  const io::SafetensorsFile& f = r.file();
  struct Group {
    int linears = 0;
    uint64_t bytes = 0, weights = 0;
  };
  std::map<std::string, std::map<std::string, Group>> per_path;  // path -> scheme label -> totals
  std::map<std::string, int> methods;
  uint64_t q_bytes = 0, q_weights = 0;
  json linears = json::array();
  for (const auto& d : r.quantized_linears()) {
    uint64_t bytes = 0;
    for (const auto& t : f.tensors())
      if (t.name.rfind(d.base + ".", 0) == 0 && t.name != d.base + ".bias") bytes += t.nbytes();
    const uint64_t w = uint64_t(d.out) * uint64_t(d.in);
    Group& g = per_path[path_of(d.base)][scheme_label(d)];
    ++g.linears, g.bytes += bytes, g.weights += w;
    q_bytes += bytes, q_weights += w;
    const auto m = prov.method.find(d.base);
    const std::string method = m != prov.method.end() ? m->second : prov.default_method;
    if (!method.empty()) ++methods[method];
    json e = {{"name", d.base}, {"path", path_of(d.base)}, {"scheme", quant::scheme_name(d.scheme)}, {"group_size", d.group},
              {"out", d.out}, {"in", d.in}, {"bytes", bytes}, {"bits_per_weight", 8.0 * double(bytes) / double(w)}};
    if (!method.empty()) e["method"] = method;
    linears.push_back(e);
  }
  const model::ModelSpec spec = model::expected_spec(config, model::Arch::LanceMoT);
  int kept = 0;
  for (const auto& l : spec.linears) kept += !r.is_quantized(l.name) && f.has(l.weight_name());
  uint64_t file_bytes = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) file_bytes += e.file_size();
  const double bpw = q_weights ? 8.0 * double(q_bytes) / double(q_weights) : 0.0;
  const json vit = vit::model_has_vit(dir) ? vit_json(vit::locate_vit(dir)) : json();
  if (json_out) {
    json schemes = json::object();
    for (const auto& [path, groups] : per_path)
      for (const auto& [label, g] : groups)
        schemes[path][label] = {{"linears", g.linears}, {"bits_per_weight", 8.0 * double(g.bytes) / double(g.weights)}};
    json j = {{"path", dir}, {"format", formats::format_name(r.format())}, {"weights_file", f.path()},
              {"num_layers", config.num_layers}, {"hidden_size", config.hidden_size},
              {"quantized_linears", r.quantized_linears().size()}, {"kept_linears", kept}, {"schemes", schemes},
              {"bits_per_weight", bpw}, {"quantized_bytes", q_bytes}, {"file_bytes", file_bytes},
              {"methods", methods}, {"tasks_calibrated", prov.tasks}};
    if (!prov.producer.empty()) j["producer"] = prov.producer;
    if (!prov.scheme.empty()) j["scheme"] = prov.scheme;
    if (!prov.calibration.is_null()) j["calibration"] = prov.calibration;
    if (!prov.partial.is_null()) j["partial_calibration"] = prov.partial;
    j["linears"] = linears;
    if (!vit.is_null()) j["vit"] = vit;
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%s\n", dir.c_str());
  std::printf("  format         %s (quantized checkpoint: %s)\n", formats::format_name(r.format()), fs::path(f.path()).filename().c_str());
  std::printf("  dims           %d layers, hidden %d, heads %d/%d, intermediate %d, vocab %d\n", config.num_layers,
              config.hidden_size, config.num_heads, config.num_kv_heads, config.intermediate_size, config.vocab_size);
  std::printf("  quantized      %zu linears, %d kept unquantized\n", r.quantized_linears().size(), kept);
  for (const auto& [path, groups] : per_path) {
    std::printf("  %-15s", (path + " path").c_str());
    bool first = true;
    for (const auto& [label, g] : groups) {
      std::printf("%s%s x%d (%.2f bits/weight)", first ? "" : ", ", label.c_str(), g.linears, 8.0 * double(g.bytes) / double(g.weights));
      first = false;
    }
    std::printf("\n");
  }
  std::string m;
  for (const auto& [k, n] : methods) m += (m.empty() ? "" : ", ") + k + " x" + std::to_string(n);
  std::printf("  method         %s%s%s\n", m.empty() ? "not recorded" : m.c_str(), prov.scheme.empty() ? "" : " (scheme ",
              prov.scheme.empty() ? "" : (prov.scheme + ")").c_str());
  std::string tasks;
  if (prov.tasks.is_array())
    for (const auto& t : prov.tasks) tasks += (tasks.empty() ? "" : ", ") + (t.is_string() ? t.get<std::string>() : t.dump());
  std::printf("  calibration    %s%s\n", tasks.empty() ? "none recorded" : tasks.c_str(),
              prov.partial.is_boolean() && prov.partial.get<bool>() ? " (PARTIAL: some linears uncalibrated)" : "");
  std::printf("  size           %s bytes on disk; quantized linears %.2f bits/weight (codes, scales, zeros as stored)\n",
              with_commas(file_bytes).c_str(), bpw);
  if (!prov.producer.empty()) std::printf("  producer       %s\n", prov.producer.c_str());
  if (!vit.is_null()) print_vit(vit);
  if (list)
    for (const auto& e : linears)
      std::printf("    %-60s %s %-14s [%lld, %lld] %.2f b/w %s\n", e["name"].get<std::string>().c_str(), e["path"].get<std::string>().c_str(),
                  (e["scheme"].get<std::string>() + " g" + std::to_string(e["group_size"].get<int64_t>())).c_str(),
                  (long long)e["out"].get<int64_t>(), (long long)e["in"].get<int64_t>(), e["bits_per_weight"].get<double>(),
                  e.value("method", std::string()).c_str());
  return 0;
}

void usage(FILE* out) {
  std::fprintf(out,
               "usage: lance-quant inspect DIR [--json] [--list]\n\n"
               "Recognises a Lance MoT or plain Qwen2 checkpoint, validates every tensor name and shape against\n"
               "its config (missing, unexpected or mis-shaped tensors are an error) and describes it.\n"
               "A quantized checkpoint (lance-quant-v1, autoawq, compressed-tensors, modelopt) is validated by its\n"
               "format's reader and described: number format per path, group size, bits per weight, size, and the\n"
               "method and calibration it records. A ViT directory (vit.safetensors + config.json) or a\n"
               "checkpoint's vit_model.* tensors are checked and described the same way.\n"
               "  --json   machine-readable output (includes the full target, fusion and kept lists)\n"
               "  --list   also list every target linear, fusion pair and kept tensor\n");
}

}  // namespace

int cmd_inspect(const Args& args) {
  std::string dir;
  bool json_out = false, list = false;
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else if (a == "--json") {
      json_out = true;
    } else if (a == "--list") {
      list = true;
    } else if (!a.empty() && a[0] != '-' && dir.empty()) {
      dir = a;
    } else {
      usage(stderr);
      fail(a, "unknown argument");
    }
  }
  if (dir.empty()) {
    usage(stderr);
    return 2;
  }
  std::error_code ec;
  if (!fs::exists(fs::status(dir, ec))) fail(dir, "does not exist");
  if (fs::is_regular_file(fs::path(dir) / "vit.safetensors") && !fs::exists(fs::path(dir) / "model.safetensors") &&
      !fs::exists(fs::path(dir) / "model.safetensors.index.json")) {  // a ViT directory
    const json v = vit_json(vit::locate_vit(dir));
    if (json_out) std::printf("%s\n", json({{"path", dir}, {"architecture", "qwen2.5-vl-vit"}, {"vit", v}}).dump(2).c_str());
    else {
      std::printf("%s\n  architecture   qwen2.5-vl vision tower\n", dir.c_str());
      print_vit(v);
    }
    return 0;
  }
  if (fs::is_directory(dir, ec)) {
    bool quantized = false;
    try {
      formats::detect_format(dir);
      quantized = true;
    } catch (const Error& e) {  // not a quantized layout: a dense checkpoint; a damaged one: say so
      if (std::string(e.what()).find("not a quantized checkpoint") == std::string::npos) throw;
    }
    if (quantized) return inspect_quantized(dir, json_out, list);
  }
  const model::ModelConfig config = model::load_config(fs::is_directory(dir) ? dir : fs::path(dir).parent_path().string());
  const io::TensorStore store(dir);
  const model::ModelSpec spec = model::build_spec(config, store);
  const Facts facts = gather(store);
  const json vit = spec.has_vit ? vit_json(vit::locate_vit(dir)) : json();
  if (json_out) {
    json j = to_json(spec, facts, dir);
    if (spec.has_vit) j["vit"] = vit;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    print_text(spec, facts, dir, list);
    if (spec.has_vit) print_vit(vit);
  }
  return 0;
}

}  // namespace lq::cli
