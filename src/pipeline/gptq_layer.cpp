#include "pipeline/gptq_layer.h"

#include <algorithm>
#include <array>
#include <memory>

#include "io/error.h"
#include "pipeline/forward_linears.h"
#include "quant/linalg.h"

namespace lq::pipeline {

namespace {

using model::LinearKind;
using model::Path;

// The linear whose input the others of a step share (k, v read q's input; up reads gate's).
LinearKind input_of(LinearKind k) {
  if (k == LinearKind::K || k == LinearKind::V) return LinearKind::Q;
  if (k == LinearKind::Up) return LinearKind::Gate;
  return k;
}

using Key = std::pair<Path, LinearKind>;

// Accumulates X^T X of the wanted (path, input) pairs of one layer from the rows the engine routes.
class HessianCapture final : public fwd::ActivationObserver {
 public:
  explicit HessianCapture(int layer) : layer_(layer) {}
  void want(Key k, int64_t in) { acc_.emplace(k, quant::linalg::XtxAccumulator(in)); }
  void observe(const fwd::LinearId& id, const float* x, int64_t n, int64_t in) override {
    if (id.layer != layer_) return;
    const auto it = acc_.find({id.path, id.kind});
    if (it != acc_.end()) it->second.add(x, n);
  }
  quant::linalg::XtxAccumulator& at(Key k) { return acc_.at(k); }

 private:
  int layer_;
  std::map<Key, quant::linalg::XtxAccumulator> acc_;
};

void install(fwd::Engine& e, int layer, const model::LinearSpec& ls, std::unique_ptr<ScaledDense> w) {
  e.replace_linear({layer, ls.path, ls.kind}, std::move(w));
}

}  // namespace

void visit_layer_hessians(int layer, const GptqLayerInputs& in, const std::function<bool(const model::LinearSpec&)>& wanted,
                          const HessianVisitor& visit) {
  const model::LayerSpec& lspec = in.spec.layers[size_t(layer)];
  static const std::array<std::vector<LinearKind>, 4> kSteps = {
      std::vector<LinearKind>{LinearKind::Q, LinearKind::K, LinearKind::V}, std::vector<LinearKind>{LinearKind::O},
      std::vector<LinearKind>{LinearKind::Gate, LinearKind::Up}, std::vector<LinearKind>{LinearKind::Down}};
  constexpr uint64_t kMaxHessianBytesPerPass = 512ull << 20;
  for (const auto& step : kSteps) {
    const bool attention_only = step.front() == LinearKind::Q || step.front() == LinearKind::O;
    std::vector<Key> needed;
    uint64_t bytes = 0;
    for (const auto& path : lspec.paths) {
      bool any = false;
      for (auto k : step) any = any || wanted(path.linear(k));
      if (!any) continue;
      needed.push_back({path.linears[0].path, input_of(step.front())});
      const int64_t n_in = path.linear(step.front()).in;
      bytes += uint64_t(n_in * n_in) * 4;
    }
    std::vector<std::vector<Key>> passes;
    if (bytes <= kMaxHessianBytesPerPass) passes.push_back(needed);
    else
      for (const auto& k : needed) passes.push_back({k});
    for (const auto& pass : passes) {
      if (pass.empty()) continue;
      HessianCapture cap(layer);
      for (const auto& k : pass) cap.want(k, lspec.path(k.first).linear(k.second).in);
      {
        ObserverScope scope(in.engine, &cap);
        std::vector<float> scratch;
        for (size_t i = 0; i < in.samples.size(); ++i) {
          const fwd::Chunk& c = in.samples[i];
          bool has = false;
          for (const auto& k : pass) has = has || std::find(c.paths.begin(), c.paths.end(), k.first) != c.paths.end();
          if (!has) continue;
          if (attention_only) {
            in.engine.attention_output(layer, c, in.states[i].data(), scratch);
          } else {
            scratch = in.states[i];
            in.engine.forward_layer(layer, c, scratch.data());
          }
        }
      }
      for (const auto& k : pass) {
        const model::PathLayerSpec& names = lspec.path(k.first);
        std::vector<const model::LinearSpec*> targets;
        for (auto kind : step)
          if (wanted(names.linear(kind))) targets.push_back(&names.linear(kind));
        quant::linalg::XtxAccumulator& acc = cap.at(k);
        const int64_t rows = acc.rows();
        std::vector<float> h = acc.hessian();
        visit(targets, h, rows);
      }
    }
  }
}

void gptq_layer(int layer, const GptqLayerInputs& in, const LayerTensors& t, const std::map<std::string, bool>& quantized,
                const GptqSettings& settings, bool sequential, LayerPlans& plans) {
  const model::LayerSpec& lspec = in.spec.layers[size_t(layer)];
  auto input_scale = [&](const std::string& name) {
    const auto it = plans.find(name);
    return it == plans.end() ? std::vector<float>{} : it->second.input_scale;
  };
  auto bias_of = [&](const model::LinearSpec& ls) { return ls.has_bias ? t.at(ls.bias_name()) : std::vector<float>{}; };
  // The folded full-precision layer runs first.
  for (const auto& path : lspec.paths)
    for (const auto& ls : path.linears)
      install(in.engine, layer, ls,
              std::make_unique<ScaledDense>(ls.out, ls.in, t.at(ls.weight_name()).data(), bias_of(ls), input_scale(ls.name)));
  auto wanted = [&](const model::LinearSpec& ls) { return quantized.at(ls.name); };
  visit_layer_hessians(layer, in, wanted, [&](const std::vector<const model::LinearSpec*>& targets, std::vector<float>& h, int64_t rows) {
    const int64_t n_in = targets.front()->in;
    // A norm fold makes the linear multiply x / s: H of its input is diag(1/s) H diag(1/s).
    const std::vector<float> s = input_scale(targets.front()->name);
    if (!s.empty())
      for (int64_t i = 0; i < n_in; ++i)
        for (int64_t j = 0; j < n_in; ++j) h[size_t(i * n_in + j)] *= (1.0f / s[size_t(i)]) * (1.0f / s[size_t(j)]);
    for (size_t ti = 0; ti < targets.size(); ++ti) {
      const model::LinearSpec& ls = *targets[ti];
      const quant::QuantParams& qp = in.formats.params_for(ls.name);
      LinearPlan& plan = plans[ls.name];
      const std::vector<float>& w = t.at(ls.weight_name());
      const float* clip = settings.awq_clip && !plan.clip.empty() ? plan.clip.data() : nullptr;
      quant::QTensor q;
      if (rows == 0) {  // no calibration rows of this path: plain rounding
        q = quant::quantize(w.data(), ls.out, ls.in, qp, clip);
      } else {
        std::vector<float> hw = ti + 1 < targets.size() ? h : std::move(h);  // GPTQ consumes its H
        quant::GptqInfo info;
        q = quant::gptq_quantize(w.data(), ls.out, ls.in, qp, hw, settings.gptq, clip, &info);
        plan.gptq_damp = info.damp;
        plan.gptq_rows = rows;
      }
      if (sequential)
        install(in.engine, layer, ls, std::make_unique<ScaledDense>(ls.out, ls.in, q.dequantize(), bias_of(ls), input_scale(ls.name)));
      plan.qtensor = std::make_shared<const quant::QTensor>(std::move(q));
    }
  });
}

}  // namespace lq::pipeline
