// Statistics-only searches: awq-proxy (the four AWQ folds per path, scales chosen on a diagonal proxy
// of the output error) and legacy-awq (the original Python lance-quant, see
// shared/docs/quantization.md "What the original Python lance-quant did").
#include <cmath>

#include "calib/calibrate.h"
#include "calib/stats.h"
#include "forward/t2i.h"
#include "io/error.h"
#include "pipeline/searches.h"
#include "quant/awq.h"
#include "quant/rtn.h"

namespace lq::pipeline {

quant::QTensor legacy_quantize(const float* w, int64_t out, int64_t in, const quant::QuantParams& p) {
  quant::QuantParams f32 = p;
  f32.scale_dtype = quant::ScaleDType::F32;  // codes and zeros chosen against the unrounded scale ...
  quant::QTensor q = quant::quantize(w, out, in, f32);
  for (float& s : q.scales) s = quant::round_to_scale_dtype(s, quant::ScaleDType::BF16);  // ... bf16 stored
  q.scale_dtype = quant::ScaleDType::BF16;
  return q;
}

namespace {

std::vector<float> legacy_fake_quantize(const float* w, int64_t out, int64_t in, const quant::QuantParams& p) {
  return legacy_quantize(w, out, in, p).dequantize();
}

// Loads --stats and refuses statistics of another model or with uncovered paths.
calib::StatsFile load_checked_stats(const QuantizeOptions& o, const model::ModelSpec& spec) {
  if (o.stats_path.empty()) fail("quantize", o.scheme.name + " needs --stats STATS.safetensors (from `lance-quant calibrate`)");
  calib::StatsFile st = calib::StatsFile::load(o.stats_path);
  const std::string fp = calib::model_fingerprint(o.model_dir);
  if (st.model_fingerprint != fp)
    fail(o.stats_path, "statistics were computed for another model (fingerprint " + st.model_fingerprint + ", " + o.model_dir +
                           " has " + fp + ")");
  std::map<std::string, std::vector<std::string>> missing;  // path -> linears
  for (const auto& l : spec.linears) {
    const auto it = st.linears.find(l.name);
    if (it == st.linears.end() || it->second.all.count == 0) missing[model::path_name(l.path)].push_back(l.name);
  }
  if (!missing.empty() && !o.allow_partial) {
    std::string msg;
    for (const auto& [path, names] : missing) {
      msg += "\n  path " + path + ": " + std::to_string(names.size()) + " linears without statistics, e.g. " + names.front();
    }
    fail(o.stats_path, "statistics do not cover every target (calibrate with a source for that path, e.g. t2i:FILE for gen, "
                       "or pass --allow-partial to leave those pairs unscaled):" + msg);
  }
  return st;
}

class StatsSearch final : public LayerSearch {
 public:
  StatsSearch(const QuantizeOptions& o, const model::ModelSpec& spec, const LinearFormats& formats)
      : o_(o), spec_(spec), formats_(formats), stats_(load_checked_stats(o, spec)) {}

  void search(int layer, LayerTensors& t, const std::map<std::string, bool>& quantized, LayerPlans& plans) override {
    for (const auto& f : spec_.fusions) {
      if (f.layer != layer) continue;
      const bool legacy = o_.scheme.method == Method::Legacy;
      if (legacy && f.kind != model::FusionKind::NormToLinears) continue;  // it scaled only the two norm groups
      // A tied v -> o fold (both paths, one s) is searched once, from the und pair.
      const model::FusionPair* partner = spec_.tied_partner(f);
      if (partner && f.path != model::Path::Und) continue;
      std::vector<const model::FusionPair*> group = {&f};
      if (partner) group.push_back(partner);
      bool ok = true;
      for (const auto* g : group)
        for (const auto& name : g->targets) ok = ok && quantized.at(name) && covered(name);
      if (!ok) continue;
      legacy ? search_legacy(f, t, plans) : search_proxy(group, t, plans);
    }
  }

  bool calibrated(const model::LinearSpec& l) const override { return covered(l.name); }

 private:
  bool covered(const std::string& name) const {
    const auto it = stats_.linears.find(name);
    return it != stats_.linears.end() && it->second.all.count > 0;
  }
  const model::LinearSpec& lin(const model::FusionPair& f, model::LinearKind k) const {
    return spec_.layers[size_t(f.layer)].path(f.path).linear(k);
  }
  // Per-target-channel values averaged onto the fusion's scales.
  static std::vector<float> onto_scales(const std::vector<float>& v, const model::FusionPair& f) {
    std::vector<double> s(size_t(f.num_scales), 0.0);
    std::vector<int> n(size_t(f.num_scales), 0);
    for (int64_t c = 0; c < int64_t(v.size()); ++c) s[size_t(f.scale_index(c))] += v[size_t(c)], ++n[size_t(f.scale_index(c))];
    std::vector<float> out(s.size());
    for (size_t i = 0; i < s.size(); ++i) out[i] = float(s[i] / std::max(n[i], 1));
    return out;
  }

  // Diagonal proxy: sum_c E[x_c^2] sum_o (W_oc - W'_oc)^2 over the targets. A tied group (v -> o of both
  // paths) sums each path's loss relative to its own sum_c E[x_c^2] sum_o W_oc^2, with the mean of the
  // paths' mean |x| as the activation statistic.
  void search_proxy(const std::vector<const model::FusionPair*>& group, LayerTensors& t, LayerPlans& plans) {
    const model::FusionPair& f0 = *group.front();
    const quant::QuantParams& qp = formats_.params_for(f0.targets.front());  // w_mean's groups; the loss uses each target's own
    struct Target {
      const model::LinearSpec* ls;
      const std::vector<float>* w;
      std::vector<float> msq;
      double norm = 1;  // 1, or the reference energy of a tied group member
    };
    std::vector<Target> targets;
    std::vector<float> x_mean;
    std::vector<const float*> ws;
    std::vector<int64_t> outs;
    for (const auto* f : group) {
      const calib::LinearStats& st = stats_.linears.at(f->targets.front());
      const std::vector<float> xm = onto_scales(st.all.mean_abs(), *f);
      if (x_mean.empty()) x_mean.assign(xm.size(), 0.0f);
      for (size_t i = 0; i < xm.size(); ++i) x_mean[i] += xm[i] / float(group.size());
      for (auto k : f->target_kinds) {
        Target tg{&lin(*f, k), nullptr, st.all.mean_sq(), 1.0};
        tg.w = &t.at(tg.ls->weight_name());
        if (group.size() > 1) {
          double e = 0;
          for (int64_t o = 0; o < tg.ls->out; ++o)
            for (int64_t c = 0; c < tg.ls->in; ++c) e += tg.msq[size_t(c)] * double((*tg.w)[size_t(o * tg.ls->in + c)]) * (*tg.w)[size_t(o * tg.ls->in + c)];
          tg.norm = e > 0 ? e : 1.0;
        }
        ws.push_back(tg.w->data()), outs.push_back(tg.ls->out);
        targets.push_back(std::move(tg));
      }
    }
    const std::vector<float> w_mean = onto_scales(quant::weight_channel_mean(ws, outs, f0.target_in, qp.effective_group(f0.target_in)), f0);
    auto scale_of = [&f0](int64_t c) { return f0.scale_index(c); };
    const quant::ScaleSearch r = quant::search_scales(x_mean, w_mean, o_.awq.grid, o_.awq.duo_scaling, [&](const std::vector<float>& s) {
      double loss = 0;
      for (const auto& tg : targets) {
        const model::LinearSpec& ls = *tg.ls;
        const std::vector<float>& w = *tg.w;
        std::vector<float> wq(w.size());
        quant::fake_quantize_scaled(w.data(), ls.out, ls.in, formats_.params_for(ls.name), s, wq.data(), scale_of);
        double l = 0;
        for (int64_t o = 0; o < ls.out; ++o)
          for (int64_t c = 0; c < ls.in; ++c) {
            const double d = double(w[size_t(o * ls.in + c)]) - wq[size_t(o * ls.in + c)];
            l += tg.msq[size_t(c)] * d * d;
          }
        loss += l / tg.norm;
      }
      return loss;
    });
    for (const auto* f : group) finish(*f, r, t, plans);
  }

  // The original toolkit: s = mean|x|^a / w_mean^(1-a), a in {0, 0.05, ..., 1} (21 points, no identity),
  // loss = output MSE on 512 synthetic Gaussian rows with std = mean|x| per channel; its quantizer.
  void search_legacy(const model::FusionPair& f, LayerTensors& t, LayerPlans& plans) {
    const quant::QuantParams& qp = o_.scheme.params;  // legacy-awq has one format (LinearFormats refuses others)
    const std::vector<float> x_mean = stats_.linears.at(f.targets.front()).all.mean_abs();
    const int64_t in = f.target_in, n = 512;
    const std::vector<float> z = fwd::normal_noise(uint64_t(f.layer) * 2 + uint64_t(f.path), n * in);
    std::vector<float> x(size_t(n * in));
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < in; ++c) x[size_t(r * in + c)] = z[size_t(r * in + c)] * x_mean[size_t(c)];
    std::vector<float> w_mean(static_cast<size_t>(in), 0.0f);  // plain mean |W| per input channel over the targets
    int64_t rows = 0;
    for (auto k : f.target_kinds) {
      const model::LinearSpec& ls = lin(f, k);
      const std::vector<float>& w = t.at(ls.weight_name());
      for (int64_t o = 0; o < ls.out; ++o)
        for (int64_t c = 0; c < in; ++c) w_mean[size_t(c)] += std::fabs(w[size_t(o * in + c)]);
      rows += ls.out;
    }
    for (float& v : w_mean) v /= float(rows);
    quant::ScaleSearch best;
    best.loss = INFINITY;
    for (int i = 0; i <= 20; ++i) {
      const double a = i / 20.0;
      const std::vector<float> s = quant::awq_scales(x_mean, w_mean, a, true);
      double loss = 0;
      for (auto k : f.target_kinds) {
        const model::LinearSpec& ls = lin(f, k);
        const std::vector<float>& w = t.at(ls.weight_name());
        std::vector<float> ws(w.size());
        for (int64_t o = 0; o < ls.out; ++o)
          for (int64_t c = 0; c < in; ++c) ws[size_t(o * in + c)] = w[size_t(o * in + c)] * s[size_t(c)];
        std::vector<float> wq = legacy_fake_quantize(ws.data(), ls.out, in, qp);
        for (int64_t o = 0; o < ls.out; ++o)
          for (int64_t c = 0; c < in; ++c) wq[size_t(o * in + c)] = w[size_t(o * in + c)] - wq[size_t(o * in + c)] / s[size_t(c)];
        std::vector<float> y(size_t(n * ls.out));
        kernels::linear(x.data(), n, kernels::DenseMatrix{kernels::WeightType::F32, ls.out, in, wq.data()}, nullptr, y.data());
        for (float v : y) loss += double(v) * v;
      }
      if (loss < best.loss) best.loss = loss, best.alpha = a, best.s = s;
    }
    best.identity = false;
    finish(f, best, t, plans);
  }

  void finish(const model::FusionPair& f, const quant::ScaleSearch& r, LayerTensors& t, LayerPlans& plans) {
    for (const auto& name : f.targets) {
      plans[name].alpha = r.alpha;
      plans[name].identity = r.identity;
    }
    if (!r.identity) apply_fold(spec_, f, r.s, t, plans);
  }

  const QuantizeOptions& o_;
  const model::ModelSpec& spec_;
  const LinearFormats& formats_;
  calib::StatsFile stats_;
};

}  // namespace

std::unique_ptr<LayerSearch> make_stats_search(const QuantizeOptions& o, const model::ModelSpec& spec,
                                               const LinearFormats& formats) {
  return std::make_unique<StatsSearch>(o, spec, formats);
}

}  // namespace lq::pipeline

