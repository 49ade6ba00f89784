// Exports of lance-mini's und path, read back with our own readers: the GGUF by GgufFile, the MLX
// safetensors by a decoder written from MLX's documented affine layout (uint32 words holding 32/bits
// codes from the lowest bits up; w = scale * q + bias per group along the input axis).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <fstream>

#include "export/export.h"
#include "export/gguf.h"
#include "formats/checkpoint.h"
#include "io/safetensors.h"
#include "test_paths.h"

using namespace lq::exporter;

TEST(Export, GgufHoldsTheUndPathOfLanceMini) {
  LQ_REQUIRE_SHARED();
  const std::string mini = lq::test::lance_mini_dir();
  const std::string out = lq::test::scratch_dir("export_gguf");
  ExportOptions o;
  o.type = "q8_0";
  o.out_dir = out;
  const ExportResult r = export_und(mini, o);
  EXPECT_EQ(r.architecture, "qwen3");
  EXPECT_FALSE(r.from_quantized);

  const GgufFile f(out + "/model.gguf");
  EXPECT_EQ(f.tensors().size(), 59u);  // embed + 4 x 14 + final norm + output
  EXPECT_EQ(std::get<std::string>(f.metadata().at("general.architecture")), "qwen3");
  EXPECT_EQ(std::get<uint32_t>(f.metadata().at("qwen3.attention.head_count_kv")), 2u);
  EXPECT_EQ(std::get<uint32_t>(f.metadata().at("tokenizer.ggml.eos_token_id")), 4258u);
  const auto& tokens = std::get<std::vector<std::string>>(f.metadata().at("tokenizer.ggml.tokens"));
  ASSERT_EQ(tokens.size(), 4288u);
  EXPECT_EQ(tokens[4256], "<|endoftext|>");
  EXPECT_EQ(tokens[4287], "[PAD4287]");

  const lq::io::TensorStore src(mini);
  // Biases and q/k norms: exact f32. The output head: Q8_0 within its budget. No gen tensor leaks in.
  EXPECT_EQ(f.read_f32("blk.2.attn_v.bias"), src.read_f32("language_model.model.layers.2.self_attn.v_proj.bias"));
  EXPECT_EQ(f.read_f32("blk.3.attn_k_norm.weight"), src.read_f32("language_model.model.layers.3.self_attn.k_norm.weight"));
  EXPECT_EQ(f.tensor("output.weight").type, GgmlType::Q8_0);
  EXPECT_EQ(f.tensor("token_embd.weight").type, GgmlType::Q8_0);  // llama-quantize's Q8_0 file: everything Q8_0
  const auto head = f.read_f32("output.weight");
  const auto ref = src.read_f32("language_model.lm_head.weight");
  float amax = 0, err = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    amax = std::max(amax, std::fabs(ref[i]));
    err = std::max(err, std::fabs(head[i] - ref[i]));
  }
  EXPECT_LE(err, amax / 127.0f);
  for (const auto& t : f.tensors()) EXPECT_EQ(t.name.find("moe_gen"), std::string::npos);
}

TEST(Export, MlxAffineEqualsOurDequantizationExactly) {
  LQ_REQUIRE_SHARED();
  const std::string mini = lq::test::lance_mini_dir();
  const std::string tmp = lq::test::scratch_dir("export_mlx");
  std::string log;
  // An asymmetric INT4 checkpoint (the awq-int4 storage) of lance-mini.
  ASSERT_EQ(lq::test::run_command(lq::test::exe() + " quantize " + mini + " --out " + tmp + "/int4 --scheme rtn-int4 --group-size 128", &log), 0) << log;
  ExportOptions o;
  o.target = ExportTarget::Mlx;
  o.out_dir = tmp + "/mlx";
  const ExportResult r = export_und(tmp + "/int4", o);
  EXPECT_TRUE(r.from_quantized);
  EXPECT_EQ(r.architecture, "glm4_moe");

  std::ifstream cf(tmp + "/mlx/config.json");
  const auto cfg = nlohmann::json::parse(cf);
  EXPECT_EQ(cfg["quantization"]["bits"], 4);
  EXPECT_EQ(cfg["quantization"]["group_size"], 128);

  const lq::formats::CheckpointReader ckpt(tmp + "/int4");
  const lq::io::SafetensorsFile mlx(tmp + "/mlx/model.safetensors");
  int checked = 0;
  for (int layer = 0; layer < 4; ++layer) {
    const std::string lance = "language_model.model.layers." + std::to_string(layer) + ".";
    const std::string hf = "model.layers." + std::to_string(layer) + ".";
    for (auto [l, h] : {std::pair{"self_attn.q_proj", "self_attn.q_proj"}, {"self_attn.o_proj", "self_attn.o_proj"},
                        {"mlp.down_proj", "mlp.down_proj"}}) {
      const auto want = ckpt.read_quantized(lance + l).dequantize();
      const auto& wi = mlx.info(hf + std::string(h) + ".weight");
      const auto words = mlx.bytes(wi);
      const auto scales = mlx.read_f32(hf + std::string(h) + ".scales");
      const auto biases = mlx.read_f32(hf + std::string(h) + ".biases");
      const int64_t out = wi.shape[0], in = wi.shape[1] * 8, groups = in / 128;
      ASSERT_EQ(int64_t(want.size()), out * in);
      for (int64_t i = 0; i < out * in; ++i) {
        uint32_t word;
        std::memcpy(&word, words.data() + 4 * (i / 8), 4);
        const float q = float((word >> (4 * (i % 8))) & 15u);
        const int64_t g = (i / in) * groups + (i % in) / 128;
        ASSERT_EQ(scales[size_t(g)] * q + biases[size_t(g)], want[size_t(i)]) << h << " element " << i;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 12);
}
