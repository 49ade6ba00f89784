// AWQ and GPTQ on real activations, layer by layer through the native forward (awq-*, gptq-*,
// awq-gptq-*; GPTQ itself: pipeline/gptq_layer.h).
//
// Calibration rows: text windows (und), x2t prompts (und: ViT tokens in Lance's understanding prompt,
// half the und budget when given) and t2i sequences (the cached prefix + the noise block at a few taus of
// the full-precision sampler's trajectory, cond and, where CFG is active, uncond: und and gen rows in
// one chunk). The residual stream entering the current layer is cached per sample; after the
// layer is quantized, the QUANTIZED layer produces the next layer's inputs (sequential, the default),
// or with --no-sequential the full-precision layer does.
//
// Per path, from the full-precision layer on those inputs:
//   input_layernorm -> q,k,v   loss: attention block output (o_proj's output, the path's rows)
//   v -> o                     loss: o_proj output; scales shared by the query heads of a KV head
//   post_attention_layernorm -> gate,up   loss: MLP output
//   up -> down                 loss: down_proj output
// then the folds, then the clip search (not q/k) on the folded inputs.
#include <algorithm>
#include <filesystem>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <optional>

#include "calib/calibrate.h"
#include "forward/prompts.h"
#include "forward/t2i.h"
#include "io/error.h"
#include "io/progress.h"
#include "pipeline/forward_linears.h"
#include "pipeline/gptq_layer.h"
#include "pipeline/layer_capture.h"
#include "pipeline/searches.h"
#include "quant/awq.h"
#include "tokenizer/tokenizer.h"
#include "vae/wan_vae.h"
#include "vit/edit_reference.h"

namespace lq::pipeline {

namespace {

using fwd::LinearId;
using model::LinearKind;
using model::Path;

double sum_sq(const float* a, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * a[i];
  return s;
}

double sum_sq_diff(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - b[i];
    s += d * d;
  }
  return s;
}

// Per-target-channel values averaged onto the fusion's scales (GQA: the query heads of a KV head).
std::vector<float> onto_scales(const std::vector<float>& per_channel, const model::FusionPair& f) {
  std::vector<double> s(size_t(f.num_scales), 0.0);
  std::vector<int> cnt(size_t(f.num_scales), 0);
  for (int64_t c = 0; c < int64_t(per_channel.size()); ++c) {
    s[size_t(f.scale_index(c))] += per_channel[size_t(c)];
    ++cnt[size_t(f.scale_index(c))];
  }
  std::vector<float> out(s.size());
  for (size_t i = 0; i < s.size(); ++i) out[i] = float(s[i] / std::max(cnt[i], 1));
  return out;
}

void divide_cols(std::vector<float>& x, int64_t width, const std::vector<float>& s, const model::FusionPair& f) {
  const int64_t n = int64_t(x.size()) / width;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < width; ++c) x[size_t(r * width + c)] /= s[size_t(f.scale_index(c))];
}

// y = x W^T for f32 row-major W.
std::vector<float> matmul(const std::vector<float>& x, int64_t in, const float* w, int64_t out) {
  const int64_t n = int64_t(x.size()) / in;
  std::vector<float> y(size_t(n * out));
  kernels::linear(x.data(), n, kernels::DenseMatrix{kernels::WeightType::F32, out, in, w}, nullptr, y.data());
  return y;
}

class ForwardAwq final : public LayerSearch {
 public:
  ForwardAwq(const QuantizeOptions& o, const model::ModelSpec& spec, const LinearFormats& formats, QuantizeReport& report,
             CalibRows* rows)
      : o_(o), spec_(spec), formats_(formats), engine_(load_search_engine(o.model_dir)) {
    CalibRows own = rows ? std::move(*rows) : collect_calib_rows(o, engine_);
    samples_ = std::move(own.samples);
    states_ = std::move(own.states);
    report.calib_rows_und = own.rows_und;
    report.calib_rows_gen = own.rows_gen;
    report.calib_tokens_und = own.tokens_und;
    report.calib_tokens_gen = own.tokens_gen;
    path_rows_[0] = own.rows_und;
    path_rows_[1] = own.rows_gen;
  }

  // A path's linears are calibrated when the inputs gave that path rows (else they are rounded plainly).
  bool calibrated(const model::LinearSpec& l) const override { return path_rows_[l.path == Path::Gen ? 1 : 0] > 0; }

  void search(int layer, LayerTensors& t, const std::map<std::string, bool>& quantized, LayerPlans& plans) override {
    const bool awq = o_.scheme.method == Method::Awq || o_.scheme.method == Method::AwqGptq;
    const bool gptq = method_uses_gptq(o_.scheme.method);
    if (awq) awq_search(layer, t, quantized, plans, /*clip=*/!gptq || o_.gptq.awq_clip);
    if (gptq) gptq_layer(layer, GptqLayerInputs{engine_, spec_, formats_, samples_, states_}, t, quantized, o_.gptq, o_.sequential, plans);
    if (!o_.sequential)  // the next layer's inputs: this layer in full precision (the engine still runs it)
      for (size_t i = 0; i < samples_.size(); ++i) engine_.forward_layer(layer, samples_[i], states_[i].data());
    // The mapped full-precision weights are not run again (layer_done runs the final weights): their
    // pages leave while the driver quantizes and writes the layer (peak RSS).
    engine_.drop_layer_pages(layer);
  }

  void awq_search(int layer, LayerTensors& t, const std::map<std::string, bool>& quantized, LayerPlans& plans, bool clip) {
    LayerCapture cap(layer, {path_rows_[0], path_rows_[1]}, {o_.awq.rows_per_layer, o_.awq.clip_rows});
    fold_scale_.clear();
    std::vector<std::vector<float>> attn_ref(samples_.size());
    {
      ObserverScope scope(engine_, &cap);
      for (size_t i = 0; i < samples_.size(); ++i) {
        std::vector<float> x = states_[i];
        engine_.forward_layer(layer, samples_[i], x.data(), &attn_ref[i]);
      }
    }
    for (const auto& f : spec_.fusions) {
      if (f.layer != layer) continue;
      // A tied v -> o fold is searched once for both paths (from the und pair).
      const model::FusionPair* partner = spec_.tied_partner(f);
      if (partner && f.path != Path::Und) continue;
      std::vector<const model::FusionPair*> group = {&f};
      if (partner) group.push_back(partner);
      bool all_quantized = true;
      for (const auto* g : group)
        for (const auto& name : g->targets) all_quantized = all_quantized && quantized.at(name);
      if (!all_quantized) continue;  // a kept target: leave the pair (and its tied partner) unscaled
      if (partner) search_tied_v_to_o(group, t, cap, plans);
      else search_pair(f, t, cap, attn_ref, plans);
    }
    if (clip) clip_search(layer, t, cap, quantized, plans);
  }

  void layer_done(int layer, const LayerTensors& w, const LayerPlans& plans) override {
    for (const auto& path : spec_.layers[size_t(layer)].paths)
      for (const auto& ls : path.linears) {
        const auto it = plans.find(ls.name);
        std::vector<float> scale = it != plans.end() ? it->second.input_scale : std::vector<float>{};
        std::vector<float> bias = ls.has_bias ? w.at(ls.bias_name()) : std::vector<float>{};
        // Borrows the final weights (no layer-sized copy): this layer runs only below, while `w` lives.
        engine_.replace_linear({layer, ls.path, ls.kind}, std::make_unique<ScaledDense>(ls.out, ls.in, w.at(ls.weight_name()).data(),
                                                                                        std::move(bias), std::move(scale)));
      }
    if (o_.sequential)  // otherwise search() already advanced the states through the full-precision layer
      for (size_t i = 0; i < samples_.size(); ++i) engine_.forward_layer(layer, samples_[i], states_[i].data());
    for (const auto& path : spec_.layers[size_t(layer)].paths)
      for (const auto& ls : path.linears)
        engine_.replace_linear({layer, ls.path, ls.kind}, std::make_unique<ReleasedLinear>(ls.out, ls.in, ls.name));
    engine_.drop_layer_pages(layer);
  }

 private:
  int64_t rows_of(const fwd::Chunk& c, Path p) const { return std::count(c.paths.begin(), c.paths.end(), p); }

  // Every row of the samples that hold rows of path p, concatenated.
  std::vector<float> rows_of_samples_with(const std::vector<std::vector<float>>& per_sample, Path p, int64_t width) const {
    std::vector<float> out;
    for (size_t i = 0; i < samples_.size(); ++i)
      if (rows_of(samples_[i], p) > 0) out.insert(out.end(), per_sample[i].begin(), per_sample[i].begin() + samples_[i].rows() * width);
    return out;
  }

  const model::LinearSpec& lin(const model::FusionPair& f, LinearKind k) const {
    return spec_.layers[size_t(f.layer)].path(f.path).linear(k);
  }

  void record(const model::FusionPair& f, const quant::ScaleSearch& r, double ref_energy, LayerPlans& plans) {
    record_rel(f, r, ref_energy > 0 ? std::sqrt(r.loss / ref_energy) : 0.0, plans);
  }
  void record_rel(const model::FusionPair& f, const quant::ScaleSearch& r, double output_rel_error, LayerPlans& plans) {
    for (const auto& name : f.targets) {
      LinearPlan& p = plans[name];
      p.alpha = r.alpha;
      p.identity = r.identity;
      p.output_rel_error = output_rel_error;
      if (f.kind == model::FusionKind::NormToLinears && !r.identity) p.input_scale = r.s;
    }
  }

  // v -> o of both paths with ONE scale vector (see FusionPair::tied_across_paths): loss = the sum over
  // the paths of each o_proj's relative output error on its own rows, ||X_p (W_p - Wq_p(s))^T||^2 / ||X_p W_p^T||^2,
  // so neither path's rows dominate; the activation statistic is the mean of the paths' mean |x|.
  void search_tied_v_to_o(const std::vector<const model::FusionPair*>& group, LayerTensors& t, LayerCapture& cap,
                          LayerPlans& plans) {
    struct Member {
      const model::FusionPair* f;
      const model::LinearSpec* ls;
      const std::vector<float>* w;
      std::vector<float> xs;
      double ref_energy = 0;
    };
    std::vector<Member> members;
    std::vector<float> x_mean;
    int with_rows = 0;
    for (const auto* f : group) {
      Member m{f, &lin(*f, LinearKind::O), nullptr, {}, 0};
      m.w = &t.at(m.ls->weight_name());
      if (!cap.empty(f->path, LinearKind::O)) {
        m.xs = cap.sample(f->path, LinearKind::O, o_.awq.rows_per_layer);
        m.ref_energy = sum_sq(matmul(m.xs, m.ls->in, m.w->data(), m.ls->out).data(), int64_t(m.xs.size() / m.ls->in) * m.ls->out);
        const std::vector<float> xm = onto_scales(cap.mean_abs(f->path, LinearKind::O), *f);
        if (x_mean.empty()) x_mean.assign(xm.size(), 0.0f);
        for (size_t i = 0; i < xm.size(); ++i) x_mean[i] += xm[i];
        ++with_rows;
      }
      members.push_back(std::move(m));
    }
    if (with_rows == 0) return;  // no rows of either path in the calibration sample
    for (float& v : x_mean) v /= float(with_rows);
    const model::FusionPair& f0 = *group.front();
    const quant::QuantParams& qp = formats_.params_for(f0.targets.front());  // w_mean's groups; the loss uses each o_proj's own
    std::vector<const float*> ws;
    std::vector<int64_t> outs;
    for (const auto& m : members) ws.push_back(m.w->data()), outs.push_back(m.ls->out);
    const std::vector<float> w_mean = onto_scales(quant::weight_channel_mean(ws, outs, f0.target_in, qp.effective_group(f0.target_in)), f0);
    auto scale_of = [&f0](int64_t c) { return f0.scale_index(c); };
    std::vector<float> d;  // reused by every candidate (a fresh buffer per call costs page faults)
    auto member_loss = [&](const Member& m, const std::vector<float>& s) {
      if (m.xs.empty() || m.ref_energy <= 0) return 0.0;
      d.resize(m.w->size());
      quant::fake_quantize_scaled(m.w->data(), m.ls->out, m.ls->in, formats_.params_for(m.ls->name), s, d.data(), scale_of);
      for (size_t i = 0; i < d.size(); ++i) d[i] = (*m.w)[i] - d[i];
      const std::vector<float> y = matmul(m.xs, m.ls->in, d.data(), m.ls->out);
      return sum_sq(y.data(), int64_t(y.size())) / m.ref_energy;
    };
    const quant::ScaleSearch r = quant::search_scales(x_mean, w_mean, o_.awq.grid, o_.awq.duo_scaling, [&](const std::vector<float>& s) {
      double loss = 0;
      for (const auto& m : members) loss += member_loss(m, s);
      return loss;
    });
    for (const auto& m : members) record_rel(*m.f, r, std::sqrt(member_loss(m, r.s)), plans);  // r.s: ones for the identity
    if (r.identity) return;
    for (const auto& m : members) {
      apply_fold(spec_, *m.f, r.s, t, plans);
      for (const auto& name : m.f->targets) fold_scale_[name] = r.s;
    }
  }

  void search_pair(const model::FusionPair& f, LayerTensors& t, LayerCapture& cap,
                   const std::vector<std::vector<float>>& attn_ref, LayerPlans& plans) {
    const quant::QuantParams& qp = formats_.params_for(f.targets.front());  // w_mean's groups; the loss uses each target's own
    const LinearKind first = f.target_kinds.front();
    if (cap.empty(f.path, first)) return;  // no rows of this path in the calibration sample
    std::vector<float> x_mean = onto_scales(cap.mean_abs(f.path, first), f);
    std::vector<const float*> ws;
    std::vector<int64_t> outs;
    for (auto k : f.target_kinds) ws.push_back(t.at(lin(f, k).weight_name()).data()), outs.push_back(lin(f, k).out);
    const std::vector<float> w_mean = onto_scales(quant::weight_channel_mean(ws, outs, f.target_in, qp.effective_group(f.target_in)), f);
    auto scale_of = [&f](int64_t c) { return f.scale_index(c); };

    quant::ScaleSearch r;
    double ref_energy = 0;
    if (f.kind == model::FusionKind::VToO || f.kind == model::FusionKind::UpToDown) {
      // Loss on the target linear's own output: ||X (W - Wq(s))^T||^2.
      const model::LinearSpec& ls = lin(f, first);
      const std::vector<float>& w = t.at(ls.weight_name());
      const std::vector<float> xs = cap.sample(f.path, first, o_.awq.rows_per_layer);
      ref_energy = sum_sq(matmul(xs, ls.in, w.data(), ls.out).data(), int64_t(xs.size() / ls.in) * ls.out);
      std::vector<float> d(w.size());  // reused by every candidate
      r = quant::search_scales(x_mean, w_mean, o_.awq.grid, o_.awq.duo_scaling, [&](const std::vector<float>& s) {
        quant::fake_quantize_scaled(w.data(), ls.out, ls.in, formats_.params_for(ls.name), s, d.data(), scale_of);
        for (size_t i = 0; i < d.size(); ++i) d[i] = w[i] - d[i];
        const std::vector<float> y = matmul(xs, ls.in, d.data(), ls.out);
        return sum_sq(y.data(), int64_t(y.size()));
      });
    } else if (first == LinearKind::Gate) {
      r = search_mlp(f, t, cap.sample(f.path, first, o_.awq.rows_per_layer), x_mean, w_mean, ref_energy);
    } else {
      r = search_qkv(f, t, attn_ref, x_mean, w_mean, ref_energy);
    }
    record(f, r, ref_energy, plans);
    if (r.identity) return;
    apply_fold(spec_, f, r.s, t, plans);
    for (const auto& name : f.targets) fold_scale_[name] = r.s;
  }

  // gate,up: loss on the MLP output down(silu(x Wg'^T) * (x Wu'^T)) with the full-precision down.
  // x: the subsampled inputs (LayerCapture::sample).
  quant::ScaleSearch search_mlp(const model::FusionPair& f, LayerTensors& t, const std::vector<float>& x,
                                const std::vector<float>& x_mean, const std::vector<float>& w_mean, double& ref_energy) {
    const model::LinearSpec &g = lin(f, LinearKind::Gate), &u = lin(f, LinearKind::Up), &d = lin(f, LinearKind::Down);
    const std::vector<float>& wg = t.at(g.weight_name());
    const std::vector<float>& wu = t.at(u.weight_name());
    const std::vector<float>& wd = t.at(d.weight_name());
    auto mlp = [&](const float* gw, const float* uw) {
      std::vector<float> a = matmul(x, g.in, gw, g.out), b = matmul(x, u.in, uw, u.out);
      for (size_t i = 0; i < a.size(); ++i) a[i] = a[i] / (1.0f + std::exp(-a[i])) * b[i];
      return matmul(a, d.in, wd.data(), d.out);
    };
    const std::vector<float> ref = mlp(wg.data(), wu.data());
    ref_energy = sum_sq(ref.data(), int64_t(ref.size()));
    std::vector<float> gq(wg.size()), uq(wu.size());  // reused by every candidate
    return quant::search_scales(x_mean, w_mean, o_.awq.grid, o_.awq.duo_scaling, [&](const std::vector<float>& s) {
      quant::fake_quantize_scaled(wg.data(), g.out, g.in, formats_.params_for(g.name), s, gq.data());
      quant::fake_quantize_scaled(wu.data(), u.out, u.in, formats_.params_for(u.name), s, uq.data());
      const std::vector<float> y = mlp(gq.data(), uq.data());
      return sum_sq_diff(y.data(), ref.data(), int64_t(y.size()));
    });
  }

  // q,k,v: loss on the attention block output of EVERY row of the samples this path takes part in, the
  // layer run with candidate q/k/v weights of this path (everything else full precision). Every row, not
  // just this path's: the attention is shared, so und K/V errors reach the gen queries that read the text
  // prefix. Scored on und rows only, und AWQ protected text tokens and made t2i latents worse than RTN.
  quant::ScaleSearch search_qkv(const model::FusionPair& f, LayerTensors& t, const std::vector<std::vector<float>>& attn_ref,
                                const std::vector<float>& x_mean, const std::vector<float>& w_mean, double& ref_energy) {
    const int64_t H = engine_.config().hidden_size;
    const std::vector<float> ref = rows_of_samples_with(attn_ref, f.path, H);
    ref_energy = sum_sq(ref.data(), int64_t(ref.size()));
    const std::array<LinearKind, 3> kinds = {LinearKind::Q, LinearKind::K, LinearKind::V};
    auto loss = [&](const std::vector<float>& s) {
      for (auto k : kinds) {
        const model::LinearSpec& ls = lin(f, k);
        const std::vector<float>& w = t.at(ls.weight_name());
        std::vector<float> wq(w.size());
        quant::fake_quantize_scaled(w.data(), ls.out, ls.in, formats_.params_for(ls.name), s, wq.data());
        std::vector<float> bias = ls.has_bias ? t.at(ls.bias_name()) : std::vector<float>{};
        swap_linear(f, k, std::make_unique<ScaledDense>(ls.out, ls.in, std::move(wq), std::move(bias), std::vector<float>{}));
      }
      std::vector<std::vector<float>> outs(samples_.size());
      for (size_t i = 0; i < samples_.size(); ++i)
        if (rows_of(samples_[i], f.path) > 0) engine_.attention_output(f.layer, samples_[i], states_[i].data(), outs[i]);
      for (size_t i = 0; i < samples_.size(); ++i)
        if (outs[i].empty()) outs[i].assign(size_t(samples_[i].rows() * H), 0.0f);
      const std::vector<float> y = rows_of_samples_with(outs, f.path, H);
      return sum_sq_diff(y.data(), ref.data(), int64_t(y.size()));
    };
    quant::ScaleSearch r = quant::search_scales(x_mean, w_mean, o_.awq.grid, o_.awq.duo_scaling, loss);
    for (auto k : kinds) swap_linear(f, k, fp_linear(f, k, t));  // full precision again for the other path
    return r;
  }

  void swap_linear(const model::FusionPair& f, LinearKind k, std::unique_ptr<fwd::LinearWeights> w) {
    engine_.replace_linear(LinearId{f.layer, f.path, k}, std::move(w));
  }

  // A full-precision copy of a target from the layer tensors (restores the engine after a search).
  std::unique_ptr<fwd::LinearWeights> fp_linear(const model::FusionPair& f, LinearKind k, const LayerTensors& t) const {
    const model::LinearSpec& ls = lin(f, k);
    return std::make_unique<ScaledDense>(ls.out, ls.in, t.at(ls.weight_name()),
                                         ls.has_bias ? t.at(ls.bias_name()) : std::vector<float>{}, std::vector<float>{});
  }

  // Clip ratios for every quantized target except q/k, on its (folded) inputs.
  void clip_search(int layer, const LayerTensors& t, LayerCapture& cap, const std::map<std::string, bool>& quantized,
                   LayerPlans& plans) {
    if (!o_.awq.clip) return;
    for (const auto& path : spec_.layers[size_t(layer)].paths)
      for (const auto& ls : path.linears) {
        if (ls.kind == LinearKind::Q || ls.kind == LinearKind::K || !quantized.at(ls.name)) continue;
        if (!quant::scheme_is_integer(formats_.params_for(ls.name).scheme)) continue;  // clipping: integer formats only
        const LinearKind src = ls.kind == LinearKind::V ? LinearKind::Q : ls.kind == LinearKind::Up ? LinearKind::Gate : ls.kind;
        if (cap.empty(ls.path, src)) continue;
        std::vector<float> x = cap.sample(ls.path, src, o_.awq.clip_rows);
        // Inputs as the folded linear sees them: divided by the scale folded into its input channels.
        if (fold_scale_.count(ls.name))
          for (const auto& f : spec_.fusions)
            if (f.layer == layer && f.path == ls.path &&
                std::find(f.targets.begin(), f.targets.end(), ls.name) != f.targets.end())
              divide_cols(x, ls.in, fold_scale_.at(ls.name), f);
        plans[ls.name].clip = quant::search_clip(t.at(ls.weight_name()).data(), ls.out, ls.in, formats_.params_for(ls.name), x.data(),
                                                 int64_t(x.size()) / ls.in);
      }
  }

  const QuantizeOptions& o_;
  const model::ModelSpec& spec_;
  const LinearFormats& formats_;
  fwd::Engine engine_;
  int64_t path_rows_[2] = {0, 0};  // calibration rows per path (und, gen)
  std::vector<fwd::Chunk> samples_;       // routing, positions, splits (embeddings dropped)
  std::vector<std::vector<float>> states_;  // residual stream entering the current layer, per sample
  std::map<std::string, std::vector<float>> fold_scale_;  // target base -> s folded into its input (this layer)
};

}  // namespace

fwd::Engine load_search_engine(const std::string& dir) {
  // Weights in the source dtype are borrowed from the memory map (no copy); pages are dropped per layer.
  // The full-precision sampler runs every layer per velocity: streaming keeps its resident set at
  // about one layer (a checkpoint larger than RAM would otherwise be resident whole).
  io::TensorStore probe(dir);
  const bool bf16 = probe.has("language_model.model.layers.0.mlp.up_proj.weight") &&
                    probe.info("language_model.model.layers.0.mlp.up_proj.weight").dtype == io::DType::BF16;
  fwd::LoadOptions lo;
  lo.storage = bf16 ? fwd::WeightStorage::BF16 : fwd::WeightStorage::F32;
  lo.release_layer_pages = true;
  return fwd::Engine::load(dir, lo);
}

namespace {

void add_sample(CalibRows& r, fwd::Chunk c) {
  r.rows_und += std::count(c.paths.begin(), c.paths.end(), Path::Und);
  r.rows_gen += std::count(c.paths.begin(), c.paths.end(), Path::Gen);
  r.states.push_back(std::move(c.embeddings));
  c.embeddings.clear();
  r.samples.push_back(std::move(c));
}

// x2t: the ViT (the checkpoint's, or QuantizeOptions::vit_dir) runs once per medium, its pages released
// block by block, and is unloaded before the layers are quantized. Evenly spaced questions (at least one)
// until the und budget is met.
void add_x2t_samples(const QuantizeOptions& o, fwd::Engine& engine, const tok::Tokenizer& tok,
                     const std::vector<vit::X2tItem>& items, int64_t budget, CalibRows& rows, io::Progress& progress, double& done) {
  vit::VitLoadOptions vo;
  vo.storage = engine.storage();
  vo.release_pages = true;
  const vit::Vit v = vit::Vit::load(o.vit_dir.empty() ? o.model_dir : o.vit_dir, vo);
  vit::check_vit_matches(v, engine);
  vit::FeatureCache cache(v, o.x2t);
  const int step = vit::temporal_step(o.model_dir, v.config());
  // Round robin over the media (in order of first appearance), so a small budget still sees several.
  std::vector<std::vector<size_t>> by_medium;
  std::map<std::string, size_t> slot;
  for (size_t i = 0; i < items.size(); ++i) {
    auto [it, fresh] = slot.emplace(items[i].path, by_medium.size());
    if (fresh) by_medium.emplace_back();
    by_medium[it->second].push_back(i);
  }
  std::vector<size_t> order;
  for (size_t round = 0; order.size() < items.size(); ++round)
    for (const auto& g : by_medium)
      if (round < g.size()) order.push_back(g[round]);
  int64_t taken = 0;
  size_t j = 0;
  for (; j < order.size() && (j == 0 || taken < budget); ++j) {
    progress.update(done, "x2t " + std::filesystem::path(items[order[j]].path).filename().string());  // a video: minutes
    fwd::Chunk c = calib::x2t_calibration_chunk(engine, tok, cache, items[order[j]], step);
    taken += c.rows();
    rows.tokens_und += c.rows();
    add_sample(rows, std::move(c));
    progress.update(++done);
  }
  done += double(order.size() - j);  // questions the budget left out
  progress.update(done);
}

bool is_gen_task(calib::SourceKind k) {
  return k == calib::SourceKind::T2i || k == calib::SourceKind::T2v || k == calib::SourceKind::ImageEdit ||
         k == calib::SourceKind::VideoEdit;
}
bool is_edit(calib::SourceKind k) { return k == calib::SourceKind::ImageEdit || k == calib::SourceKind::VideoEdit; }

// One generation task ready to sample: its sampler (both branches' prefixes prefilled), the prompt (noise
// positions) and both branches' prefix rows, from which the cached sequences are rebuilt.
struct GenRun {
  fwd::T2iPrompt prompt;
  fwd::Chunk prefix[2];  // cond, uncond
  std::unique_ptr<fwd::T2iSampler> sampler;
};

fwd::Chunk concat(fwd::Chunk c, const fwd::Chunk& n) {
  c.embeddings.insert(c.embeddings.end(), n.embeddings.begin(), n.embeddings.end());
  c.paths.insert(c.paths.end(), n.paths.begin(), n.paths.end());
  c.positions.insert(c.positions.end(), n.positions.begin(), n.positions.end());
  c.splits.insert(c.splits.end(), n.splits.begin(), n.splits.end());
  return c;
}

// Generation tasks (t2i, t2v, image_edit, video_edit): each prompt through the full-precision sampler,
// whole sequences (prefix + noise block) at a few taus of its trajectory, cond and (while CFG is active)
// uncond, until the gen budget is met. The kinds take turns (t2i, t2v, image_edit, video_edit, t2i, ...)
// and each kind gives at least one sequence (as x2t gives at least one question), so a small budget sees
// every task; an edit's clean source rows (tau 0) count as gen rows too. Once the budget is met no further
// sampler runs.
void add_gen_samples(const QuantizeOptions& o, fwd::Engine& engine, const tok::Tokenizer& tok,
                     const std::vector<calib::Sample>& items, int64_t budget, CalibRows& rows, io::Progress& progress, double& done) {
  const fwd::T2iSettings st = fwd::load_t2i_settings(o.model_dir);
  fwd::SamplerOptions so = st.sampler;
  if (o.awq.t2i_steps > 0) so.steps = o.awq.t2i_steps;
  const std::vector<double> taus = fwd::shifted_taus(so.steps, so.shift);
  const int64_t ch = engine.config().latent_channels;
  constexpr int kKinds = 4;
  auto kind_index = [](calib::SourceKind k) {
    return k == calib::SourceKind::T2i ? 0 : k == calib::SourceKind::T2v ? 1 : k == calib::SourceKind::ImageEdit ? 2 : 3;
  };
  std::vector<size_t> by_kind[kKinds];
  for (size_t i = 0; i < items.size(); ++i) by_kind[kind_index(items[i].kind)].push_back(i);
  // Everything an item needs is checked before the first sampler runs: grids, the VAE, the ViT.
  if (!by_kind[0].empty()) fwd::check_latent_grid(st.grid, engine.config());
  fwd::LatentGrid t2v_grid;
  if (!by_kind[1].empty()) {
    t2v_grid = calib::t2v_calib_grid(st.grid, engine.config().max_latent_frames, o.t2v_frames);
    fwd::check_latent_grid(t2v_grid, engine.config());
  }
  std::optional<vae::WanVae> vae;
  std::optional<vit::Vit> vit_model;
  if (!by_kind[2].empty() || !by_kind[3].empty()) {
    if (o.vae.empty()) fail("quantize", "image_edit / video_edit inputs need the Wan2.2 VAE (--vae PATH) to encode their sources");
    vae.emplace(vae::WanVae::load(o.vae));
    if (vae->config().z_dim != ch)
      fail(o.vae, "VAE latents have " + std::to_string(vae->config().z_dim) + " channels, the model's " + std::to_string(ch));
    if (!o.edit_without_vit) {
      if (o.vit_dir.empty() && !vit::model_has_vit(o.model_dir))
        fail("quantize", "image_edit / video_edit inputs need the ViT for Lance's reference block: --vit-dir DIR "
                         "(vit.safetensors + config.json) or a checkpoint with vit_model.* tensors, or --no-vit-reference");
      vit::VitLoadOptions vo;
      vo.storage = engine.storage();
      vo.release_pages = true;
      vit_model.emplace(vit::Vit::load(o.vit_dir.empty() ? o.model_dir : o.vit_dir, vo));
      vit::check_vit_matches(*vit_model, engine);
    }
  }
  std::vector<std::pair<size_t, size_t>> order;  // (item, index within its kind)
  for (size_t round = 0; order.size() < items.size(); ++round)
    for (const auto& g : by_kind)
      if (round < g.size()) order.push_back({g[round], round});
  int64_t gen_rows = 0;
  bool seen[kKinds] = {false, false, false, false};
  for (const auto& [item, ki] : order) {
    progress.update(done);
    ++done;
    if (gen_rows >= budget && seen[kind_index(items[item].kind)]) continue;  // its sampler would add nothing
    const calib::Sample& s = items[item];
    const int kind = kind_index(s.kind);
    GenRun r;
    if (!is_edit(s.kind)) {
      const fwd::LatentGrid& g = kind == 0 ? st.grid : t2v_grid;
      r.prompt = fwd::t2i_prompt(tok, s.caption, kind == 0 ? st.instruction : st.t2v_instruction, g);
      for (int b = 0; b < 2; ++b) {
        const fwd::T2iBranch& br = b == 0 ? r.prompt.cond : r.prompt.uncond;
        r.prefix[b] = fwd::text_chunk(engine, br.prefix_ids, br.prefix_positions, br.prefix_splits);
      }
      r.sampler = std::make_unique<fwd::T2iSampler>(engine, r.prompt);
    } else {
      fwd::EditSource src;
      (s.kind == calib::SourceKind::ImageEdit ? src.image : src.video) = s.media;
      src.resolution = o.edit_resolution > 0 ? o.edit_resolution : 16 * int(std::lround(std::sqrt(double(st.grid.h) * st.grid.w)));
      src.max_frames = o.edit_max_frames;
      const vit::EditConditions c = vit::edit_conditions(*vae, vit_model ? &*vit_model : nullptr, src, o.edit_vit_resolution,
                                                         uint64_t(kind) * 1000003u + ki, false);
      vit::EditJob job = vit::edit_job(engine, tok, s.caption, c);
      r.prompt = job.prompt->sampler_prompt();
      std::vector<const fwd::VitReference*> refs;
      if (c.vit) refs.push_back(&*c.vit);
      for (int b = 0; b < 2; ++b) r.prefix[b] = job.prompt->prefix_chunk(engine, b == 0, {&c.source.latents}, refs);
      r.sampler = std::move(job.sampler);
    }
    const fwd::LatentGrid& g = r.prompt.grid;
    const int64_t k = g.tokens();
    std::vector<float> traj;
    // t2i keeps its seeds (prompt index); the other kinds are seeded apart from it.
    r.sampler->sample(fwd::normal_noise(uint64_t(kind) * 1000003u + ki, k * ch), so, &traj);
    r.sampler.reset();  // its K/V caches
    rows.tokens_gen += k * so.steps;  // gen rows the sampler ran (cond branch)
    const int nt = std::max(1, std::min(o.awq.t2i_taus, so.steps));
    for (int j = 0; j < nt && (gen_rows < budget || !seen[kind]); ++j) {
      const int step = int((int64_t(j) * so.steps + int64_t(ki % size_t(nt))) / nt) % so.steps;  // staggered per prompt
      const float* x = traj.data() + int64_t(step) * k * ch;
      const double tau = taus[size_t(step)];
      const bool cfg = so.cfg_scale != 1.0 && tau > so.cfg_min && tau <= so.cfg_max;
      for (int b = 0; b < (cfg ? 2 : 1) && (gen_rows < budget || !seen[kind]); ++b) {
        seen[kind] = true;
        fwd::Chunk c = concat(r.prefix[b], fwd::noise_chunk(engine, b == 0 ? r.prompt.cond : r.prompt.uncond, r.prompt.vision_start,
                                                             r.prompt.vision_end, g, x, tau));
        gen_rows += std::count(c.paths.begin(), c.paths.end(), Path::Gen);
        add_sample(rows, std::move(c));
      }
    }
  }
}

}  // namespace

// Text windows (evenly spaced over all windows), x2t prompts and generation sequences (t2i, t2v, edits)
// until each path has its rows.
CalibRows collect_calib_rows(const QuantizeOptions& o, fwd::Engine& engine) {
  CalibRows rows;
  if (o.calib.empty()) fail("quantize", o.scheme.name + " needs calibration inputs: --calib text:FILE and --calib t2i:FILE");
  const tok::Tokenizer tok = tok::Tokenizer::load(o.model_dir);
  const int64_t budget = o.awq.rows_per_layer;
  std::vector<std::vector<int32_t>> windows;
  std::vector<calib::Sample> gen;  // t2i, t2v, image_edit, video_edit
  std::vector<vit::X2tItem> x2t_items;
  calib::CalibOptions co;
  co.seq_len = o.awq.seq_len;
  co.max_tokens = o.awq.max_tokens;
  co.max_prompts = o.awq.max_prompts;
  for (const auto& src : o.calib)
    for (auto& sample : calib::load_samples(src, tok, co)) {
      if (is_gen_task(sample.kind)) {
        gen.push_back(std::move(sample));
        continue;
      }
      if (calib::is_x2t(sample.kind)) {
        x2t_items.push_back(std::move(sample.x2t));
        continue;
      }
      if (sample.kind != calib::SourceKind::Text && sample.kind != calib::SourceKind::Chat)
        fail("quantize --calib", std::string("unexpected calibration kind ") + calib::source_kind_name(sample.kind));
      rows.tokens_und += int64_t(sample.ids.size());
      windows.push_back(std::move(sample.ids));
    }
  // Edits: their VAE and ViT are checked before any input runs.
  if (std::any_of(gen.begin(), gen.end(), [](const calib::Sample& x) { return is_edit(x.kind); })) {
    if (o.vae.empty()) fail("quantize", "image_edit / video_edit inputs need the Wan2.2 VAE (--vae PATH) to encode their sources");
    if (!o.edit_without_vit && o.vit_dir.empty() && !vit::model_has_vit(o.model_dir))
      fail("quantize", "image_edit / video_edit inputs need the ViT for Lance's reference block: --vit-dir DIR "
                       "(vit.safetensors + config.json) or a checkpoint with vit_model.* tensors, or --no-vit-reference");
  }
  // Text: evenly spaced windows until the und budget (half of it when there are x2t inputs) is met.
  const int64_t text_budget = x2t_items.empty() ? budget : (budget + 1) / 2;
  int64_t text_rows = 0;
  const size_t take = windows.empty() ? 0
                                      : size_t(std::min<int64_t>(int64_t(windows.size()),
                                                                 std::max<int64_t>(1, text_budget / o.awq.seq_len + 1)));
  for (size_t i = 0; i < take && text_rows < text_budget; ++i) {
    const auto& ids = windows[i * windows.size() / take];
    const int64_t n = int64_t(ids.size());
    add_sample(rows, fwd::text_chunk(engine, ids, fwd::text_positions(n), {fwd::Split{n, fwd::SplitMode::Causal}}));
    text_rows += n;
  }
  // The ViT per x2t medium and the sampler per generation input take minutes at full size.
  io::Progress progress("quantize: calibration", double(x2t_items.size() + gen.size()), "inputs");
  double done = 0;
  progress.update(done);  // periodic lines from the start, also while the first input runs
  if (!x2t_items.empty()) add_x2t_samples(o, engine, tok, x2t_items, budget - text_rows, rows, progress, done);
  if (!gen.empty()) add_gen_samples(o, engine, tok, gen, budget, rows, progress, done);
  progress.update(done);
  progress.finish();
  return rows;
}

std::unique_ptr<LayerSearch> make_forward_awq(const QuantizeOptions& o, const model::ModelSpec& spec,
                                              const LinearFormats& formats, QuantizeReport& report, CalibRows* rows) {
  return std::make_unique<ForwardAwq>(o, spec, formats, report, rows);
}

}  // namespace lq::pipeline
