#include "pipeline/vit_quantize.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "io/error.h"
#include "io/json_fields.h"
#include "io/model_files.h"
#include "pipeline/quantize.h"
#include "vit/vit.h"

namespace lq::pipeline {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// A linear's weight among the ViT's tensors (its base name: the name without ".weight").
bool is_linear_weight(const vit::TensorShape& t) { return t.shape.size() >= 2 && t.name.ends_with(".weight"); }

void check_finite(const std::string& name, const float* v, size_t n, size_t offset) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i]))
      fail(name, std::string("holds a non-finite value (") + (std::isnan(v[i]) ? "NaN" : "Inf") + ") at element " +
                     std::to_string(offset + i) + "; the ViT is corrupt");
}

}  // namespace

VitQuantPlan plan_vit_quantization(const std::string& model_dir, const std::string& vit_dir, const model::ModelSpec& spec,
                                   io::DType kept_dtype, const std::vector<std::string>& keep) {
  VitQuantPlan p;
  if (vit_dir.empty()) {
    if (!spec.has_vit)
      fail("quantize --vit", model_dir + " holds no ViT (no vit_model.* tensors): give it with --vit-dir DIR "
                                         "(vit.safetensors + config.json)");
    p.source = vit::locate_vit(model_dir);
    p.source_is_model = true;
  } else {
    if (spec.has_vit)
      fail("quantize --vit --vit-dir " + vit_dir, model_dir + " holds its own ViT (vit_model.* tensors): --vit quantizes "
                                                  "one of them; drop --vit-dir to quantize the model's own");
    p.source = vit::locate_vit(vit_dir);
    if (io::model_file(model_dir, "llm_config.json").empty())
      fail("quantize --vit --vit-dir " + vit_dir, model_dir + " has no llm_config.json to record the ViT's vision_config in");
  }
  const std::string where = p.source.weights;
  if (!p.source.checkpoint_dir.empty() && vit::model_has_quantized_vit(p.source.checkpoint_dir))
    fail(p.source.checkpoint_dir, "its ViT is already quantized; quantize --vit needs the full-precision ViT");
  p.store = std::make_unique<io::TensorStore>(p.source.weights);
  vit::check_vit_tensors(p.source.config, *p.store, p.source.prefix, where);

  std::set<std::string> biases_of_quantized;
  std::vector<int> keep_hits(keep.size(), 0);
  for (const auto& t : vit::vit_tensors(p.source.config)) {
    const auto& info = p.store->info(p.source.prefix + t.name);
    p.source_bytes += info.nbytes();
    if (!is_linear_weight(t)) continue;
    const std::string base = t.name.substr(0, t.name.size() - 7);
    const int64_t in = info.row_elems();
    const auto params = vit::rtn_int4_params(base, in);
    const std::string* kept_by = nullptr;
    for (size_t i = 0; i < keep.size(); ++i)
      if (matches_pattern(kVitPrefix + base, keep[i])) {
        ++keep_hits[i];
        if (!kept_by) kept_by = &keep[i];
      }
    if (params && kept_by) {
      p.kept_dense.push_back({{"name", kVitPrefix + base}, {"reason", "--keep " + *kept_by}});
      ++p.kept_chosen;
      continue;
    }
    if (!params) {
      if (base != "patch_embed.proj") ++p.kept_narrow;
      p.kept_dense.push_back({{"name", kVitPrefix + base},
                              {"reason", base == "patch_embed.proj"
                                             ? "the patch embedding is never quantized"
                                             : "input width " + std::to_string(in) + " is not a multiple of 16, the 4-bit kernels' step"}});
      continue;
    }
    formats::LinearDecl d;
    d.base = kVitPrefix + base;
    d.scheme = params->scheme;
    d.out = t.shape[0];
    d.in = in;
    d.group = params->effective_group(in);
    d.scale_dtype = params->scale_dtype;
    d.has_bias = p.store->has(p.source.prefix + base + ".bias");
    if (d.has_bias) biases_of_quantized.insert(base + ".bias");
    p.params[d.base] = *params;
    ++p.groups[d.group];
    p.entries.push_back(d);
  }
  for (size_t i = 0; i < keep.size(); ++i)
    if (keep_hits[i] == 0)
      fail("--keep " + keep[i], "matches no linear of the ViT (ViT patterns match the output names, e.g. " + std::string(kVitPrefix) +
                                    "blocks.0.attn.qkv or " + kVitPrefix + "merger.*)");
  // Everything else as it is, in the ViT's tensor order (the quantized linears' entries stay in place).
  std::vector<formats::PlanEntry> ordered;
  size_t next_linear = 0;
  for (const auto& t : vit::vit_tensors(p.source.config)) {
    if (biases_of_quantized.count(t.name)) continue;
    if (is_linear_weight(t) && p.params.count(kVitPrefix + t.name.substr(0, t.name.size() - 7))) {
      ordered.push_back(p.entries[next_linear++]);
      continue;
    }
    ordered.push_back(formats::PlainDecl{kVitPrefix + t.name, t.shape, kept_dtype});
  }
  p.entries = std::move(ordered);
  return p;
}

void write_vit_entry(const VitQuantPlan& plan, const formats::PlanEntry& entry, formats::CheckpointWriter& writer,
                     std::vector<VitLinearReport>& report) {
  const io::TensorStore& st = *plan.store;
  const std::string& sp = plan.source.prefix;
  auto source_name = [&](const std::string& out_name) { return sp + out_name.substr(std::string(kVitPrefix).size()); };
  if (const auto* d = std::get_if<formats::LinearDecl>(&entry)) {
    const std::string w_name = source_name(d->base) + ".weight", b_name = source_name(d->base) + ".bias";
    const std::vector<float> w = st.read_f32(w_name);
    check_finite(w_name, w.data(), w.size(), 0);
    std::vector<float> bias;
    if (d->has_bias) {
      bias = st.read_f32(b_name);
      check_finite(b_name, bias.data(), bias.size(), 0);
    }
    const quant::QuantParams& qp = plan.params.at(d->base);
    const quant::QTensor q = vit::rtn_int4_quantize(w.data(), d->out, d->in, qp);
    writer.write_quantized(d->base, q, d->has_bias ? bias.data() : nullptr);
    const std::vector<float> deq = q.dequantize();
    double num = 0, den = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      const double e = double(deq[i]) - w[i];
      num += e * e;
      den += double(w[i]) * w[i];
    }
    report.push_back({d->base, format_label(qp, d->in), den > 0 ? std::sqrt(num / den) : std::sqrt(num)});
    st.drop(w_name);
    if (d->has_bias) st.drop(b_name);
    return;
  }
  const auto& pd = std::get<formats::PlainDecl>(entry);
  const std::string name = source_name(pd.name);
  const int64_t row = st.info(name).row_elems();
  writer.write_plain_rows(pd.name, [&](int64_t b, int64_t e, float* out) {
    st.read_rows_f32(name, b, e, out);
    check_finite(name, out, size_t((e - b) * row), size_t(b * row));
    st.drop_rows(name, b, e);
  });
  st.drop(name);
}

json vit_quantization_json(const VitQuantPlan& plan, const std::vector<VitLinearReport>* linears) {
  json groups = json::object();
  int quantized = 0;
  for (const auto& [g, n] : plan.groups) groups[std::to_string(g)] = n, quantized += n;
  json j = {{"scheme", "rtn-int4"},
            {"number_format", "int4_asym"},
            {"scale_dtype", "bf16"},
            {"prefix", kVitPrefix},
            {"source", plan.source_is_model ? "model (vit_model.*)" : plan.source.weights},
            {"config_source", plan.source.config.source},
            {"quantized_linears", quantized},
            {"groups", groups},
            {"kept_dense", plan.kept_dense},
            {"summary", vit::rtn_int4_summary(plan.groups, plan.kept_narrow, plan.kept_chosen)},
            {"source_bytes", plan.source_bytes}};
  if (linears) {
    json a = json::array();
    double mean = 0, worst = 0;
    for (const auto& l : *linears) {
      a.push_back({{"name", l.name}, {"format", l.format}, {"weight_rel_error", l.weight_rel_error}});
      mean += l.weight_rel_error, worst = std::max(worst, l.weight_rel_error);
    }
    if (!linears->empty()) j["weight_rel_error"] = {{"mean", mean / double(linears->size())}, {"worst", worst}};
    j["linears"] = a;
  }
  return j;
}

void record_vision_config(const VitQuantPlan& plan, const std::string& out_dir) {
  const fs::path f = fs::path(out_dir) / "llm_config.json";
  if (!fs::exists(f)) return;  // (a model's own ViT without one: the tensor shapes give it, as in the source)
  json j = io::read_json_object(f.string());
  if (j.contains("vision_config") && j["vision_config"].is_object() && j["vision_config"].contains("depth")) return;
  j["vision_config"] = plan.source.config.to_json();
  const fs::path tmp = f.string() + ".tmp";
  {
    std::ofstream o(tmp);
    o << j.dump(2) << "\n";
    if (!o) fail(f.string(), "cannot write the vision_config");
  }
  fs::rename(tmp, f);
}

}  // namespace lq::pipeline
