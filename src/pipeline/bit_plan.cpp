#include "pipeline/bit_plan.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "io/error.h"
#include "formats/checkpoint.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "pipeline/forward_linears.h"
#include "pipeline/gptq_layer.h"
#include "quant/gptq.h"
#include "quant/linalg.h"

namespace lq::pipeline {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::vector<BitCandidate> bit_candidates(const SchemeChoice& scheme, bool sym) {
  const int64_t g = scheme.params.group > 0 ? scheme.params.group : 128;
  std::vector<std::string> labels;
  if (scheme.params.scheme == quant::Scheme::NvFp4) labels = {"nvfp4", "int8:g128", "bf16"};
  else if (scheme.params.scheme == quant::Scheme::Int8Sym) labels = {"int8:g128", "bf16"};
  else labels = {"int4:g128", "int4:g64", "int4:g32", "int8:g128", "bf16"};
  std::vector<BitCandidate> out;
  for (const auto& l : labels) out.push_back({l, parse_format_spec(l, g, sym, "--bpw")});
  return out;
}

uint64_t linear_bits(const FormatSpec& f, int64_t out, int64_t in) {
  if (f.keep) return 16ull * uint64_t(out * in);
  return 8ull * quant::payload_bytes(f.params.scheme, out, in, f.params.effective_group(in), f.params.scale_dtype);
}

uint64_t BitPlan::total_bits() const {
  uint64_t b = 0;
  for (const auto& l : linears) b += l.bits[size_t(l.chosen)];
  return b;
}
int64_t BitPlan::total_weights() const {
  int64_t n = 0;
  for (const auto& l : linears) n += l.weights;
  return n;
}
double BitPlan::average_bpw() const {
  const int64_t n = total_weights();
  return n ? double(total_bits()) / double(n) : 0.0;
}

namespace {
// Whether `bits` fits the budget: bits <= budget * weights, decided in long double (exact for any
// realistic size: 5.5e9 weights x 16 bits < 2^63, budgets given to a few decimals).
bool fits(uint64_t bits, double budget, int64_t weights) {
  return static_cast<long double>(bits) <= static_cast<long double>(budget) * static_cast<long double>(weights);
}
}  // namespace

void solve_bit_plan(BitPlan& plan) {
  const size_t nc = plan.candidates.size();
  int keep_index = -1;
  for (size_t c = 0; c < nc; ++c)
    if (plan.candidates[c].format.keep) keep_index = int(c);
  uint64_t total = 0;
  for (auto& l : plan.linears) {
    if (l.bits.size() != nc || l.sensitivity.size() != nc) fail(l.name, "internal: bit plan entry has the wrong candidate count");
    if (l.fixed) {
      if (keep_index < 0) fail(l.name, "kept in bf16 but bf16 is not a candidate");
      l.chosen = keep_index;
    } else {
      size_t best = 0;
      for (size_t c = 1; c < nc; ++c)
        if (l.bits[c] < l.bits[best] || (l.bits[c] == l.bits[best] && l.sensitivity[c] < l.sensitivity[best])) best = c;
      l.chosen = int(best);
    }
    total += l.bits[size_t(l.chosen)];
  }
  const int64_t weights = plan.total_weights();
  if (!fits(total, plan.budget_bpw, weights)) {
    char b[160];
    std::snprintf(b, sizeof b, "%.4f bits per weight is below the cheapest plan (%.4f: every linear in its smallest format)",
                  plan.budget_bpw, double(total) / double(weights));
    fail("--bpw", b);
  }
  // Multiple-choice knapsack over the bits above the cheapest plan, by dynamic programming on that
  // spare budget in kUnits steps (each choice's extra bits rounded UP to whole steps, so every plan the
  // DP finds fits exactly); then any upgrade that still fits with the exact counts, best drop per bit first.
  constexpr int64_t kUnits = 50000;
  const long double cap_bits = static_cast<long double>(plan.budget_bpw) * weights - static_cast<long double>(total);
  const long double unit = std::max<long double>(cap_bits / kUnits, 1.0L);
  const int64_t cap = std::min<int64_t>(kUnits, int64_t(cap_bits / unit));
  std::vector<size_t> free;
  for (size_t li = 0; li < plan.linears.size(); ++li)
    if (!plan.linears[li].fixed) free.push_back(li);
  if (cap > 0 && !free.empty()) {
    std::vector<double> dp(size_t(cap + 1), 0.0), next(size_t(cap + 1));
    std::vector<uint8_t> choice(free.size() * size_t(cap + 1));
    for (size_t k = 0; k < free.size(); ++k) {
      const BitPlanLinear& l = plan.linears[free[k]];
      const uint64_t b0 = l.bits[size_t(l.chosen)];
      std::fill(next.begin(), next.end(), INFINITY);
      for (size_t c = 0; c < nc; ++c) {
        if (l.bits[c] < b0) continue;
        const long double extra = static_cast<long double>(l.bits[c] - b0) / unit;
        const int64_t w = int64_t(std::ceil(static_cast<double>(extra)));
        if (w > cap) continue;
        for (int64_t x = w; x <= cap; ++x) {
          const double v = dp[size_t(x - w)] + l.sensitivity[c];
          if (v < next[size_t(x)]) next[size_t(x)] = v, choice[k * size_t(cap + 1) + size_t(x)] = uint8_t(c);
        }
      }
      dp.swap(next);
    }
    int64_t x = cap;
    for (size_t k = free.size(); k-- > 0;) {
      BitPlanLinear& l = plan.linears[free[k]];
      const uint64_t b0 = l.bits[size_t(l.chosen)];
      const size_t c = choice[k * size_t(cap + 1) + size_t(x)];
      x -= int64_t(std::ceil(static_cast<double>(static_cast<long double>(l.bits[c] - b0) / unit)));
      total = total - b0 + l.bits[c];
      l.chosen = int(c);
    }
  }
  for (;;) {
    double best_ratio = 0;
    size_t best_l = 0, best_c = 0;
    for (size_t li : free) {
      const BitPlanLinear& l = plan.linears[li];
      const size_t cur = size_t(l.chosen);
      for (size_t c = 0; c < nc; ++c) {
        if (l.bits[c] <= l.bits[cur] || !(l.sensitivity[c] < l.sensitivity[cur])) continue;
        if (!fits(total - l.bits[cur] + l.bits[c], plan.budget_bpw, weights)) continue;
        const double ratio = (l.sensitivity[cur] - l.sensitivity[c]) / double(l.bits[c] - l.bits[cur]);
        if (ratio > best_ratio) best_ratio = ratio, best_l = li, best_c = c;
      }
    }
    if (best_ratio <= 0) break;
    BitPlanLinear& l = plan.linears[best_l];
    total = total - l.bits[size_t(l.chosen)] + l.bits[best_c];
    l.chosen = int(best_c);
  }
  if (!fits(total, plan.budget_bpw, weights)) fail("--bpw", "internal: the plan exceeds the budget");
}

json BitPlan::to_json() const {
  json c = json::array();
  for (const auto& x : candidates) c.push_back(x.label);
  json ls = json::array();
  for (const auto& l : linears) {
    json s = json::object(), b = json::object();
    for (size_t i = 0; i < candidates.size(); ++i) {
      s[candidates[i].label] = l.sensitivity[i];
      b[candidates[i].label] = l.bits[i];
    }
    ls.push_back({{"name", l.name}, {"weights", l.weights}, {"format", candidates[size_t(l.chosen)].label},
                  {"bits_per_weight", double(l.bits[size_t(l.chosen)]) / double(l.weights)}, {"fixed", l.fixed},
                  {"sensitivity", s}, {"bits", b}});
  }
  return {{"budget_bpw", budget_bpw},
          {"average_bpw", average_bpw()},
          {"total_bits", total_bits()},
          {"total_weights", total_weights()},
          {"counted", "per target linear: codes + bf16 group scales + 4-bit zero points (asymmetric INT4) + NVFP4 E4M3 block "
                      "scales and fp32 tensor scale (QTensor::payload_bytes); bf16 linears 16 bits per weight; biases, norms, "
                      "embeddings and lm_head not counted"},
          {"candidates", c},
          {"linears", ls}};
}

BitPlan BitPlan::from_json(const json& j, const std::string& where) {
  try {
    BitPlan p;
    p.budget_bpw = j.at("budget_bpw").get<double>();
    std::map<std::string, size_t> index;
    for (const auto& c : j.at("candidates")) {
      const std::string label = c.get<std::string>();
      index[label] = p.candidates.size();
      p.candidates.push_back({label, parse_format_spec(label, 128, false, where)});
    }
    for (const auto& e : j.at("linears")) {
      BitPlanLinear l;
      l.name = e.at("name").get<std::string>();
      l.weights = e.at("weights").get<int64_t>();
      l.fixed = e.value("fixed", false);
      l.bits.resize(p.candidates.size());
      l.sensitivity.resize(p.candidates.size());
      for (const auto& [label, i] : index) {
        l.bits[i] = e.at("bits").at(label).get<uint64_t>();
        l.sensitivity[i] = e.at("sensitivity").at(label).get<double>();
      }
      const std::string f = e.at("format").get<std::string>();
      if (!index.count(f)) fail(where, "linear " + l.name + " has format '" + f + "', not one of the candidates");
      l.chosen = int(index.at(f));
      p.linears.push_back(std::move(l));
    }
    return p;
  } catch (const json::exception& e) {
    fail(where, std::string("malformed bit plan: ") + e.what());
  }
}

double target_bits_per_weight(const std::string& quant_dir, const std::string& model_dir) {
  const model::ModelConfig cfg = model::load_config(model_dir);
  io::TensorStore store(model_dir);
  const model::ModelSpec spec = model::build_spec(cfg, store);
  const formats::CheckpointReader reader(quant_dir);
  std::map<std::string, const formats::LinearDecl*> decl;
  for (const auto& d : reader.quantized_linears()) decl[d.base] = &d;
  uint64_t bits = 0;
  int64_t weights = 0;
  for (const auto& ls : spec.linears) {
    weights += ls.numel();
    const auto it = decl.find(ls.name);
    bits += it == decl.end() ? 16ull * uint64_t(ls.numel())
                             : 8ull * quant::payload_bytes(it->second->scheme, ls.out, ls.in, it->second->group, it->second->scale_dtype);
  }
  return weights ? double(bits) / double(weights) : 0.0;
}

void write_bit_plan(const std::string& dir, const BitPlan& plan) {
  std::ofstream f(fs::path(dir) / kBitPlanFile);
  f << plan.to_json().dump(1) << "\n";
  if (!f) fail((fs::path(dir) / kBitPlanFile).string(), "cannot write");
}

std::optional<BitPlan> read_bit_plan(const std::string& dir) {
  const fs::path p = fs::path(dir) / kBitPlanFile;
  if (!fs::exists(p)) return std::nullopt;
  std::ifstream f(p);
  json j;
  try {
    j = json::parse(f);
  } catch (const json::exception& e) {
    fail(p.string(), std::string("invalid JSON: ") + e.what());
  }
  return BitPlan::from_json(j, p.string());
}

// ---- sensitivity ----------------------------------------------------------------------------

namespace {

// tr(dW H dW^T) through the GEMM: Y = dW H (H symmetric), then sum dW * Y.
double output_error(const std::vector<float>& w, const std::vector<float>& wq, int64_t out, int64_t in, const std::vector<float>& h) {
  std::vector<float> d(w.size()), y(w.size(), 0.0f);
  for (size_t i = 0; i < w.size(); ++i) d[i] = w[i] - wq[i];
  quant::linalg::gemm_nt(out, in, in, 1.0f, d.data(), in, h.data(), in, y.data(), in);
  double s = 0;
  for (size_t i = 0; i < d.size(); ++i) s += double(d[i]) * y[i];
  return std::max(s, 0.0);
}

}  // namespace

BitPlan make_bit_plan(const QuantizeOptions& o, const model::ModelSpec& spec, double budget_bpw) {
  BitPlan plan;
  plan.budget_bpw = budget_bpw;
  plan.candidates = bit_candidates(o.scheme, o.scheme.params.scheme == quant::Scheme::Int4Sym);
  for (const auto& ls : spec.linears) {
    BitPlanLinear l;
    l.name = ls.name;
    l.weights = ls.numel();
    for (const auto& pat : o.keep) l.fixed = l.fixed || matches_pattern(ls.name, pat);
    for (const auto& c : plan.candidates) l.bits.push_back(linear_bits(c.format, ls.out, ls.in));
    l.sensitivity.assign(plan.candidates.size(), 0.0);
    plan.linears.push_back(std::move(l));
  }
  solve_bit_plan(plan);  // refuses a budget below the cheapest plan now, before any slow work
  return plan;
}

void measure_bit_plan(BitPlan& plan, const QuantizeOptions& o, const model::ModelSpec& spec, CalibRows rows,
                      fwd::Engine& engine, const std::function<void(int, int)>& progress) {
  size_t probe = 0;  // the format whose layer-output effect is measured: the scheme's own at g64 when offered
  for (size_t c = 0; c < plan.candidates.size(); ++c)
    if (plan.candidates[c].label == "int4:g64" || plan.candidates[c].label == "nvfp4") probe = c;
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < plan.linears.size(); ++i) index[plan.linears[i].name] = i;
  // Per linear: e(l, f) per candidate and d_p(l) of the probe.
  std::vector<std::vector<double>> err(plan.linears.size());
  std::vector<std::array<double, 2>> dlayer(plan.linears.size(), {0.0, 0.0});
  const bool gptq = method_uses_gptq(o.scheme.method);
  const LinearFormats formats(spec, o);
  io::TensorStore store(o.model_dir);
  const int layers = int(spec.layers.size());
  for (int layer = 0; layer < layers; ++layer) {
    const model::LayerSpec& lspec = spec.layers[size_t(layer)];
    std::map<std::string, std::vector<float>> w, bias;
    for (const auto& path : lspec.paths)
      for (const auto& ls : path.linears) {
        w[ls.name] = store.read_f32(ls.weight_name());
        if (ls.has_bias) bias[ls.name] = store.read_f32(ls.bias_name());
      }
    auto install_fp = [&](const model::LinearSpec& ls) {
      engine.replace_linear({layer, ls.path, ls.kind},
                            std::make_unique<ScaledDense>(ls.out, ls.in, w.at(ls.name).data(),
                                                          ls.has_bias ? bias.at(ls.name) : std::vector<float>{}, std::vector<float>{}));
    };
    for (const auto& path : lspec.paths)
      for (const auto& ls : path.linears) install_fp(ls);
    std::vector<std::vector<float>> ref(rows.samples.size());
    for (size_t i = 0; i < rows.samples.size(); ++i) {
      ref[i] = rows.states[i];
      engine.forward_layer(layer, rows.samples[i], ref[i].data());
    }
    const GptqLayerInputs in{engine, spec, formats, rows.samples, rows.states};
    auto wanted = [&](const model::LinearSpec& ls) { return !plan.linears[index.at(ls.name)].fixed; };
    visit_layer_hessians(layer, in, wanted, [&](const std::vector<const model::LinearSpec*>& targets, std::vector<float>& h, int64_t n) {
      for (const model::LinearSpec* lsp : targets) {
        const model::LinearSpec& ls = *lsp;
        const size_t li = index.at(ls.name);
        const std::vector<float>& wl = w.at(ls.name);
        err[li].assign(plan.candidates.size(), 0.0);
        std::vector<float> probe_wq;
        for (size_t c = 0; c < plan.candidates.size(); ++c) {
          const FormatSpec& f = plan.candidates[c].format;
          if (f.keep) continue;
          std::vector<float> wq(wl.size());
          if (gptq && n > 0) {
            std::vector<float> hc = h;
            wq = quant::gptq_quantize(wl.data(), ls.out, ls.in, f.params, hc, o.gptq.gptq).dequantize();
          } else {
            quant::fake_quantize(wl.data(), ls.out, ls.in, f.params, wq.data());
          }
          err[li][c] = output_error(wl, wq, ls.out, ls.in, h);
          if (c == probe) probe_wq = std::move(wq);
        }
        // The probe's effect on the layer output, per path (other linears full precision).
        engine.replace_linear({layer, ls.path, ls.kind},
                              std::make_unique<ScaledDense>(ls.out, ls.in, std::move(probe_wq),
                                                            ls.has_bias ? bias.at(ls.name) : std::vector<float>{}, std::vector<float>{}));
        std::vector<float> x;
        const int64_t hidden = engine.config().hidden_size;
        for (size_t i = 0; i < rows.samples.size(); ++i) {
          const fwd::Chunk& c = rows.samples[i];
          if (std::find(c.paths.begin(), c.paths.end(), ls.path) == c.paths.end()) continue;  // unaffected
          x = rows.states[i];
          engine.forward_layer(layer, c, x.data());
          for (int64_t r = 0; r < c.rows(); ++r) {
            double s = 0;
            for (int64_t k = 0; k < hidden; ++k) {
              const double d = double(x[size_t(r * hidden + k)]) - ref[i][size_t(r * hidden + k)];
              s += d * d;
            }
            dlayer[li][size_t(c.paths[size_t(r)])] += s;
          }
        }
        install_fp(ls);
      }
    });
    rows.states = std::move(ref);
    for (const auto& path : lspec.paths)
      for (const auto& ls : path.linears)
        engine.replace_linear({layer, ls.path, ls.kind}, std::make_unique<ReleasedLinear>(ls.out, ls.in, ls.name));
    engine.drop_layer_pages(layer);
    if (progress) progress(layer + 1, layers);
  }
  // F_p: energy of the final hidden states of each path's rows.
  std::array<double, 2> energy{0.0, 0.0};
  const int64_t hidden = engine.config().hidden_size;
  for (size_t i = 0; i < rows.samples.size(); ++i)
    for (int64_t r = 0; r < rows.samples[i].rows(); ++r) {
      double s = 0;
      for (int64_t k = 0; k < hidden; ++k) s += double(rows.states[i][size_t(r * hidden + k)]) * rows.states[i][size_t(r * hidden + k)];
      energy[size_t(rows.samples[i].paths[size_t(r)])] += s;
    }
  for (size_t li = 0; li < plan.linears.size(); ++li) {
    BitPlanLinear& l = plan.linears[li];
    if (l.fixed || err[li].empty()) continue;
    double effect = 0;
    for (int p = 0; p < 2; ++p)
      if (energy[size_t(p)] > 0) effect += dlayer[li][size_t(p)] / energy[size_t(p)];
    const double e0 = err[li][probe];
    for (size_t c = 0; c < plan.candidates.size(); ++c)
      l.sensitivity[c] = plan.candidates[c].format.keep ? 0.0 : e0 > 0 ? effect * err[li][c] / e0 : effect;
  }
  solve_bit_plan(plan);
}

}  // namespace lq::pipeline
