// GPTQ inside the layer-streaming pipeline, on lance-mini: H per (path, input) equals X^T X of exactly
// the rows routed to that path; a step that replaces linears changes the next step's H to the X^T X
// of the inputs the replaced linears produce (sequential mode); the gptq-int4 checkpoint keeps the
// standard layout (act-order with static groups: RTN's scales and zero points), beats RTN on the
// calibration rows, and --no-sequential changes exactly the linears whose inputs depend on earlier
// rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "formats/checkpoint.h"
#include "forward/forward.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "pipeline/forward_linears.h"
#include "pipeline/gptq_layer.h"
#include "pipeline/quantize.h"
#include "pipeline/searches.h"
#include "quant/quantizer.h"
#include "test_paths.h"

namespace lq::pipeline {
namespace {

namespace fs = std::filesystem;
using model::LinearKind;
using model::Path;

std::string calib_text() { return std::string(LQ_SOURCE_DIR) + "/data/calib/text.txt"; }

QuantizeOptions small_options(const std::string& m) {
  QuantizeOptions o;
  o.model_dir = m;
  o.scheme = parse_scheme_choice("gptq-int4", 64, false);
  o.calib = {calib::parse_source("text:" + calib_text()), calib::parse_source("t2i:" + m + "/calib_prompts.txt")};
  o.awq.max_tokens = 512;
  o.awq.max_prompts = 2;
  o.awq.t2i_steps = 4;
  o.awq.t2i_taus = 2;
  o.awq.rows_per_layer = 256;
  return o;
}

// Rows entering each (path, kind) linear of one layer, captured independently of the pipeline.
class RowCapture final : public fwd::ActivationObserver {
 public:
  explicit RowCapture(int layer) : layer_(layer) {}
  void observe(const fwd::LinearId& id, const float* x, int64_t n, int64_t in) override {
    if (id.layer != layer_) return;
    auto& v = rows_[{id.path, id.kind}];
    v.insert(v.end(), x, x + n * in);
  }
  std::map<std::pair<Path, LinearKind>, std::vector<float>> rows_;

 private:
  int layer_;
};

// 2 X^T X / n in double.
std::vector<double> xtx(const std::vector<float>& x, int64_t in) {
  const int64_t n = int64_t(x.size()) / in;
  std::vector<double> h(size_t(in * in), 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < in; ++i) {
      const double xi = x[size_t(r * in + i)];
      for (int64_t j = 0; j < in; ++j) h[size_t(i * in + j)] += xi * x[size_t(r * in + j)];
    }
  for (auto& v : h) v *= 2.0 / double(n);
  return h;
}

double rel_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double d = 0, s = 0;
  for (size_t i = 0; i < a.size(); ++i) d += (a[i] - b[i]) * (a[i] - b[i]), s += b[i] * b[i];
  return std::sqrt(d / s);
}

TEST(GptqPipeline, HessianPerPathEqualsXtXOfTheRoutedRowsAndFollowsReplacedLinears) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir();
  const QuantizeOptions o = small_options(m);
  fwd::Engine engine = load_search_engine(m);
  const CalibRows rows = collect_calib_rows(o, engine);
  ASSERT_GT(rows.rows_und, 0);
  ASSERT_GT(rows.rows_gen, 0);
  const model::ModelSpec& spec = engine.spec();
  const LinearFormats formats(spec, o);
  const int layer = 1;
  // Independent capture of the full-precision layer's inputs.
  RowCapture cap(layer);
  engine.set_observer(&cap);
  for (size_t i = 0; i < rows.samples.size(); ++i) {
    std::vector<float> x = rows.states[i];
    engine.forward_layer(layer, rows.samples[i], x.data());
  }
  engine.set_observer(nullptr);

  const GptqLayerInputs in{engine, spec, formats, rows.samples, rows.states};
  std::map<std::pair<Path, LinearKind>, std::vector<float>> h_fp;
  std::map<std::pair<Path, LinearKind>, int64_t> n_fp;
  visit_layer_hessians(layer, in, [](const model::LinearSpec&) { return true; },
                       [&](const std::vector<const model::LinearSpec*>& targets, std::vector<float>& h, int64_t n) {
                         h_fp[{targets.front()->path, targets.front()->kind}] = h;
                         n_fp[{targets.front()->path, targets.front()->kind}] = n;
                       });
  ASSERT_EQ(h_fp.size(), 8u);  // (und, gen) x (q, o, gate, down)
  for (const auto& [key, h] : h_fp) {
    const std::vector<float>& x = cap.rows_.at(key);
    const int64_t width = spec.layers[size_t(layer)].path(key.first).linear(key.second).in;
    EXPECT_EQ(n_fp.at(key), int64_t(x.size()) / width);
    EXPECT_EQ(n_fp.at(key), key.first == Path::Und ? rows.rows_und : rows.rows_gen);  // exactly the path's rows
    EXPECT_LT(rel_diff(h, xtx(x, width)), 1e-5) << model::path_name(key.first) << " " << int(key.second);
  }

  // A visitor that rounds q/k/v (RTN) into the engine: o_proj's H must then be X^T X of the attention
  // output the rounded q/k/v produce, which an independent run with those weights installed captures.
  std::map<std::string, std::vector<float>> rounded;
  auto install_rounded = [&](const model::LinearSpec& ls) {
    io::TensorStore store(m);
    std::vector<float> w = store.read_f32(ls.weight_name()), wq(w.size());
    quant::fake_quantize(w.data(), ls.out, ls.in, formats.params_for(ls.name), wq.data());
    rounded[ls.name] = wq;
    engine.replace_linear({layer, ls.path, ls.kind},
                          std::make_unique<ScaledDense>(ls.out, ls.in, wq, ls.has_bias ? store.read_f32(ls.bias_name()) : std::vector<float>{},
                                                        std::vector<float>{}));
  };
  std::map<std::pair<Path, LinearKind>, std::vector<float>> h_seq;
  visit_layer_hessians(layer, in, [](const model::LinearSpec& ls) { return ls.kind == LinearKind::Q || ls.kind == LinearKind::K ||
                                                                          ls.kind == LinearKind::V || ls.kind == LinearKind::O; },
                       [&](const std::vector<const model::LinearSpec*>& targets, std::vector<float>& h, int64_t) {
                         h_seq[{targets.front()->path, targets.front()->kind}] = h;
                         if (targets.front()->kind == LinearKind::Q)
                           for (const auto* t : targets) install_rounded(*t);
                       });
  RowCapture cap2(layer);  // the engine now runs the rounded q/k/v of both paths
  engine.set_observer(&cap2);
  for (size_t i = 0; i < rows.samples.size(); ++i) {
    std::vector<float> x = rows.states[i];
    engine.forward_layer(layer, rows.samples[i], x.data());
  }
  engine.set_observer(nullptr);
  for (Path p : {Path::Und, Path::Gen}) {
    const int64_t width = spec.layers[size_t(layer)].path(p).linear(LinearKind::O).in;
    const std::vector<double> ref = xtx(cap2.rows_.at({p, LinearKind::O}), width);
    EXPECT_LT(rel_diff(h_seq.at({p, LinearKind::O}), ref), 1e-5) << model::path_name(p);
    EXPECT_GT(rel_diff(h_fp.at({p, LinearKind::O}), ref), 1e-4) << model::path_name(p) << ": rounding q/k/v must change o's inputs";
    EXPECT_LT(rel_diff(h_seq.at({p, LinearKind::Q}), xtx(cap.rows_.at({p, LinearKind::Q}), width)), 1e-5);  // q's own inputs unchanged
  }
}

std::string quantize_cmd(const std::string& args) { return test::exe() + " quantize " + args + " 2>&1"; }
std::string small_calib(const std::string& m) {
  return " --calib text:" + calib_text() + " --calib t2i:" + m + "/calib_prompts.txt --max-tokens 512 --max-prompts 2 --steps 4 "
         "--t2i-taus 2 --awq-rows 256";
}

TEST(GptqPipeline, CheckpointKeepsStaticGroupsBeatsRtnOnCalibrationRowsAndSequentialChangesDownstream) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("gptq_pipeline");
  std::string out;
  ASSERT_EQ(test::run_command(quantize_cmd(m + " --scheme gptq-int4 --group-size 64" + small_calib(m) + " --json --out " + d + "/seq"), &out), 0) << out;
  EXPECT_NE(out.find("\"gptq\""), std::string::npos) << out;
  ASSERT_EQ(test::run_command(quantize_cmd(m + " --scheme gptq-int4 --group-size 64 --no-sequential" + small_calib(m) + " --out " + d + "/noseq"), &out), 0) << out;
  ASSERT_EQ(test::run_command(quantize_cmd(m + " --scheme rtn-int4 --group-size 64 --out " + d + "/rtn"), &out), 0) << out;
  const formats::CheckpointReader seq(d + "/seq"), noseq(d + "/noseq"), rtn(d + "/rtn");
  ASSERT_EQ(seq.quantized_linears().size(), 56u);

  // Calibration rows of layer 0 (the same for both modes: nothing is rounded before it).
  QuantizeOptions o = small_options(m);
  fwd::Engine engine = load_search_engine(m);
  const CalibRows rows = collect_calib_rows(o, engine);
  RowCapture cap(0);
  engine.set_observer(&cap);
  for (size_t i = 0; i < rows.samples.size(); ++i) {
    std::vector<float> x = rows.states[i];
    engine.forward_layer(0, rows.samples[i], x.data());
  }
  engine.set_observer(nullptr);
  io::TensorStore src(m);
  int differs_from_rtn = 0;
  for (const auto& l : engine.spec().linears) {
    const quant::QTensor g = seq.read_quantized(l.name), r = rtn.read_quantized(l.name), ns = noseq.read_quantized(l.name);
    // Act-order with static groups: every group's parameters are RTN's of the original group.
    ASSERT_EQ(g.group, 64) << l.name;
    ASSERT_EQ(g.scales, r.scales) << l.name;
    ASSERT_EQ(g.zeros, r.zeros) << l.name;
    differs_from_rtn += g.codes != r.codes;
    // Sequential vs not: layer 0's q/k/v (first step of the first layer) see identical inputs.
    const bool first_inputs = l.layer == 0 && (l.kind == LinearKind::Q || l.kind == LinearKind::K || l.kind == LinearKind::V);
    if (first_inputs) EXPECT_EQ(g.codes, ns.codes) << l.name;
    else EXPECT_NE(g.codes, ns.codes) << l.name << ": inputs after rounded linears must differ in sequential mode";
    if (l.layer != 0 || (l.kind != LinearKind::Q && l.kind != LinearKind::Gate)) continue;
    // On the calibration rows GPTQ saw (layer 0: identical in both modes for q; gate sees the rounded
    // attention in sequential mode, so compare the non-sequential checkpoint there), its output error is
    // below RTN's.
    const quant::QTensor& mine = l.kind == LinearKind::Q ? g : ns;
    const std::vector<float> w = src.read_f32(l.weight_name()), wg = mine.dequantize(), wr = r.dequantize();
    const std::vector<float>& x = cap.rows_.at({l.path, l.kind});
    const int64_t n = int64_t(x.size()) / l.in;
    double eg = 0, er = 0;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t o2 = 0; o2 < l.out; ++o2) {
        double a = 0, b = 0;
        for (int64_t c = 0; c < l.in; ++c) {
          const double xv = x[size_t(t * l.in + c)];
          a += xv * (double(w[size_t(o2 * l.in + c)]) - wg[size_t(o2 * l.in + c)]);
          b += xv * (double(w[size_t(o2 * l.in + c)]) - wr[size_t(o2 * l.in + c)]);
        }
        eg += a * a, er += b * b;
      }
    EXPECT_LT(eg, 0.8 * er) << l.name;
  }
  EXPECT_EQ(differs_from_rtn, 56);
}

TEST(GptqPipeline, RefusesBadGptqOptionsBeforeWork) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("gptq_refuse");
  std::string out;
  EXPECT_EQ(test::run_command(quantize_cmd(m + " --scheme gptq-int4 --gptq-block 0" + small_calib(m) + " --out " + d + "/a"), &out), 1);
  EXPECT_NE(out.find("--gptq-block"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(quantize_cmd(m + " --scheme gptq-int4 --gptq-damp -1" + small_calib(m) + " --out " + d + "/a"), &out), 1);
  EXPECT_NE(out.find("--gptq-damp"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(quantize_cmd(m + " --scheme gptq-int4 --out " + d + "/a"), &out), 1);
  EXPECT_NE(out.find("needs calibration inputs"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(d + "/a"));
}

}  // namespace
}  // namespace lq::pipeline
