// The streaming driver of `lance-quant quantize`: plan, per-layer search, quantize, write, drop.
#include "pipeline/quantize.h"

#include <fnmatch.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>

#include "formats/fold_scales.h"
#include "io/error.h"
#include "io/json_fields.h"
#include "io/model_files.h"
#include "io/output.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/spec.h"
#include "pipeline/bit_plan.h"
#include "pipeline/layer_search.h"
#include "pipeline/searches.h"
#include "pipeline/vit_quantize.h"
#include "vit/vit_config.h"

namespace lq::pipeline {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- schemes --------------------------------------------------------------------------------

namespace {

struct SchemeRow {
  const char* name;
  Method method;
  quant::Scheme number;
};
const SchemeRow kSchemes[] = {
    {"rtn-int4", Method::Rtn, quant::Scheme::Int4Asym},   {"awq-int4", Method::Awq, quant::Scheme::Int4Asym},
    {"awq-proxy", Method::Proxy, quant::Scheme::Int4Asym}, {"legacy-awq", Method::Legacy, quant::Scheme::Int4Asym},
    {"nvfp4", Method::Rtn, quant::Scheme::NvFp4},          {"awq-nvfp4", Method::Awq, quant::Scheme::NvFp4},
    {"rtn-int8", Method::Rtn, quant::Scheme::Int8Sym},     {"gptq-int4", Method::Gptq, quant::Scheme::Int4Asym},
    {"awq-gptq-int4", Method::AwqGptq, quant::Scheme::Int4Asym}, {"gptq-nvfp4", Method::Gptq, quant::Scheme::NvFp4},
    {"awq-gptq-nvfp4", Method::AwqGptq, quant::Scheme::NvFp4},
};

void check_group_size(int64_t group, const std::string& where) {
  if (group != 32 && group != 64 && group != 128 && group != 0)
    fail(where, "expected a group size of 32, 64, 128 or 0 (per channel), got " + std::to_string(group));
}

}  // namespace

bool method_runs_forward(Method m) { return m == Method::Awq || m == Method::Gptq || m == Method::AwqGptq; }
bool method_uses_gptq(Method m) { return m == Method::Gptq || m == Method::AwqGptq; }

std::vector<std::string> known_schemes() {
  std::vector<std::string> v;
  for (const auto& r : kSchemes) v.push_back(r.name);
  return v;
}

SchemeChoice parse_scheme_choice(const std::string& name, int64_t group, bool sym) {
  for (const auto& r : kSchemes) {
    if (name != r.name) continue;
    SchemeChoice c;
    c.name = name;
    c.method = r.method;
    c.params.scheme = r.number;
    if (sym && r.number == quant::Scheme::Int4Asym) {
      if (r.method == Method::Legacy) fail("--sym", "legacy-awq is asymmetric by definition");
      c.params.scheme = quant::Scheme::Int4Sym;
    }
    c.params.group = r.number == quant::Scheme::NvFp4 ? 16 : group;
    if (r.number != quant::Scheme::NvFp4) check_group_size(group, "--group-size");
    return c;
  }
  std::string list;
  for (const auto& s : known_schemes()) list += (list.empty() ? "" : ", ") + s;
  fail("--scheme", "unknown scheme '" + name + "' (known: " + list + ")");
}

FormatSpec parse_format_spec(const std::string& spec, int64_t group, bool sym, const std::string& where) {
  const std::string what = where + " '" + spec + "'";
  FormatSpec f;
  f.text = spec;
  if (spec == "bf16" || spec == "keep") {
    f.keep = true;
    return f;
  }
  for (const auto& r : kSchemes)  // a scheme name stands for its number format
    if (spec == r.name) {
      f.params = parse_scheme_choice(spec, group, sym).params;
      return f;
    }
  const size_t colon = spec.find(':');
  const std::string number = spec.substr(0, colon);
  if (number == "int4") f.params.scheme = sym ? quant::Scheme::Int4Sym : quant::Scheme::Int4Asym;
  else if (number == "int4-asym") f.params.scheme = quant::Scheme::Int4Asym;
  else if (number == "int4-sym") f.params.scheme = quant::Scheme::Int4Sym;
  else if (number == "int8") f.params.scheme = quant::Scheme::Int8Sym;
  else if (number == "nvfp4") f.params.scheme = quant::Scheme::NvFp4;
  else {
    std::string schemes;
    for (const auto& s : known_schemes()) schemes += ", " + s;
    fail(what, "unknown number format '" + number + "' (expected int4, int4-asym, int4-sym, int8 or nvfp4, optionally "
               "with :gN, or bf16 / keep, or a scheme name: " + schemes.substr(2) + ")");
  }
  f.params.group = group;
  if (colon != std::string::npos) {
    const std::string suffix = spec.substr(colon + 1);
    if (f.params.scheme == quant::Scheme::NvFp4) fail(what, "nvfp4 has fixed blocks of 16 elements: no :gN suffix");
    size_t used = 0;
    int64_t g = -1;
    try {
      if (suffix.size() > 1 && suffix[0] == 'g') g = std::stoll(suffix.substr(1), &used);
    } catch (const std::exception&) {
    }
    if (g < 0 || used + 1 != suffix.size()) fail(what, "expected a group suffix :gN (e.g. int4:g128), got ':" + suffix + "'");
    f.params.group = g;
  }
  if (f.params.scheme == quant::Scheme::NvFp4) f.params.group = 16;
  else check_group_size(f.params.group, what);
  return f;
}

FormatOverride parse_override(const std::string& arg, int64_t group, bool sym) {
  const size_t eq = arg.rfind('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size())
    fail("--override '" + arg + "'", "expected PATTERN=SPEC (e.g. down_proj=int4:g128 or '*_moe_gen*=int8')");
  return {arg.substr(0, eq), parse_format_spec(arg.substr(eq + 1), group, sym, "--override " + arg.substr(0, eq))};
}

std::string format_label(const quant::QuantParams& p, int64_t in) {
  if (p.scheme == quant::Scheme::NvFp4) return "nvfp4";
  return std::string(quant::scheme_name(p.scheme)) + ":g" + std::to_string(p.effective_group(in));
}

LinearFormats::LinearFormats(const model::ModelSpec& spec, const QuantizeOptions& o) {
  if (o.scheme.method == Method::Legacy)
    for (const auto& ov : o.overrides)
      if (!ov.format.keep)
        fail("--override " + ov.pattern, "legacy-awq reproduces the original toolkit's single INT4 format; only bf16 / keep "
                                          "overrides apply to it");
  if (o.scheme.method == Method::Legacy && o.gen_format && !o.gen_format->keep)
    fail("--gen-scheme", "legacy-awq reproduces the original toolkit's single INT4 format; use another --scheme");
  std::optional<std::string> first_label;
  std::vector<int> override_hits(o.overrides.size(), 0);
  int gen_linears = 0;
  for (const auto& l : spec.linears) {
    std::optional<quant::QuantParams> p = o.scheme.params;
    if (l.path == model::Path::Gen) ++gen_linears;
    if (o.gen_format && l.path == model::Path::Gen) {
      if (o.gen_format->keep) p.reset();
      else p = o.gen_format->params;
    }
    for (size_t i = 0; i < o.overrides.size(); ++i)
      if (matches_pattern(l.name, o.overrides[i].pattern)) {
        ++override_hits[i];
        if (o.overrides[i].format.keep) p.reset();
        else p = o.overrides[i].format.params;
      }
    if (const auto it = o.per_linear.find(l.name); it != o.per_linear.end()) {
      if (it->second.keep) p.reset();
      else p = it->second.params;
    }
    for (const auto& pat : o.keep)
      if (matches_pattern(l.name, pat)) p.reset();
    if (p) {
      // lance-quant-v1 stores NVFP4 block scales as bf16 without a tensor scale: e4m3 * tensor scale
      // must be exact in bf16, which a power-of-two tensor scale guarantees.
      if (p->scheme == quant::Scheme::NvFp4 && o.format == formats::FormatId::LanceQuantV1) p->nvfp4_pow2_tensor_scale = true;
      const std::string label = format_label(*p, l.in);
      if (!first_label) first_label = label;
      mixed_ = mixed_ || label != *first_label;
    }
    by_base_[l.name] = p;
  }
  // A pattern or option that selects nothing is almost certainly a typo: refuse rather than ignore it.
  for (size_t i = 0; i < o.overrides.size(); ++i)
    if (override_hits[i] == 0 && !is_vit_pattern(o.overrides[i].pattern))  // (ViT patterns: plan_vit_quantization)
      fail("--override " + o.overrides[i].pattern, "matches no target linear (patterns match the base name, e.g. "
                                                   "language_model.model.layers.0.mlp.down_proj)");
  if (o.gen_format && gen_linears == 0) fail("--gen-scheme", "this model has no gen path (*_moe_gen linears)");
}

bool LinearFormats::quantized(const std::string& base) const {
  const auto it = by_base_.find(base);
  if (it == by_base_.end()) fail(base, "not a target linear of this model");
  return it->second.has_value();
}

const quant::QuantParams& LinearFormats::params_for(const std::string& base) const {
  if (!quantized(base)) fail(base, "internal: the linear is kept in bf16, it has no number format");
  return *by_base_.at(base);
}

bool matches_pattern(const std::string& base, const std::string& pattern) {
  if (pattern.find_first_of("*?[") != std::string::npos) return fnmatch(pattern.c_str(), base.c_str(), 0) == 0;
  return base.find(pattern) != std::string::npos;
}

// ---- output directory -----------------------------------------------------------------------

void check_output_dir(const QuantizeOptions& o) {
  std::vector<std::string> inputs = {o.model_dir, o.stats_path, o.vit_dir};
  for (const auto& c : o.calib) inputs.push_back(c.path);
  io::check_output_dir(o.out_dir, o.force, inputs, "--out");
  if (!o.dense_out.empty()) {
    inputs.push_back(o.out_dir);
    io::check_output_dir(o.dense_out, o.force, inputs, "--dense-out");
    io::check_not_input(o.out_dir, {o.dense_out}, "--out");
  }
}

namespace {

// ---- plan -----------------------------------------------------------------------------------

// Decoder layer of a tensor name (".layers.N."), -1 for globals.
int layer_of(const std::string& name) {
  const auto pos = name.find(".layers.");
  if (pos == std::string::npos) return -1;
  return std::atoi(name.c_str() + pos + 8);
}

struct Planned {
  std::vector<formats::PlanEntry> entries;
  std::map<std::string, bool> quantized;                 // target base -> quantized (false = kept)
  std::vector<std::vector<std::string>> layer_tensors;   // per layer: every tensor name of the layer
  std::vector<std::string> global_tensors;
};

Planned make_plan(const model::ModelSpec& spec, const QuantizeOptions& o, const LinearFormats& lf) {
  Planned p;
  p.layer_tensors.resize(spec.layers.size());
  std::set<std::string> biases_of_quantized;
  for (const auto& l : spec.linears) {
    p.quantized[l.name] = lf.quantized(l.name);
    if (!p.quantized[l.name]) continue;
    const int64_t g = lf.params_for(l.name).effective_group(l.in);
    if (g <= 0 || l.in % g != 0)
      fail(l.name, "group size " + std::to_string(g) + " does not divide the input width " + std::to_string(l.in) +
                       " (choose another --group-size, --override this linear with another group, or --keep it)");
    if (l.has_bias) biases_of_quantized.insert(l.bias_name());
  }
  for (const auto& t : spec.tensors) {
    if (o.quantize_vit && t.role == model::TensorRole::Vit) continue;  // planned by plan_vit_quantization
    const int layer = layer_of(t.name);
    if (layer >= 0) p.layer_tensors.at(size_t(layer)).push_back(t.name);
    else p.global_tensors.push_back(t.name);
    if (biases_of_quantized.count(t.name)) continue;  // written with its linear
    if (t.role == model::TensorRole::LinearWeight) {
      const std::string base = t.name.substr(0, t.name.size() - 7);
      const model::LinearSpec* ls = spec.find_linear(base);
      if (ls && p.quantized.at(base)) {
        const quant::QuantParams& qp = lf.params_for(base);
        formats::LinearDecl d;
        d.base = base;
        d.scheme = qp.scheme;
        d.out = ls->out;
        d.in = ls->in;
        d.group = qp.effective_group(ls->in);
        d.scale_dtype = qp.scale_dtype;
        d.has_bias = ls->has_bias;
        p.entries.push_back(d);
        continue;
      }
    }
    p.entries.push_back(formats::PlainDecl{t.name, t.shape, o.kept_dtype});
  }
  for (const auto& t : spec.kept)  // ViT (carried through as it is without --vit) and anything else outside the canonical list
    if (!(o.quantize_vit && t.role == model::TensorRole::Vit) &&
        std::find(p.global_tensors.begin(), p.global_tensors.end(), t.name) == p.global_tensors.end() && layer_of(t.name) < 0) {
      bool listed = false;
      for (const auto& e : p.entries)
        if (auto* d = std::get_if<formats::PlainDecl>(&e); d && d->name == t.name) listed = true;
      if (!listed) {
        p.entries.push_back(formats::PlainDecl{t.name, t.shape, o.kept_dtype});
        p.global_tensors.push_back(t.name);
      }
    }
  return p;
}

double rel_error(const std::vector<float>& ref, const std::vector<float>& got) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = double(got[i]) - ref[i];
    num += d * d;
    den += double(ref[i]) * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

json read_model_config(const std::string& dir) {
  for (const char* f : {"config.json", "llm_config.json"})
    if (const std::string p = io::model_file(dir, f); !p.empty()) return io::read_json_object(p);
  return json::object();
}

// The files beside the weights that a quantized directory needs to be loaded and run (configs and the
// tokenizer), by name: nothing else of the model directory is copied. Each follows the symlink rule
// (io/model_files.h) and is written as a regular file; what the writer produced is never overwritten.
const char* const kSideFiles[] = {"config.json",           "llm_config.json",      "lance_config.json",
                                  "generation_config.json", "tokenizer.json",       "tokenizer_config.json",
                                  "special_tokens_map.json", "added_tokens.json",   "vocab.json",
                                  "merges.txt"};
void copy_side_files(const std::string& src, const fs::path& dst) {
  for (const char* name : kSideFiles) {
    const std::string from = io::model_file(src, name);
    if (from.empty() || fs::exists(dst / name)) continue;
    fs::copy_file(fs::canonical(from), dst / name);
  }
}

// Fails naming `name` when `v` holds a NaN or an infinity (a corrupt or hostile checkpoint).
void check_finite(const std::string& name, const float* v, size_t n, size_t offset = 0) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i]))
      fail(name, std::string("holds a non-finite value (") + (std::isnan(v[i]) ? "NaN" : "Inf") + ") at element " +
                     std::to_string(offset + i) + "; the checkpoint is corrupt");
}

// Calibration input kinds, sorted ("chat", "t2i", "text").
std::vector<std::string> source_kinds(const std::vector<calib::Source>& sources) {
  std::set<std::string> k;
  for (const auto& s : sources) k.insert(calib::source_kind_name(s.kind));
  return {k.begin(), k.end()};
}
std::vector<std::string> stats_kinds(const std::string& stats_path) {
  std::set<std::string> k;
  try {
    const io::SafetensorsFile f(stats_path);
    const auto it = f.metadata().find("data_sources");
    if (it != f.metadata().end())
      for (const auto& src : json::parse(it->second))
        if (src.is_string()) k.insert(src.get<std::string>().substr(0, src.get<std::string>().find(':')));
  } catch (const std::exception&) {  // the search validates the file itself and says what is wrong
  }
  return {k.begin(), k.end()};
}

// awq / gptq / awq-gptq schemes: which paths the --calib inputs reach (text, chat, x2t: und; t2i, t2v,
// image_edit, video_edit: both, their prompt prefixes are und). A path with quantized linears and no input
// is refused before any slow work, unless --allow-partial (its linears are then written with RTN and
// recorded as such).
void check_awq_coverage(const QuantizeOptions& o, const model::ModelSpec& spec, const LinearFormats& lf) {
  if (o.calib.empty()) fail("quantize", o.scheme.name + " needs calibration inputs: --calib text:FILE and --calib t2i:FILE");
  bool und = false, gen = false;
  for (const auto& s : o.calib) {
    using K = calib::SourceKind;
    und = true;  // text, chat and x2t reach und; the generation tasks' prompt prefixes too
    gen = gen || s.kind == K::T2i || s.kind == K::T2v || s.kind == K::ImageEdit || s.kind == K::VideoEdit;
    if (s.kind == K::ImageEdit || s.kind == K::VideoEdit) {
      const std::string where = "quantize --calib " + std::string(calib::source_kind_name(s.kind)) + ":" + s.path;
      if (o.vae.empty()) fail(where, "edit inputs need the Wan2.2 VAE (--vae PATH) to encode their sources");
      if (!o.edit_without_vit && o.vit_dir.empty() && !vit::model_has_vit(o.model_dir))
        fail(where, "edit inputs need the ViT for Lance's reference block: --vit-dir DIR (vit.safetensors + config.json) "
                    "or a checkpoint with vit_model.* tensors, or --no-vit-reference");
    }
  }
  std::map<std::string, std::vector<std::string>> missing;  // path -> quantized linears
  for (const auto& l : spec.linears)
    if (lf.quantized(l.name) && !(l.path == model::Path::Gen ? gen : und)) missing[model::path_name(l.path)].push_back(l.name);
  if (missing.empty() || o.allow_partial) return;
  std::string msg;
  for (const auto& [path, names] : missing)
    msg += "\n  path " + path + ": " + std::to_string(names.size()) + " quantized linears without calibration data, e.g. " +
           names.front();
  fail("quantize --scheme " + o.scheme.name,
       "the calibration inputs leave a path uncalibrated (" +
           std::string(gen ? "" : "no t2i:FILE input reaches the gen path") + (!gen && !und ? "; " : "") +
           (und ? "" : "no input reaches the und path") + "); add an input for it, or pass --allow-partial to write those "
           "linears with RTN (recorded as such):" + msg);
}

std::unique_ptr<LayerSearch> make_search(const QuantizeOptions& o, const model::ModelSpec& spec, const LinearFormats& lf,
                                         QuantizeReport& report, CalibRows* rows) {
  switch (o.scheme.method) {
    case Method::Rtn: return nullptr;
    case Method::Awq:
    case Method::Gptq:
    case Method::AwqGptq: return make_forward_awq(o, spec, lf, report, rows);
    case Method::Proxy:
    case Method::Legacy: return make_stats_search(o, spec, lf);
  }
  return nullptr;
}

// The layer as a dense model computing what the checkpoint computes, folds undone: quantized
// targets W' / (row x col fold scales), everything else the original tensor.
template <class Write>
void write_dense_layer(const model::ModelSpec& spec, int l, const LayerTensors& original, const LayerTensors& final_weights,
                       const LayerPlans& plans, const std::vector<std::string>& names, Write&& write) {
  std::map<std::string, const model::LinearSpec*> weight_of;
  for (const auto& path : spec.layers[size_t(l)].paths)
    for (const auto& ls : path.linears) weight_of[ls.weight_name()] = &ls;
  for (const auto& name : names) {
    const auto it = weight_of.find(name);
    if (it == weight_of.end()) {
      write(name, original.at(name));
      continue;
    }
    const model::LinearSpec& ls = *it->second;
    std::vector<float> w = final_weights.at(name);
    const auto p = plans.find(ls.name);
    if (p != plans.end())
      for (int64_t r = 0; r < ls.out; ++r)
        for (int64_t c = 0; c < ls.in; ++c) {
          const float rs = p->second.row_scale.empty() ? 1.0f : p->second.row_scale[size_t(r)];
          const float cs = p->second.col_scale.empty() ? 1.0f : p->second.col_scale[size_t(c)];
          w[size_t(r * ls.in + c)] /= rs * cs;
        }
    write(name, w);
  }
}

}  // namespace

// ---- the driver -----------------------------------------------------------------------------

QuantizeReport quantize_model(const QuantizeOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  QuantizeOptions o = options;  // --bpw fills o.per_linear
  io::require_directory(o.model_dir, "model directory");
  check_output_dir(o);
  if (method_uses_gptq(o.scheme.method)) {
    if (o.gptq.gptq.block <= 0) fail("--gptq-block", "must be a positive number of columns");
    if (!(o.gptq.gptq.damp >= 0.0) || !std::isfinite(o.gptq.gptq.damp)) fail("--gptq-damp", "must be a finite fraction >= 0");
  }
  const model::ModelConfig cfg = model::load_config(o.model_dir);
  io::TensorStore store(o.model_dir);
  const model::ModelSpec spec = model::build_spec(cfg, store);
  // --vit: the ViT located and checked, its output planned, before any slow work.
  std::optional<VitQuantPlan> vit_plan;
  std::vector<std::string> vit_keep;  // --keep / --override PATTERN=keep patterns naming ViT linears
  for (const auto& k : o.keep)
    if (is_vit_pattern(k)) vit_keep.push_back(k);
  for (const auto& ov : o.overrides)
    if (is_vit_pattern(ov.pattern)) {
      if (!ov.format.keep)
        fail("--override " + ov.pattern, "the ViT's linears are written RTN INT4 (group 64) or kept dense: use --override " +
                                             ov.pattern + "=keep or --keep " + ov.pattern);
      vit_keep.push_back(ov.pattern);
    }
  if (!vit_keep.empty() && !o.quantize_vit)
    fail("--keep " + vit_keep.front(), "names linears of the ViT (vit_model.*), which only --vit quantizes");
  if (o.quantize_vit) {
    if (!o.dense_out.empty()) fail("quantize --vit", "--dense-out (a dense copy of the LLM for evaluation) is not written with --vit");
    if (o.format != formats::FormatId::LanceQuantV1 && o.format != formats::FormatId::CompressedTensors)
      fail("quantize --vit --format " + std::string(formats::format_name(o.format)),
           "the 4-bit ViT has its own group sizes (64 / 48 / 32 / 16) beside the LLM's: it needs a layout with per-linear "
           "formats, --format lance-quant-v1 (default) or compressed-tensors");
    vit_plan = plan_vit_quantization(o.model_dir, o.vit_dir, spec, o.kept_dtype, vit_keep);
    if (vit_plan->source.config.out_hidden_size != cfg.hidden_size)
      std::fprintf(stderr, "warning: quantize --vit: the ViT's merger outputs %d values per token, the model's hidden size is %d: "
                           "run --task x2t will refuse this pair\n", vit_plan->source.config.out_hidden_size, cfg.hidden_size);
  }
  // --bpw: measure every linear's sensitivity on the calibration rows (one streaming pass), choose the
  // formats, then quantize with them; the rows are collected once and reused by the search.
  std::optional<CalibRows> rows;
  std::optional<BitPlan> bit_plan;
  // Calibration inputs that leave a path uncalibrated, or kinds only `calibrate` reads: refused before
  // any slow work (the --bpw pass included).
  if (method_runs_forward(o.scheme.method)) check_awq_coverage(o, spec, LinearFormats(spec, o));
  if (o.bpw > 0) {
    if (o.format != formats::FormatId::LanceQuantV1 && o.format != formats::FormatId::CompressedTensors)
      fail("--bpw", "a mixed-precision plan needs --format lance-quant-v1 or compressed-tensors");
    if (!o.overrides.empty() || o.gen_format || !o.per_linear.empty())
      fail("--bpw", "chooses every linear's format itself: drop --override / --gen-scheme (--keep stays bf16 and is counted)");
    if (o.scheme.method == Method::Legacy || o.scheme.method == Method::Proxy)
      fail("--bpw", "needs a scheme calibrated on real activations (rtn, awq, gptq, awq-gptq with --calib)");
    (void)LinearFormats(spec, o);  // validates the options before the slow pass
    bit_plan = make_bit_plan(o, spec, o.bpw);
    fwd::Engine engine = load_search_engine(o.model_dir);
    rows = collect_calib_rows(o, engine);
    measure_bit_plan(*bit_plan, o, spec, *rows, engine, o.on_layer);
    for (const auto& l : bit_plan->linears) o.per_linear[l.name] = bit_plan->candidates[size_t(l.chosen)].format;
  }
  const LinearFormats linear_formats(spec, o);
  Planned plan = make_plan(spec, o, linear_formats);
  if (vit_plan) plan.entries.insert(plan.entries.end(), vit_plan->entries.begin(), vit_plan->entries.end());
  // What the output format cannot hold (a scheme, mixed formats in autoawq): refused before any slow work.
  formats::check_plan(o.format, plan.entries);

  QuantizeReport report;
  report.scheme = o.scheme.name;
  report.format = formats::format_name(o.format);
  report.out_dir = o.out_dir;
  // What the calibration was: the input kinds (forward-calibrated methods, and rtn's --bpw plan), or the
  // data sources recorded in --stats (awq-proxy, legacy-awq).
  if (method_runs_forward(o.scheme.method) || (bit_plan && o.scheme.method == Method::Rtn)) report.tasks_calibrated = source_kinds(o.calib);
  else if (o.scheme.method != Method::Rtn) report.tasks_calibrated = stats_kinds(o.stats_path);
  io::PartialOutputDir temp(o.out_dir, "quantize");  // removed again if anything below throws (or on SIGINT / SIGTERM)
  std::unique_ptr<LayerSearch> search =
      make_search(o, spec, linear_formats, report, rows ? &*rows : nullptr);  // validates stats / runs calibration inputs
  if (search && !o.allow_partial)  // the calibration data actually reached every path with quantized linears
    for (const auto& l : spec.linears)
      if (linear_formats.quantized(l.name) && !search->calibrated(l))
        fail("quantize --scheme " + o.scheme.name,
             std::string("the calibration data reached no linear of the ") + model::path_name(l.path) + " path (e.g. " + l.name +
                 "); add inputs for it, or pass --allow-partial to write its linears with RTN");
  if (bit_plan) {
    report.bit_plan = bit_plan->to_json();
    if (!search) {  // rtn: the rows only served the plan
      report.calib_rows_und = rows->rows_und, report.calib_rows_gen = rows->rows_gen;
      report.calib_tokens_und = rows->tokens_und, report.calib_tokens_gen = rows->tokens_gen;
    }
    rows.reset();
  }

  formats::WriterOptions wo;
  wo.model_config = read_model_config(o.model_dir);
  wo.method = o.scheme.method == Method::Rtn      ? "rtn"
              : o.scheme.method == Method::Legacy ? "legacy-awq"
              : o.scheme.method == Method::Gptq   ? "gptq"
              : o.scheme.method == Method::AwqGptq ? "awq-gptq"
                                                   : "awq";
  wo.extra_meta = {{"scheme", o.scheme.name}, {"producer", "lance-quant quantize"}};
  if (bit_plan) {
    wo.extra_meta["bit_plan"] = {{"budget_bpw", bit_plan->budget_bpw}, {"average_bpw", bit_plan->average_bpw()},
                                 {"file", kBitPlanFile}};
  } else if (o.gen_format || !o.overrides.empty()) {  // provenance of a mixed checkpoint (per_weight has each linear's format)
    json ov = json::array();
    if (o.gen_format) ov.push_back({{"gen_path", o.gen_format->text}});
    for (const auto& x : o.overrides) ov.push_back({{x.pattern, x.format.text}});
    wo.extra_meta["format_overrides"] = ov;
  }
  formats::CheckpointWriter writer(temp.path().string(), o.format, plan.entries, wo);
  std::vector<VitLinearReport> vit_linears;
  if (vit_plan) {
    for (const auto& e : vit_plan->entries)
      if (const auto* d = std::get_if<formats::LinearDecl>(&e)) writer.set_linear_method(d->base, "rtn");
    writer.merge_extra_meta({{"vit", vit_quantization_json(*vit_plan)}});
  }

  std::map<std::string, const formats::PlanEntry*> entry_of;
  for (const auto& e : plan.entries) {
    if (auto* d = std::get_if<formats::LinearDecl>(&e)) entry_of[d->base + ".weight"] = &e;
    else entry_of[std::get<formats::PlainDecl>(e).name] = &e;
  }
  std::unique_ptr<io::SafetensorsWriter> dense;
  std::unique_ptr<io::PartialOutputDir> dense_dir;
  if (!o.dense_out.empty()) {
    dense_dir = std::make_unique<io::PartialOutputDir>(o.dense_out, "quantize --dense-out");
    dense = std::make_unique<io::SafetensorsWriter>((dense_dir->path() / "model.safetensors").string(),
                                                    std::map<std::string, std::string>{{"format", "pt"}});
    for (const auto& ts : spec.tensors) dense->declare(ts.name, io::DType::F32, ts.shape);
  }
  auto write_dense = [&](const std::string& name, const std::vector<float>& v) {
    if (dense) dense->write(v.data(), v.size() * sizeof(float));
  };
  auto write_plain = [&](const std::string& name, const std::vector<float>& data) { writer.write_plain(name, data.data()); };

  // Globals before the layers (embeddings), then layers, then the rest, in plan order.
  size_t next_entry = 0;
  auto write_globals_until_layer = [&]() {
    while (next_entry < plan.entries.size()) {
      const auto& e = plan.entries[next_entry];
      const std::string name = std::holds_alternative<formats::PlainDecl>(e) ? std::get<formats::PlainDecl>(e).name
                                                                              : std::get<formats::LinearDecl>(e).base;
      if (layer_of(name) >= 0) return;
      if (vit_plan && name.rfind(kVitPrefix, 0) == 0) {  // --vit: one ViT tensor or linear, from its own source
        write_vit_entry(*vit_plan, e, writer, vit_linears);
        if (std::holds_alternative<formats::LinearDecl>(e) && o.on_vit_linear)
          o.on_vit_linear(int(vit_linears.size()), int(vit_plan->params.size()));
        ++next_entry;
        continue;
      }
      // In row chunks, each chunk's source pages released as soon as it is written: the embeddings
      // and lm_head are 1.2 GB each in f32 at Lance's size, and the peak RSS must not see them whole.
      writer.write_plain_rows(name, [&](int64_t b, int64_t e, float* out) {
        store.read_rows_f32(name, b, e, out);
        check_finite(name, out, size_t((e - b) * store.info(name).row_elems()), size_t(b * store.info(name).row_elems()));
        if (dense) dense->write(out, size_t((e - b) * store.info(name).row_elems()) * sizeof(float));
        store.drop_rows(name, b, e);
      });
      store.drop(name);
      ++next_entry;
    }
  };
  write_globals_until_layer();

  formats::FoldScaleMap fold_scales;  // evaluation aid (formats/fold_scales.h): 2 x (in + out) floats per folded linear
  const int layers = int(spec.layers.size());
  auto since = [](std::chrono::steady_clock::time_point a) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
  };
  report.setup_seconds = since(t0);
  for (int l = 0; l < layers; ++l) {
    const auto tl = std::chrono::steady_clock::now();
    LayerTensors t;
    for (const auto& name : plan.layer_tensors[size_t(l)]) {
      t[name] = store.read_f32(name);
      check_finite(name, t[name].data(), t[name].size());
    }
    // t holds the copy: the mapping's pages leave the resident set now (peak RSS), the cache keeps them.
    for (const auto& name : plan.layer_tensors[size_t(l)]) store.drop(name, /*evict_cache=*/false);
    LayerPlans plans;
    const LayerTensors original = dense ? t : LayerTensors{};
    if (search) search->search(l, t, plan.quantized, plans);

    // Quantize this layer's targets (after the folds); each target's weights in `t` are replaced by their
    // dequantized values (what the search runs next), so the layer is held once, not twice (peak RSS).
    std::map<std::string, quant::QTensor> qts;
    for (const auto& path : spec.layers[size_t(l)].paths)
      for (const auto& ls : path.linears) {
        if (!plan.quantized.at(ls.name)) continue;
        const LinearPlan* lp = plans.count(ls.name) ? &plans.at(ls.name) : nullptr;
        const std::vector<float>& w = t.at(ls.weight_name());
        const float* clip = lp && !lp->clip.empty() ? lp->clip.data() : nullptr;
        const quant::QuantParams& qp = linear_formats.params_for(ls.name);
        quant::QTensor qt = lp && lp->qtensor              ? *lp->qtensor  // rounded by the search itself (GPTQ)
                            : o.scheme.method == Method::Legacy ? legacy_quantize(w.data(), ls.out, ls.in, qp)
                                                                : quant::quantize(w.data(), ls.out, ls.in, qp, clip);
        std::vector<float> deq = qt.dequantize();
        LinearReport r;
        r.name = ls.name;
        r.format = format_label(qp, ls.in);
        r.calibrated = search && search->calibrated(ls);
        if (o.scheme.method == Method::Rtn) r.method = "rtn";
        else if (r.calibrated) r.method = o.scheme.method == Method::Awq       ? "awq"
                                          : o.scheme.method == Method::Gptq    ? "gptq"
                                          : o.scheme.method == Method::AwqGptq ? "awq-gptq"
                                          : o.scheme.method == Method::Proxy   ? "awq-proxy"
                                                                               : "legacy-awq";
        else r.method = o.scheme.method == Method::Legacy ? "legacy-rtn" : "rtn";
        report.partial_calibration = report.partial_calibration || (o.scheme.method != Method::Rtn && !r.calibrated);
        writer.set_linear_method(ls.name, r.method);
        r.weight_rel_error = rel_error(w, deq);
        if (lp) {
          r.alpha = lp->alpha;
          r.identity = lp->identity;
          r.output_rel_error = lp->output_rel_error;
          r.gptq_damp = lp->gptq_damp;
          r.gptq_rows = lp->gptq_rows;
          if (!lp->clip.empty()) {
            double s = 0;
            for (float c : lp->clip) s += c;
            r.mean_clip = s / double(lp->clip.size());
          }
        }
        report.linears.push_back(r);
        t[ls.weight_name()] = std::move(deq);  // `w` is not used again
        qts.emplace(ls.name, std::move(qt));
        ++report.quantized_linears;
      }
    const LayerTensors& final_weights = t;  // the targets dequantized, the rest as searched (folded)
    // Write in plan order.
    while (next_entry < plan.entries.size()) {
      const auto& e = plan.entries[next_entry];
      if (auto* d = std::get_if<formats::LinearDecl>(&e)) {
        if (layer_of(d->base) != l) break;
        const std::string bias = d->has_bias ? d->base + ".bias" : "";
        writer.write_quantized(d->base, qts.at(d->base), d->has_bias ? t.at(bias).data() : nullptr);
      } else {
        const auto& pd = std::get<formats::PlainDecl>(e);
        if (layer_of(pd.name) != l) break;
        write_plain(pd.name, t.at(pd.name));
      }
      ++next_entry;
    }
    for (const auto& [name, lp] : plans)
      if (!lp.col_scale.empty() || !lp.row_scale.empty()) fold_scales[name] = {lp.col_scale, lp.row_scale};
    if (dense) write_dense_layer(spec, l, original, final_weights, plans, plan.layer_tensors[size_t(l)], write_dense);
    if (search) search->layer_done(l, final_weights, plans);
    for (const auto& name : plan.layer_tensors[size_t(l)]) store.drop(name);
    report.layer_seconds.push_back(since(tl));
    if (o.on_layer) o.on_layer(l + 1, layers);
  }
  for (const auto& [base, q] : plan.quantized) report.kept_linears += !q;
  write_globals_until_layer();
  if (next_entry != plan.entries.size()) fail(o.out_dir, "internal: plan not fully written");
  // What the checkpoint records about its making (lance-quant-v1 meta; every format's lance-quant.json).
  json methods = json::object();
  for (const auto& l : report.linears) methods[l.method] = methods.value(l.method, 0) + 1;
  const json provenance = {{"scheme", o.scheme.name},
                           {"tasks_calibrated", report.tasks_calibrated},
                           {"partial_calibration", report.partial_calibration},
                           {"linears_by_method", methods}};
  writer.merge_extra_meta(provenance);
  writer.finish();
  formats::write_fold_scales(temp.path().string(), fold_scales);
  if (bit_plan) write_bit_plan(temp.path().string(), *bit_plan);
  copy_side_files(o.model_dir, temp.path());
  if (vit_plan) {
    record_vision_config(*vit_plan, temp.path().string());
    report.vit = vit_quantization_json(*vit_plan, &vit_linears);
    uint64_t vit_bytes = 0;
    const io::SafetensorsFile written(writer.weights_path());
    for (const auto& t : written.tensors())
      if (t.name.rfind(kVitPrefix, 0) == 0) vit_bytes += t.nbytes();
    report.vit["output_bytes"] = vit_bytes;
  }
  if (dense) {
    dense->finish();
    copy_side_files(o.model_dir, dense_dir->path());
  }
  for (const auto& e : fs::recursive_directory_iterator(temp.path()))
    if (e.is_regular_file()) report.output_bytes += e.file_size();
  json marker = provenance;
  marker["format"] = report.format;
  marker["calibration"] = {{"rows_per_layer", {{"und", report.calib_rows_und}, {"gen", report.calib_rows_gen}}},
                           {"tokens", {{"und", report.calib_tokens_und}, {"gen", report.calib_tokens_gen}}}};
  json per_linear = json::object();
  for (const auto& l : report.linears) per_linear[l.name] = {{"format", l.format}, {"method", l.method}};
  marker["linears"] = per_linear;
  if (vit_plan) {
    json v = report.vit;
    v.erase("linears");
    marker["vit"] = v;
  }
  if (dense_dir) dense_dir->commit(json{{"source", "quantize --dense-out"}, {"scheme", o.scheme.name}}.dump());
  temp.commit(marker.dump());
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

json QuantizeReport::to_json() const {
  json j = {{"scheme", scheme}, {"format", format}, {"out", out_dir}, {"quantized_linears", quantized_linears},
            {"kept_linears", kept_linears}, {"output_bytes", output_bytes}, {"seconds", seconds},
            {"calib_rows_per_layer", {{"und", calib_rows_und}, {"gen", calib_rows_gen}}},
            {"calib_tokens", {{"und", calib_tokens_und}, {"gen", calib_tokens_gen}}},
            {"tasks_calibrated", tasks_calibrated}, {"partial_calibration", partial_calibration}};
  json lin = json::array();
  for (const auto& l : linears) {
    json e = {{"name", l.name}, {"format", l.format}, {"method", l.method}, {"weight_rel_error", l.weight_rel_error}};
    if (l.method != "rtn" || partial_calibration) e["calibrated"] = l.calibrated;
    if (l.alpha >= 0) e["alpha"] = l.alpha, e["identity"] = l.identity;
    if (l.mean_clip < 1.0) e["mean_clip"] = l.mean_clip;
    if (l.output_rel_error >= 0) e["output_rel_error"] = l.output_rel_error;
    if (l.gptq_damp >= 0) e["gptq"] = {{"damp", l.gptq_damp}, {"rows", l.gptq_rows}};
    lin.push_back(e);
  }
  j["linears"] = lin;
  if (!bit_plan.is_null()) j["bit_plan"] = bit_plan;
  if (!vit.is_null()) j["vit"] = vit;
  j["setup_seconds"] = setup_seconds;
  j["layer_seconds"] = layer_seconds;
  return j;
}

// ---- folds ----------------------------------------------------------------------------------

void scale_columns(float* w, int64_t out, int64_t in, const std::vector<float>& s, const model::FusionPair& f) {
  for (int64_t r = 0; r < out; ++r)
    for (int64_t c = 0; c < in; ++c) w[r * in + c] *= s[size_t(f.scale_index(c))];
}

void divide_rows(float* w, int64_t in, const std::vector<float>& s, float* bias) {
  for (size_t r = 0; r < s.size(); ++r) {
    for (int64_t c = 0; c < in; ++c) w[int64_t(r) * in + c] /= s[r];
    if (bias) bias[r] /= s[r];
  }
}

void divide_vector(float* v, const std::vector<float>& s) {
  for (size_t i = 0; i < s.size(); ++i) v[i] /= s[i];
}

void apply_fold(const model::ModelSpec& spec, const model::FusionPair& f, const std::vector<float>& s, LayerTensors& t,
                LayerPlans& plans) {
  const model::PathLayerSpec& names = spec.layers[size_t(f.layer)].path(f.path);
  for (auto k : f.target_kinds) {
    const model::LinearSpec& ls = names.linear(k);
    scale_columns(t.at(ls.weight_name()).data(), ls.out, ls.in, s, f);
    std::vector<float>& cs = plans[ls.name].col_scale;
    if (cs.empty()) cs.assign(size_t(ls.in), 1.0f);
    for (int64_t c = 0; c < ls.in; ++c) cs[size_t(c)] *= s[size_t(f.scale_index(c))];
  }
  if (f.kind == model::FusionKind::NormToLinears) {
    divide_vector(t.at(f.prev_tensors.front()).data(), s);
    return;
  }
  const model::LinearSpec& prev = names.linear(f.kind == model::FusionKind::VToO ? model::LinearKind::V : model::LinearKind::Up);
  divide_rows(t.at(prev.weight_name()).data(), prev.in, s, prev.has_bias ? t.at(prev.bias_name()).data() : nullptr);
  std::vector<float>& rs = plans[prev.name].row_scale;
  if (rs.empty()) rs.assign(size_t(prev.out), 1.0f);
  for (int64_t r = 0; r < prev.out; ++r) rs[size_t(r)] /= s[size_t(r)];
}

}  // namespace lq::pipeline
