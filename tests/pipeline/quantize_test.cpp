// lance-quant quantize: exact folds (norm -> linears, GQA-shared v -> o), the legacy quantizer, CLI
// refusals, a kill -9 mid-run, and small end-to-end runs whose output loads back through the reader.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "calib/calibrate.h"
#include "calib/stats.h"
#include "formats/checkpoint.h"
#include "formats/fold_scales.h"
#include "forward/forward.h"
#include "forward/prompts.h"
#include "forward/t2i.h"
#include "io/safetensors.h"
#include "pipeline/layer_search.h"
#include "pipeline/searches.h"
#include "quant/rtn.h"
#include "test_paths.h"
#include "test_random.h"
#include "tokenizer/tokenizer.h"

namespace lq::pipeline {
namespace {

namespace fs = std::filesystem;

std::vector<float> randn(int64_t n, uint32_t seed) { return lq::test::gaussian(size_t(n), 1.0f, seed); }

// y = x W^T (+ b)
std::vector<float> lin(const std::vector<float>& x, int64_t n, const std::vector<float>& w, int64_t out, int64_t in,
                       const float* b = nullptr) {
  std::vector<float> y(static_cast<size_t>(n * out));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t o = 0; o < out; ++o) {
      double s = b ? b[o] : 0.0;
      for (int64_t c = 0; c < in; ++c) s += double(x[t * in + c]) * w[o * in + c];
      y[t * out + o] = float(s);
    }
  return y;
}

double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i]))), scale = std::max(scale, double(std::fabs(a[i])));
  return m / scale;
}

TEST(Folds, GqaSharedVToOIsExact) {
  // 4 query heads read 2 KV heads (head_dim 8): o's input channel h*8+d is v's channel (h/2)*8+d.
  const int64_t hidden = 32, hd = 8, kv = 2, heads = 4, n = 5;
  model::FusionPair f;
  f.kind = model::FusionKind::VToO;
  f.heads_per_group = heads / kv;
  f.head_dim = hd;
  f.num_scales = kv * hd;
  std::vector<float> wv = randn(kv * hd * hidden, 1), bv = randn(kv * hd, 2), wo = randn(hidden * heads * hd, 3), x = randn(n * hidden, 4);
  auto run = [&](const std::vector<float>& v_w, const std::vector<float>& v_b, const std::vector<float>& o_w) {
    const std::vector<float> v = lin(x, n, v_w, kv * hd, hidden, v_b.data());
    std::vector<float> o_in(static_cast<size_t>(n * heads * hd));  // attention as a head-wise copy of the KV head's values
    for (int64_t t = 0; t < n; ++t)
      for (int64_t c = 0; c < heads * hd; ++c) o_in[t * heads * hd + c] = v[t * kv * hd + f.scale_index(c)];
    return lin(o_in, n, o_w, hidden, heads * hd);
  };
  const std::vector<float> ref = run(wv, bv, wo);
  std::vector<float> s(static_cast<size_t>(kv * hd));
  for (size_t i = 0; i < s.size(); ++i) s[i] = 0.3f + 0.17f * float(i);
  divide_rows(wv.data(), hidden, s, bv.data());
  scale_columns(wo.data(), hidden, heads * hd, s, f);
  EXPECT_LT(max_rel(ref, run(wv, bv, wo)), 1e-5);
}

TEST(Folds, NormToLinearsIsExact) {
  const int64_t hidden = 48, out = 16, n = 4;
  model::FusionPair f;  // identity scale map
  std::vector<float> norm_w = randn(hidden, 5), w = randn(out * hidden, 6), x = randn(n * hidden, 7);
  auto run = [&](const std::vector<float>& nw, const std::vector<float>& ww) {
    std::vector<float> h(x.size());
    for (int64_t t = 0; t < n; ++t) {
      double ss = 0;
      for (int64_t c = 0; c < hidden; ++c) ss += double(x[t * hidden + c]) * x[t * hidden + c];
      const float inv = float(1.0 / std::sqrt(ss / hidden + 1e-6));
      for (int64_t c = 0; c < hidden; ++c) h[t * hidden + c] = nw[c] * (x[t * hidden + c] * inv);
    }
    return lin(h, n, ww, out, hidden);
  };
  const std::vector<float> ref = run(norm_w, w);
  std::vector<float> s(hidden);
  for (int64_t c = 0; c < hidden; ++c) s[c] = std::exp(0.1f * float(c % 11) - 0.5f);
  divide_vector(norm_w.data(), s);
  scale_columns(w.data(), out, hidden, s, f);
  EXPECT_LT(max_rel(ref, run(norm_w, w)), 1e-5);
}

TEST(Legacy, CodesFromF32ScalesBf16Stored) {
  // The doc: "codes chosen with fp32 scales but bf16 scales stored".
  const int64_t out = 4, in = 64;
  const std::vector<float> w = randn(out * in, 8);
  quant::QuantParams p;
  p.group = 32;
  const quant::QTensor q = legacy_quantize(w.data(), out, in, p);
  quant::RtnParams f32{quant::Scheme::Int4Asym, 32, quant::ScaleDType::F32};
  const quant::QTensor ref = quant::quantize_rtn(w.data(), out, in, f32);
  EXPECT_EQ(q.codes, ref.codes);
  EXPECT_EQ(q.zeros, ref.zeros);
  EXPECT_EQ(q.scale_dtype, quant::ScaleDType::BF16);
  for (size_t i = 0; i < q.scales.size(); ++i) EXPECT_EQ(q.scales[i], quant::round_to_scale_dtype(ref.scales[i], quant::ScaleDType::BF16));
  q.validate("legacy");
}

std::string quantize_cmd(const std::string& args) { return test::exe() + " quantize " + args + " 2>&1"; }

TEST(QuantizeCli, RefusesBadInputsClearly) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("quantize_cli");
  std::string out;
  EXPECT_EQ(test::run_command(quantize_cmd(m + " --scheme int3 --out " + d + "/a"), &out), 1);
  EXPECT_NE(out.find("unknown scheme 'int3'"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(quantize_cmd(m + " --scheme rtn-int4 --group-size 48 --out " + d + "/a"), &out), 1);
  EXPECT_NE(out.find("--group-size"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(quantize_cmd(m + " --scheme awq-proxy --out " + d + "/a"), &out), 1);
  EXPECT_NE(out.find("needs --stats"), std::string::npos) << out;

  // Statistics of another model.
  calib::StatsFile other;
  other.model_fingerprint = "0123456789abcdef";
  other.save(d + "/other.safetensors");
  EXPECT_EQ(test::run_command(quantize_cmd(m + " --scheme awq-proxy --stats " + d + "/other.safetensors --out " + d + "/a"), &out), 1);
  EXPECT_NE(out.find("another model"), std::string::npos) << out;

  // Statistics of this model without the gen path: refused unless --allow-partial, naming path and linears.
  const model::ModelConfig cfg = model::load_config(m);
  io::TensorStore store(m);
  const model::ModelSpec spec = model::build_spec(cfg, store);
  calib::StatsFile und;
  und.model_fingerprint = calib::model_fingerprint(m);
  for (const auto& l : spec.linears) {
    if (l.path != model::Path::Und) continue;
    calib::LinearStats& s = und.linears[l.name];
    s.all = calib::ChannelStats(l.in);
    const std::vector<float> x = randn(8 * l.in, 9);
    s.all.add_rows(x.data(), 8, l.in);
  }
  und.save(d + "/und.safetensors");
  EXPECT_EQ(test::run_command(quantize_cmd(m + " --scheme awq-proxy --group-size 64 --stats " + d + "/und.safetensors --out " + d + "/a"), &out), 1);
  EXPECT_NE(out.find("path gen"), std::string::npos) << out;
  EXPECT_NE(out.find("_moe_gen"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(d + "/a"));
  EXPECT_EQ(test::run_command(quantize_cmd(m + " --scheme awq-proxy --group-size 64 --allow-partial --stats " + d + "/und.safetensors --out " + d + "/a"), &out), 0) << out;

  // DIR now holds a checkpoint: refused without --force, replaced with it.
  EXPECT_EQ(test::run_command(quantize_cmd(m + " --scheme rtn-int4 --out " + d + "/a"), &out), 1);
  EXPECT_NE(out.find("already holds output of lance-quant"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(quantize_cmd(m + " --scheme rtn-int4 --group-size 32 --out " + d + "/a --force"), &out), 0) << out;
  EXPECT_EQ(formats::CheckpointReader(d + "/a").quantized_linears().front().group, 32);
}

TEST(QuantizeCli, RtnOutputLoadsBackBitExact) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("quantize_rtn");
  std::string out;
  ASSERT_EQ(test::run_command(quantize_cmd(m + " --scheme rtn-int4 --group-size 64 --keep mlp_moe_gen.down_proj --keep '*layers.3.mlp.up_proj' --out " + d + "/q"), &out), 0) << out;
  formats::CheckpointReader r(d + "/q");
  io::TensorStore src(m);
  const model::ModelSpec spec = model::build_spec(model::load_config(m), src);
  EXPECT_EQ(r.quantized_linears().size(), spec.linears.size() - 4 - 1);  // 4 layers' gen down_proj + one up_proj kept
  for (const auto& l : spec.linears) {
    const bool kept = l.name.find("down_proj") != std::string::npos && l.path == model::Path::Gen;
    if (kept || l.name == "language_model.model.layers.3.mlp.up_proj") {
      EXPECT_FALSE(r.is_quantized(l.name)) << l.name;
      continue;
    }
    const std::vector<float> w = src.read_f32(l.weight_name());
    const quant::QTensor want = quant::quantize_rtn(w.data(), l.out, l.in, {quant::Scheme::Int4Asym, 64, quant::ScaleDType::BF16});
    const quant::QTensor got = r.read_quantized(l.name);
    ASSERT_EQ(got.codes, want.codes) << l.name;
    ASSERT_EQ(got.scales, want.scales) << l.name;
  }
  // Untouched tensors pass through (bf16 by default); lm_head stays separate.
  EXPECT_EQ(r.file().info("language_model.lm_head.weight").dtype, io::DType::BF16);
  for (const auto& e : fs::directory_iterator(d)) EXPECT_EQ(e.path().filename().string().find("lq-partial"), std::string::npos);
}

TEST(QuantizeCli, AwqSmallRunLoadsBack) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("quantize_awq");
  const std::string src = std::string(LQ_SOURCE_DIR) + "/data/calib/text.txt";
  std::string out;
  ASSERT_EQ(test::run_command(quantize_cmd(m + " --scheme awq-int4 --group-size 64 --calib text:" + src + " --calib t2i:" + m +
                                           "/calib_prompts.txt --max-tokens 512 --max-prompts 1 --steps 4 --t2i-taus 1 --awq-rows 128 "
                                           "--clip-rows 32 --keep-dtype f32 --dense-out " + d + "/dense --out " + d + "/q --json"), &out), 0) << out;
  EXPECT_NE(out.find("\"alpha\""), std::string::npos);
  formats::CheckpointReader r(d + "/q");
  EXPECT_EQ(r.quantized_linears().size(), 56u);
  for (const auto& l : r.quantized_linears()) r.read_quantized(l.base).validate(l.base);

  // The checkpoint (folded norms and weights, 4-bit kernels) must compute what its --dense-out twin (every
  // fold undone, dequantized f32) computes, on a t2i sequence where the shared attention mixes und and gen
  // rows. A v -> o fold searched per path is not exact there (gen queries read und values): this caught it.
  const fwd::Engine quant = fwd::Engine::load(d + "/q"), dense = fwd::Engine::load(d + "/dense");
  const fwd::T2iSettings st = fwd::load_t2i_settings(m);
  const fwd::T2iPrompt prompt = fwd::t2i_prompt(tok::Tokenizer::load(m), "a small green square", st.instruction, st.grid);
  const std::vector<float> noise = fwd::normal_noise(7, st.grid.tokens() * dense.config().latent_channels);
  std::vector<float> hq, hd;
  const fwd::Chunk cq = fwd::full_branch_chunk(quant, prompt.cond, prompt.vision_start, prompt.vision_end, st.grid, noise.data(), 0.6);
  const fwd::Chunk cd = fwd::full_branch_chunk(dense, prompt.cond, prompt.vision_start, prompt.vision_end, st.grid, noise.data(), 0.6);
  quant.forward(cq, nullptr, fwd::CacheWrite::No, &hq);
  dense.forward(cd, nullptr, fwd::CacheWrite::No, &hd);
  const int64_t rows = cd.rows(), hidden = dense.config().hidden_size, last = dense.num_layers();
  for (auto path : {model::Path::Und, model::Path::Gen}) {
    double diff = 0, ref = 0;
    for (int64_t t = 0; t < rows; ++t) {
      if (cd.paths[size_t(t)] != path) continue;
      for (int64_t c = 0; c < hidden; ++c) {
        const size_t i = size_t((last * rows + t) * hidden + c);
        diff += double(hq[i] - hd[i]) * (hq[i] - hd[i]);
        ref += double(hd[i]) * hd[i];
      }
    }
    // Only the summation order differs (fused 4-bit kernel vs dense f32): ~2e-5; untied v -> o folds gave 2e-3 (und) / 1e-2 (gen).
    EXPECT_LT(std::sqrt(diff / ref), 5e-4) << model::path_name(path) << " path: checkpoint and dense twin disagree";
  }

  // eval's per-linear errors of the folded checkpoint are measured in the original basis (the fold scales
  // written beside it): they must equal the dense twin's, whose linears ARE in the original basis.
  EXPECT_TRUE(fs::exists(d + "/q/" + formats::kFoldScalesFile));
  auto per_linear = [&](const std::string& quant_dir, const std::string& report) {
    std::string log;
    EXPECT_EQ(test::run_command(test::exe() + " eval " + m + " " + quant_dir + " --out " + report +
                                    " --no-chat --max-text-tokens 256 --max-t2i 1 --steps 2 --quiet 2>&1", &log), 0) << log;
    std::ifstream f(report + "/report.json");
    std::map<std::string, double> errors;
    const nlohmann::json j = nlohmann::json::parse(f);
    for (const auto& l : j.at("layers").at("linears")) errors[l.at("name")] = l.at("rel_error");
    return errors;
  };
  const auto eq = per_linear(d + "/q", d + "/report-q"), ed = per_linear(d + "/dense", d + "/report-dense");
  ASSERT_EQ(eq.size(), 56u);
  for (const auto& [name, e] : ed) EXPECT_NEAR(eq.at(name), e, 1e-3 * e + 1e-5) << name;
}

TEST(QuantizeCli, KillDashNineLeavesNoCheckpoint) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("quantize_kill");
  const std::string src = std::string(LQ_SOURCE_DIR) + "/data/calib/text.txt";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string e = test::exe(), calib = "text:" + src, t2i = "t2i:" + m + "/calib_prompts.txt", outd = d + "/q";
    execl(e.c_str(), e.c_str(), "quantize", m.c_str(), "--scheme", "awq-int4", "--calib", calib.c_str(), "--calib", t2i.c_str(),
          "--out", outd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until the partial directory exists (the run is under way), then kill -9.
  bool started = false;
  for (int i = 0; i < 400 && !started; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    for (const auto& e : fs::directory_iterator(d)) started = started || e.path().filename().string().find(".lq-partial-") != std::string::npos;
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "quantize finished before it could be killed";
  EXPECT_TRUE(started);
  EXPECT_FALSE(fs::exists(d + "/q"));
  for (const auto& e : fs::directory_iterator(d)) EXPECT_NE(e.path().filename().string().find(".lq-partial-"), std::string::npos) << e.path();
}

}  // namespace
}  // namespace lq::pipeline
