// Per-linear number formats in `lance-quant quantize` (--gen-scheme, --override PATTERN=SPEC): what
// lands in the file (stored tensors and dtypes, not just the config), that the engine loads it and
// computes with the stored weights, the precedence of the options, the refusals, and a quality check
// that can fail (INT8 on the gen path lowers its weight error and leaves the und path untouched).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "formats/checkpoint.h"
#include "forward/quant_linear.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/spec.h"
#include "pipeline/quantize.h"
#include "quant/quantizer.h"
#include "test_paths.h"

namespace lq::pipeline {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using quant::Scheme;

// Runs quantize; returns the exit status, `out` receives stdout only (the --json report) or, with
// `merge`, stdout and stderr (error messages).
int quantize(const std::string& args, std::string* out, bool merge = false) {
  const std::string cmd = test::exe() + " quantize " + args;
  return merge ? test::run_command(cmd, out) : test::run_command_stdout(cmd, out);
}

model::ModelSpec mini_spec() {
  io::TensorStore store(test::lance_mini_dir());
  return model::build_spec(model::load_config(test::lance_mini_dir()), store);
}

quant::QuantParams params(Scheme s, int64_t g) {
  quant::QuantParams p;
  p.scheme = s;
  p.group = g;
  return p;
}

// Max |a - b| / max |b|.
double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0, s = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i]))), s = std::max(s, double(std::fabs(b[i])));
  return m / s;
}

// Every gen linear INT8 g64, every und linear INT4 asym g64: stored tensors, bit-exact weights
// (RTN of the original), and the engine's linears compute with them.
void check_gen_int8_checkpoint(const std::string& dir, formats::FormatId format) {
  formats::CheckpointReader r(dir);
  EXPECT_EQ(r.format(), format);
  io::TensorStore src(test::lance_mini_dir());
  const model::ModelSpec spec = mini_spec();
  ASSERT_EQ(r.quantized_linears().size(), spec.linears.size());
  for (const auto& l : spec.linears) {
    const bool gen = l.path == model::Path::Gen;
    const quant::QuantParams want_p = params(gen ? Scheme::Int8Sym : Scheme::Int4Asym, 64);
    // The stored codes: INT8 one per byte (v1) / four per int32 (compressed-tensors), INT4 two / eight.
    const bool v1 = format == formats::FormatId::LanceQuantV1;
    const io::TensorInfo& codes = r.file().info(l.name + (v1 ? ".qweight" : ".weight_packed"));
    EXPECT_EQ(codes.dtype, v1 ? io::DType::U8 : io::DType::I32) << l.name;
    const int64_t per_unit = v1 ? (gen ? 1 : 2) : (gen ? 4 : 8);
    EXPECT_EQ(codes.shape, (std::vector<int64_t>{l.out, l.in / per_unit})) << l.name;
    EXPECT_EQ(r.file().info(l.name + (v1 ? ".scales" : ".weight_scale")).shape, (std::vector<int64_t>{l.out, l.in / 64})) << l.name;
    EXPECT_EQ(r.file().has(l.name + ".weight_zero_point"), !v1 && !gen) << l.name;  // CT: asymmetric only

    const std::vector<float> w = src.read_f32(l.weight_name());
    const quant::QTensor want = quant::quantize(w.data(), l.out, l.in, want_p);
    const quant::QTensor got = r.read_quantized(l.name);
    ASSERT_EQ(got.scheme, want_p.scheme) << l.name;
    ASSERT_EQ(got.group, 64) << l.name;
    ASSERT_EQ(got.dequantize(), want.dequantize()) << l.name;
  }
  // The engine loads the checkpoint and its linears compute x W'^T with the stored weights (INT8
  // through the q8 kernel, INT4 through the q4 kernel).
  const fwd::Engine e = fwd::load_quantized(dir);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (auto path : {model::Path::Und, model::Path::Gen})
    for (auto kind : {model::LinearKind::Q, model::LinearKind::Down}) {
      const fwd::LinearId id{2, path, kind};
      const model::LinearSpec& ls = e.linear_spec(id);
      const std::vector<float> wq = r.read_quantized(ls.name).dequantize();
      const int64_t n = 3;
      std::vector<float> x(size_t(n * ls.in)), y(size_t(n * ls.out)), ref(size_t(n * ls.out));
      for (float& v : x) v = nd(rng);
      e.linear(id).apply(x.data(), n, y.data());
      const std::optional<std::vector<float>> b = r.read_bias(ls.name);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t o = 0; o < ls.out; ++o) {
          double s = b ? (*b)[size_t(o)] : 0.0;
          for (int64_t c = 0; c < ls.in; ++c) s += double(x[size_t(t * ls.in + c)]) * wq[size_t(o * ls.in + c)];
          ref[size_t(t * ls.out + o)] = float(s);
        }
      // Both kernels use int8 activations for few tokens (~0.5% RMS: kernels/q4.h, q8.h): well under 2%, while the
      // wrong stored weights (another format or group: ~10% weight error in INT4) would exceed it.
      EXPECT_LT(max_rel(y, ref), 2e-2) << ls.name;
    }
}

TEST(FormatOverrides, GenSchemeInt8InLanceQuantV1AndCompressedTensors) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("ovr_gen_int8");
  for (auto [name, id] : {std::pair{"lance-quant-v1", formats::FormatId::LanceQuantV1},
                          std::pair{"compressed-tensors", formats::FormatId::CompressedTensors}}) {
    std::string out;
    ASSERT_EQ(quantize(m + " --scheme rtn-int4 --group-size 64 --gen-scheme rtn-int8 --format " + std::string(name) +
                           " --out " + d + "/" + name, &out, true), 0) << out;
    check_gen_int8_checkpoint(d + "/" + name, id);
  }
}

std::map<std::string, json> linears_by_name(const std::string& report) {
  std::map<std::string, json> m;
  const json j = json::parse(report);
  for (const auto& l : j.at("linears")) m[l.at("name").get<std::string>()] = l;
  return m;
}

TEST(FormatOverrides, GenInt8LowersGenWeightErrorAndLeavesUndUntouched) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("ovr_quality");
  std::string plain, mixed;
  ASSERT_EQ(quantize(m + " --scheme rtn-int4 --group-size 64 --json --out " + d + "/plain", &plain), 0) << plain;
  ASSERT_EQ(quantize(m + " --scheme rtn-int4 --group-size 64 --gen-scheme int8 --json --out " + d + "/mixed", &mixed), 0) << mixed;
  const auto a = linears_by_name(plain), b = linears_by_name(mixed);
  ASSERT_EQ(a.size(), 56u);
  ASSERT_EQ(b.size(), 56u);
  int gen = 0;
  for (const auto& [name, la] : a) {
    const json& lb = b.at(name);
    if (name.find("_moe_gen") == std::string::npos) {
      EXPECT_EQ(lb["format"], "int4_asym:g64") << name;
      EXPECT_EQ(lb["weight_rel_error"].get<double>(), la["weight_rel_error"].get<double>()) << name;
      continue;
    }
    ++gen;
    EXPECT_EQ(lb["format"], "int8_sym:g64") << name;
    // INT8 steps are 2^4 finer than INT4 (fewer for a symmetric range); a tenth of the error is slack.
    EXPECT_LT(lb["weight_rel_error"].get<double>(), 0.1 * la["weight_rel_error"].get<double>()) << name;
  }
  EXPECT_EQ(gen, 28);
}

TEST(FormatOverrides, OverrideChangesExactlyTheMatchingLinearsWithDocumentedPrecedence) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("ovr_override");
  std::string out;
  ASSERT_EQ(quantize(m + " --scheme rtn-int4 --group-size 64 --override 'down_proj=int4:g128' --out " + d + "/a", &out, true), 0) << out;
  formats::CheckpointReader r(d + "/a");
  int down = 0;
  for (const auto& l : r.quantized_linears()) {
    const bool is_down = l.base.find("down_proj") != std::string::npos;
    down += is_down;
    EXPECT_EQ(l.scheme, Scheme::Int4Asym) << l.base;
    EXPECT_EQ(l.group, is_down ? 128 : 64) << l.base;
    EXPECT_EQ(r.file().info(l.base + ".scales").shape[1], l.in / l.group) << l.base;
  }
  EXPECT_EQ(down, 8);
  EXPECT_EQ(r.quantized_linears().size(), 56u);

  // --keep > --override (last match wins) > --gen-scheme > --scheme.
  ASSERT_EQ(quantize(m + " --scheme rtn-int4 --group-size 64 --gen-scheme int8 --override 'down_proj=int4:g128' "
                         "--override '*layers.1.mlp_moe_gen.down_proj=nvfp4' --override '*layers.3.self_attn.o_proj=bf16' "
                         "--keep layers.0.mlp.up_proj --override 'layers.0.mlp.up_proj=int8' --out " + d + "/b", &out, true), 0) << out;
  formats::CheckpointReader rb(d + "/b");
  const auto fmt = [&](const std::string& base) -> std::string {
    if (!rb.is_quantized(base)) return "kept";
    const quant::QTensor q = rb.read_quantized(base);
    return std::string(quant::scheme_name(q.scheme)) + ":g" + std::to_string(q.group);
  };
  const std::string L = "language_model.model.layers.";
  EXPECT_EQ(fmt(L + "0.mlp.up_proj"), "kept");                          // --keep beats --override
  EXPECT_EQ(fmt(L + "1.mlp_moe_gen.down_proj"), "nvfp4:g16");            // the last matching override
  EXPECT_EQ(fmt(L + "2.mlp_moe_gen.down_proj"), "int4_asym:g128");       // --override beats --gen-scheme
  EXPECT_EQ(fmt(L + "2.mlp_moe_gen.up_proj"), "int8_sym:g64");           // --gen-scheme
  EXPECT_EQ(fmt(L + "2.mlp.up_proj"), "int4_asym:g64");                  // --scheme
  EXPECT_EQ(fmt(L + "3.self_attn.o_proj"), "kept");                      // SPEC bf16
  EXPECT_EQ(fmt(L + "3.self_attn.o_proj_moe_gen"), "int8_sym:g64");      // a glob matches the whole name
  EXPECT_EQ(rb.quantized_linears().size(), 54u);
  fwd::load_quantized(d + "/b");  // four number formats and bf16 linears in one engine
}

TEST(FormatOverrides, RefusalsNameTheProblemAndLeaveNothing) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("ovr_refuse");
  std::string out;
  EXPECT_EQ(quantize(m + " --scheme rtn-int4 --group-size 64 --gen-scheme int8 --format autoawq --out " + d + "/a", &out, true), 1);
  EXPECT_NE(out.find("autoawq"), std::string::npos) << out;
  EXPECT_NE(out.find("one number format"), std::string::npos) << out;
  EXPECT_NE(out.find("_moe_gen' is int8_sym g64"), std::string::npos) << out;
  EXPECT_NE(out.find("' is int4_asym g64"), std::string::npos) << out;
  EXPECT_EQ(quantize(m + " --scheme rtn-int4 --group-size 64 --override 'down_proj=int4:g128' --format autoawq --out " + d + "/a", &out, true), 1);
  EXPECT_NE(out.find("down_proj' is int4_asym g128"), std::string::npos) << out;
  EXPECT_EQ(quantize(m + " --scheme nvfp4 --gen-scheme int8 --format modelopt --out " + d + "/a", &out, true), 1);
  EXPECT_NE(out.find("modelopt"), std::string::npos) << out;

  EXPECT_EQ(quantize(m + " --scheme rtn-int4 --override 'down_proj=int3' --out " + d + "/a", &out, true), 1);
  EXPECT_NE(out.find("'int3'"), std::string::npos) << out;
  EXPECT_EQ(quantize(m + " --scheme rtn-int4 --gen-scheme fp8 --out " + d + "/a", &out, true), 1);
  EXPECT_NE(out.find("--gen-scheme 'fp8'"), std::string::npos) << out;
  EXPECT_EQ(quantize(m + " --scheme rtn-int4 --override 'down_proj=int4:g48' --out " + d + "/a", &out, true), 1);
  EXPECT_NE(out.find("got 48"), std::string::npos) << out;
  EXPECT_EQ(quantize(m + " --scheme rtn-int4 --override 'down_proj=nvfp4:g32' --out " + d + "/a", &out, true), 1);
  EXPECT_NE(out.find("blocks of 16"), std::string::npos) << out;
  EXPECT_EQ(quantize(m + " --scheme rtn-int4 --override down_proj --out " + d + "/a", &out, true), 1);
  EXPECT_NE(out.find("PATTERN=SPEC"), std::string::npos) << out;
  EXPECT_EQ(quantize(m + " --scheme rtn-int4 --override 'dwn_proj=int8' --out " + d + "/a", &out, true), 1);
  EXPECT_NE(out.find("--override dwn_proj] matches no target linear"), std::string::npos) << out;
  EXPECT_EQ(quantize(m + " --scheme legacy-awq --gen-scheme int8 --out " + d + "/a", &out, true), 1);
  EXPECT_NE(out.find("legacy-awq"), std::string::npos) << out;
  EXPECT_TRUE(fs::is_empty(d)) << "a refused run left files behind";
}

// A tiny Lance-structured model (synth preset tiny) whose MLP is 96 wide: group 32 divides every
// input width, 64 does not divide down_proj's.
std::string odd_width_model(const std::string& dir) {
  std::string out;
  EXPECT_EQ(test::run_command(test::exe() + " synth --preset tiny --out " + dir + " 2>&1", &out), 0) << out;
  json cfg;
  {
    std::ifstream is(dir + "/llm_config.json");
    cfg = json::parse(is);
  }
  cfg["intermediate_size"] = 96;
  std::ofstream(dir + "/llm_config.json") << cfg.dump(2);
  fs::remove(dir + "/model.safetensors.index.json");
  const model::ModelConfig c = model::load_config(dir);
  const model::ModelSpec spec = model::expected_spec(c, model::Arch::LanceMoT);
  const std::string file = dir + "/model.safetensors";
  fs::remove(file);
  io::SafetensorsWriter w(file, {{"format", "pt"}});
  for (const auto& t : spec.tensors) w.declare(t.name, io::DType::F32, t.shape);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  for (const auto& t : spec.tensors) {
    int64_t n = 1;
    for (auto s : t.shape) n *= s;
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = nd(rng);
    w.write(v.data(), v.size() * sizeof(float));
  }
  w.finish();
  return dir;
}

TEST(FormatOverrides, GroupThatDoesNotDivideTheInputWidthIsRefused) {
  const std::string d = test::scratch_dir("ovr_odd_width");
  const std::string m = odd_width_model(d + "/model");
  std::string out;
  ASSERT_EQ(quantize(m + " --scheme rtn-int4 --group-size 32 --out " + d + "/ok", &out, true), 0) << out;  // the model is valid
  EXPECT_EQ(quantize(m + " --scheme rtn-int4 --group-size 64 --out " + d + "/q", &out, true), 1);
  EXPECT_NE(out.find("mlp.down_proj] group size 64 does not divide the input width 96"), std::string::npos) << out;
  EXPECT_EQ(quantize(m + " --scheme rtn-int4 --group-size 32 --override 'mlp_moe_gen.down_proj=int8:g64' --out " + d + "/q", &out, true), 1);
  EXPECT_NE(out.find("mlp_moe_gen.down_proj] group size 64 does not divide the input width 96"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(d + "/q"));
  for (const auto& e : fs::directory_iterator(d)) EXPECT_EQ(e.path().filename().string().find("lq-partial"), std::string::npos) << e.path();
}

}  // namespace
}  // namespace lq::pipeline
