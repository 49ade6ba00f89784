// Writers and readers: every (format, scheme) round-trips bit for bit (write -> detect -> read ->
// identical dequantized weights, biases and pass-through tensors), and the writers refuse what a
// layout cannot hold with an error that names the tensor.
//
// Interop hook: with LQ_INTEROP_OUT=<dir> set, InteropFiles.* keeps one checkpoint per case under
// <dir>/<case>/ plus <dir>/<case>/expected/<tensor>.f32 (raw little-endian f32 of what OUR reader
// returns) and <dir>/manifest.json; tests/formats/interop_test.py then decodes the checkpoints with
// the public packages (compressed-tensors, AutoAWQ) and compares.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "formats/checkpoint.h"
#include "io/error.h"
#include "num/formats.h"
#include "quant/quantizer.h"
#include "test_paths.h"
#include "test_random.h"

namespace lq::formats {
namespace {

namespace fs = std::filesystem;
using quant::QuantParams;
using quant::QTensor;
using quant::ScaleDType;
using quant::Scheme;

using lq::test::gaussian;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

float round_bias(float x, FormatId f) {
  return f == FormatId::AutoAwq ? num::f16_to_f32(num::f32_to_f16(x)) : num::bf16_to_f32(num::f32_to_bf16(x));
}

struct Case {
  std::string name;
  FormatId format;
  QuantParams params;
  int64_t out, in;
};

QuantParams make(Scheme s, int64_t g, ScaleDType dt = ScaleDType::BF16) {
  QuantParams p;
  p.scheme = s;
  p.group = g;
  p.scale_dtype = dt;
  return p;
}
QuantParams nvfp4(quant::Nvfp4Encoding e, bool pow2 = false) {
  QuantParams p;
  p.scheme = Scheme::NvFp4;
  p.nvfp4 = e;
  p.nvfp4_pow2_tensor_scale = pow2;
  return p;
}

// Shapes chosen to exercise each layout's edge: odd row counts where the layout allows them (zero
// points packed along rows, padding of the last int32), groups that are not powers of two.
std::vector<Case> cases() {
  using E = quant::Nvfp4Encoding;
  return {
      {"v1-int4-asym-g32", FormatId::LanceQuantV1, make(Scheme::Int4Asym, 32), 24, 96},
      {"v1-int4-sym-g64", FormatId::LanceQuantV1, make(Scheme::Int4Sym, 64), 7, 128},
      {"v1-nvfp4-legacy", FormatId::LanceQuantV1, nvfp4(E::Legacy), 9, 64},
      {"v1-nvfp4-pow2", FormatId::LanceQuantV1, nvfp4(E::Standard, true), 9, 64},
      {"autoawq-int4-asym-g32", FormatId::AutoAwq, make(Scheme::Int4Asym, 32, ScaleDType::F16), 40, 96},
      {"autoawq-int4-sym-g64", FormatId::AutoAwq, make(Scheme::Int4Sym, 64, ScaleDType::F16), 32, 128},
      {"autoawq-int4-asym-bf16scales", FormatId::AutoAwq, make(Scheme::Int4Asym, 128), 64, 256},
      {"ct-int4-asym-g24", FormatId::CompressedTensors, make(Scheme::Int4Asym, 24), 37, 72},
      {"ct-int4-sym-g32-f16", FormatId::CompressedTensors, make(Scheme::Int4Sym, 32, ScaleDType::F16), 21, 96},
      {"ct-int8-sym-channel", FormatId::CompressedTensors, make(Scheme::Int8Sym, 0), 13, 72},
      {"ct-nvfp4", FormatId::CompressedTensors, nvfp4(E::Standard), 37, 80},
      {"ct-nvfp4-pow2", FormatId::CompressedTensors, nvfp4(E::Standard, true), 8, 32},
      {"modelopt-nvfp4", FormatId::ModelOpt, nvfp4(E::Standard), 37, 64},
  };
}

struct Written {
  std::vector<QTensor> q;
  std::vector<std::vector<float>> bias;  // empty: none
  std::vector<float> norm, head;         // plain tensors (f32 originals)
  std::vector<std::string> bases;
};

// Two quantized linears (the first with a bias) between pass-through tensors, lm_head last.
Written write_case(const Case& c, const std::string& dir) {
  Written w;
  w.bases = {"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"};
  std::vector<PlanEntry> plan;
  plan.push_back(PlainDecl{"model.layers.0.input_layernorm.weight", {c.in}, io::DType::BF16});
  for (size_t i = 0; i < 2; ++i) {
    auto wt = gaussian(size_t(c.out * c.in), 0.02f * float(i + 1), uint32_t(11 + i));
    w.q.push_back(quant::quantize(wt.data(), c.out, c.in, c.params));
    w.bias.push_back(i == 0 ? gaussian(size_t(c.out), 0.1f, 3) : std::vector<float>{});
    plan.push_back(LinearDecl{w.bases[i], c.params.scheme, c.out, c.in, w.q[i].group, c.params.scale_dtype, i == 0});
  }
  plan.push_back(PlainDecl{"lm_head.weight", {5, c.in}, io::DType::F32});
  w.norm = gaussian(size_t(c.in), 1.0f, 5);
  w.head = gaussian(size_t(5 * c.in), 1.0f, 6);

  WriterOptions opt;
  opt.model_config = {{"model_type", "qwen2"}, {"hidden_size", c.in}};
  CheckpointWriter writer(dir, c.format, plan, opt);
  writer.write_plain("model.layers.0.input_layernorm.weight", w.norm.data());
  for (size_t i = 0; i < 2; ++i) writer.write_quantized(w.bases[i], w.q[i], w.bias[i].empty() ? nullptr : w.bias[i].data());
  writer.write_plain("lm_head.weight", w.head.data());
  writer.finish();
  return w;
}

void expect_round_trip(const Case& c, const std::string& dir, const Written& w) {
  EXPECT_EQ(detect_format(dir), c.format);
  CheckpointReader r(dir);
  ASSERT_EQ(r.quantized_linears().size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    QTensor back = r.read_quantized(w.bases[i]);
    EXPECT_EQ(back.out, c.out);
    EXPECT_EQ(back.in, c.in);
    EXPECT_EQ(back.group, w.q[i].group);
    EXPECT_TRUE(same_bits(back.dequantize(), w.q[i].dequantize())) << c.name << " " << w.bases[i];
    auto bias = r.read_bias(w.bases[i]);
    ASSERT_EQ(bias.has_value(), !w.bias[i].empty());
    if (bias) {
      for (int64_t k = 0; k < c.out; ++k) EXPECT_EQ((*bias)[size_t(k)], round_bias(w.bias[i][size_t(k)], c.format));
    }
  }
  auto plain = r.plain_names();
  std::sort(plain.begin(), plain.end());
  EXPECT_EQ(plain, (std::vector<std::string>{"lm_head.weight", "model.layers.0.input_layernorm.weight"}));
  auto norm = r.read_plain("model.layers.0.input_layernorm.weight");
  for (size_t k = 0; k < norm.size(); ++k) EXPECT_EQ(norm[k], num::bf16_to_f32(num::f32_to_bf16(w.norm[k])));
  EXPECT_TRUE(same_bits(r.read_plain("lm_head.weight"), w.head));  // f32 on request
}

class RoundTrip : public ::testing::TestWithParam<Case> {};

TEST_P(RoundTrip, DequantizedWeightsBiasAndPlainTensorsSurviveBitForBit) {
  const Case& c = GetParam();
  const std::string dir = test::scratch_dir("formats-" + c.name);
  Written w = write_case(c, dir);
  expect_round_trip(c, dir, w);
  for (const auto& e : fs::directory_iterator(dir))  // temp files renamed away
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

INSTANTIATE_TEST_SUITE_P(AllFormats, RoundTrip, ::testing::ValuesIn(cases()),
                         [](const auto& info) {
                           std::string n = info.param.name;
                           for (auto& ch : n)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST(Writer, ConfigsCarryTheQuantizationSettings) {
  const std::string dir = test::scratch_dir("formats-configs");
  write_case(cases()[7], dir);  // compressed-tensors int4 asym g24
  std::ifstream is(dir + "/config.json");
  auto cfg = nlohmann::json::parse(is);
  EXPECT_EQ(cfg["model_type"], "qwen2");
  const auto& qc = cfg["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "compressed-tensors");
  EXPECT_EQ(qc["format"], "pack-quantized");
  const auto& g = qc["config_groups"]["group_0"];
  EXPECT_EQ(g["weights"]["group_size"], 24);
  EXPECT_EQ(g["weights"]["symmetric"], false);
  EXPECT_EQ(g["targets"].size(), 2u);
  EXPECT_EQ(qc["ignore"], nlohmann::json::array({"lm_head"}));

  const std::string v1 = test::scratch_dir("formats-v1-meta");
  write_case(cases()[0], v1);
  std::ifstream ms(v1 + "/awq_meta.json");
  auto meta = nlohmann::json::parse(ms);
  EXPECT_EQ(meta["n_bit"], 4);
  EXPECT_EQ(meta["group_size"], 32);
  EXPECT_EQ(meta["per_weight"]["model.layers.0.mlp.down_proj.weight"]["shape"], nlohmann::json::array({24, 96}));
  EXPECT_TRUE(fs::exists(v1 + "/awq_state_dict.safetensors"));
}

// Large pass-through tensors (embeddings, lm_head) are written in row chunks from a callback; the
// file must hold exactly what a whole-tensor write gives, for bf16 and f32 storage, with chunks that
// do not divide the row count (rows of 2^21 + 3 floats: one row per 16 MB chunk, three chunks).
TEST(Writer, RowChunkedPlainTensorsEqualWholeWrites) {
  const int64_t rows = 3, cols = (int64_t(1) << 21) + 3;
  const std::vector<float> big = gaussian(size_t(rows * cols), 1.0f, 21);
  for (io::DType dt : {io::DType::BF16, io::DType::F32}) {
    std::vector<PlanEntry> plan = {PlainDecl{"model.embed_tokens.weight", {rows, cols}, dt},
                                   PlainDecl{"model.norm.weight", {7}, dt}};
    const std::vector<float> norm = gaussian(7, 1.0f, 22);
    const std::string whole = test::scratch_dir("formats-rows-whole"), chunked = test::scratch_dir("formats-rows-chunked");
    {
      CheckpointWriter w(whole, FormatId::CompressedTensors, plan);
      w.write_plain("model.embed_tokens.weight", big.data());
      w.write_plain("model.norm.weight", norm.data());
      w.finish();
    }
    std::vector<std::pair<int64_t, int64_t>> calls;
    {
      CheckpointWriter w(chunked, FormatId::CompressedTensors, plan);
      w.write_plain_rows("model.embed_tokens.weight", [&](int64_t b, int64_t e, float* out) {
        calls.emplace_back(b, e);
        std::memcpy(out, big.data() + b * cols, size_t((e - b) * cols) * 4);
      });
      w.write_plain_rows("model.norm.weight", [&](int64_t b, int64_t e, float* out) {
        std::memcpy(out, norm.data() + b, size_t(e - b) * 4);
      });
      w.finish();
    }
    EXPECT_EQ(calls, (std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {1, 2}, {2, 3}}));
    CheckpointReader a(whole), b(chunked);
    EXPECT_TRUE(same_bits(a.read_plain("model.embed_tokens.weight"), b.read_plain("model.embed_tokens.weight")));
    EXPECT_TRUE(same_bits(a.read_plain("model.norm.weight"), b.read_plain("model.norm.weight")));
    if (dt == io::DType::F32) {
      EXPECT_TRUE(same_bits(b.read_plain("model.embed_tokens.weight"), big));
    }
  }
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Writer, RefusesWhatTheLayoutCannotHold) {
  // Standard NVFP4 (non power-of-two tensor scale) cannot be expressed with lance-quant-v1's bf16
  // block scales.
  Case bad{"v1-nvfp4-standard", FormatId::LanceQuantV1, nvfp4(quant::Nvfp4Encoding::Standard), 9, 64};
  std::string e = error_of([&] { write_case(bad, test::scratch_dir("formats-bad1")); });
  EXPECT_NE(e.find("model.layers.0.self_attn.q_proj"), std::string::npos) << e;
  EXPECT_NE(e.find("bf16"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(test::scratch_dir("formats-bad1") + "/nvfp4_meta.json"));

  // AutoAWQ stores fp16 scales: an f32 scale beyond 65504 overflows.
  std::vector<float> big(64);
  for (size_t k = 0; k < big.size(); ++k) big[k] = (k % 2 ? 1.0f : -1.0f) * 3.0e6f;
  QTensor q = quant::quantize(big.data(), 8, 8, make(Scheme::Int4Asym, 8, ScaleDType::F32));
  e = error_of([&] {
    CheckpointWriter w(test::scratch_dir("formats-bad2"), FormatId::AutoAwq,
                       {LinearDecl{"x", Scheme::Int4Asym, 8, 8, 8, ScaleDType::F32, false}});
    w.write_quantized("x", q);
  });
  EXPECT_NE(e.find("fp16"), std::string::npos) << e;
  EXPECT_NE(e.find("inf"), std::string::npos) << e;

  // Layout constraints and plan order.
  e = error_of([] { CheckpointWriter w(test::scratch_dir("formats-bad3"), FormatId::AutoAwq,
                                       {LinearDecl{"y", Scheme::Int4Asym, 12, 64, 32, ScaleDType::F16, false}}); });
  EXPECT_NE(e.find("multiple of 8"), std::string::npos) << e;
  e = error_of([] { CheckpointWriter w(test::scratch_dir("formats-bad4"), FormatId::ModelOpt,
                                       {LinearDecl{"z", Scheme::Int4Asym, 16, 64, 32, ScaleDType::BF16, false}}); });
  EXPECT_NE(e.find("int4_asym"), std::string::npos) << e;
  e = error_of([] {
    CheckpointWriter w(test::scratch_dir("formats-bad5"), FormatId::CompressedTensors,
                       {PlainDecl{"a", {2}, io::DType::BF16}, PlainDecl{"b", {2}, io::DType::BF16}});
    const float v[2] = {1, 2};
    w.write_plain("b", v);
  });
  EXPECT_NE(e.find("expected plain tensor 'a'"), std::string::npos) << e;
  e = error_of([] { detect_format(test::scratch_dir("formats-empty")); });
  EXPECT_NE(e.find("not a quantized checkpoint"), std::string::npos) << e;
}

void write_f32(const fs::path& p, const std::vector<float>& v) {
  std::ofstream os(p, std::ios::binary);
  os.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * 4));
}

// Writes every case for the Python interop test (see the header comment). Without LQ_INTEROP_OUT it
// still checks that the expected files are what our reader returns.
TEST(InteropFiles, WriteEveryCaseWithExpectedDequantization) {
  const char* env = std::getenv("LQ_INTEROP_OUT");
  const fs::path root = env && *env ? fs::path(env) : fs::path(test::scratch_dir("formats-interop"));
  nlohmann::json manifest = nlohmann::json::array();
  for (const Case& c : cases()) {
    const fs::path dir = root / c.name;
    fs::remove_all(dir);
    Written w = write_case(c, dir.string());
    CheckpointReader r(dir.string());
    fs::create_directories(dir / "expected");
    nlohmann::json lin = nlohmann::json::array();
    for (size_t i = 0; i < 2; ++i) {
      QTensor q = r.read_quantized(w.bases[i]);
      write_f32(dir / "expected" / (w.bases[i] + ".weight.f32"), q.dequantize());
      if (auto b = r.read_bias(w.bases[i])) write_f32(dir / "expected" / (w.bases[i] + ".bias.f32"), *b);
      lin.push_back({{"base", w.bases[i]}, {"out", c.out}, {"in", c.in}, {"group", q.group},
                     {"scheme", quant::scheme_name(q.scheme)}, {"has_bias", !w.bias[i].empty()},
                     {"tensor_scale", q.tensor_scale}});
    }
    for (const auto& name : r.plain_names()) write_f32(dir / "expected" / (name + ".f32"), r.read_plain(name));
    manifest.push_back({{"case", c.name}, {"format", format_name(c.format)}, {"linears", lin}, {"plain", r.plain_names()}});
  }
  std::ofstream(root / "manifest.json") << manifest.dump(2);
  EXPECT_TRUE(fs::exists(root / "manifest.json"));
}

}  // namespace
}  // namespace lq::formats
