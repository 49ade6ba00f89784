// `lance-quant inspect` describes every format `quantize` writes (issue 14: it could read none), and
// an error never dumps hundreds of lines. Bits per weight are checked against the layouts' byte
// counts (shared/docs/formats.md), computed here independently of the reader.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using lq::test::exe;
using lq::test::run_command;

json inspect_json(const std::string& dir) {
  std::string out;
  EXPECT_EQ(lq::test::run_command_stdout(exe() + " inspect " + dir + " --json", &out), 0) << out;
  return json::parse(out);
}

void quantize(const std::string& args, const std::string& out_dir) {
  std::string out;
  ASSERT_EQ(run_command(exe() + " quantize " + lq::test::lance_mini_dir() + " " + args + " --out " + out_dir, &out), 0) << out;
}

// Expected stored bits per weight of a [out, in] linear, from the layouts' tensors.
double bits(int64_t out, int64_t in, const std::function<double(double, double)>& bytes) {
  return 8.0 * bytes(double(out), double(in)) / (double(out) * double(in));
}

void check_linears(const json& j, const std::function<double(double, double)>& bytes, const std::string& scheme, int64_t group) {
  ASSERT_EQ(j.at("linears").size(), 56u);
  for (const auto& l : j.at("linears")) {
    EXPECT_EQ(l.at("scheme"), scheme) << l.at("name");
    EXPECT_EQ(l.at("group_size"), group) << l.at("name");
    EXPECT_NEAR(l.at("bits_per_weight").get<double>(), bits(l.at("out"), l.at("in"), bytes), 1e-9) << l.at("name");
    EXPECT_EQ(l.at("method"), "rtn") << l.at("name");
  }
}

TEST(InspectQuantized, EveryFormatWeWrite) {
  LQ_REQUIRE_SHARED();
  const std::string d = lq::test::scratch_dir("inspect_quantized");
  // lance-quant-v1 INT4: u8 codes (2 per byte) + bf16 scale + u8 zero per group.
  quantize("--scheme rtn-int4", d + "/v1");
  json j = inspect_json(d + "/v1");
  EXPECT_EQ(j.at("format"), "lance-quant-v1");
  EXPECT_EQ(j.at("quantized_linears"), 56);
  EXPECT_EQ(j.at("schemes").at("und").at("int4_asym g128").at("linears"), 28);
  EXPECT_EQ(j.at("schemes").at("gen").at("int4_asym g128").at("linears"), 28);
  EXPECT_EQ(j.at("methods"), json({{"rtn", 56}}));
  EXPECT_EQ(j.at("tasks_calibrated"), json::array());
  EXPECT_EQ(j.at("producer"), "lance-quant quantize");
  check_linears(j, [](double o, double i) { return o * i / 2 + o * i / 128 * 3; }, "int4_asym", 128);
  // autoawq: int32 qweight (8 codes) + int32 qzeros (8 zeros) + f16 scales.
  quantize("--scheme rtn-int4 --format autoawq", d + "/awq");
  j = inspect_json(d + "/awq");
  EXPECT_EQ(j.at("format"), "autoawq");
  check_linears(j, [](double o, double i) { return o * i / 2 + i / 128 * o / 2 + i / 128 * o * 2; }, "int4_asym", 128);
  // compressed-tensors pack-quantized: int32 packed codes, bf16 scales, int32 zero points, I64 weight_shape.
  quantize("--scheme rtn-int4 --format compressed-tensors", d + "/ct");
  j = inspect_json(d + "/ct");
  EXPECT_EQ(j.at("format"), "compressed-tensors");
  check_linears(j, [](double o, double i) { return o * i / 2 + o * i / 128 * 2 + o / 8 * (i / 128) * 4 + 16; }, "int4_asym", 128);
  // compressed-tensors nvfp4-pack-quantized and modelopt: E2M1 nibbles + one E4M3 per 16 + an fp32 scalar.
  for (const char* f : {"compressed-tensors", "modelopt"}) {
    quantize(std::string("--scheme nvfp4 --format ") + f, d + "/nv-" + f);
    j = inspect_json(d + "/nv-" + f);
    EXPECT_EQ(j.at("format"), f);
    EXPECT_EQ(j.at("schemes").at("gen").at("nvfp4").at("linears"), 28);
    check_linears(j, [](double o, double i) { return o * i / 2 + o * i / 16 + 4; }, "nvfp4", 16);
  }
  // lance-quant-v1 NVFP4: nibbles + E4M3 bytes + bf16 block scales.
  quantize("--scheme nvfp4", d + "/v1-nv");
  j = inspect_json(d + "/v1-nv");
  check_linears(j, [](double o, double i) { return o * i / 2 + o * i / 16 * 3; }, "nvfp4", 16);
}

TEST(InspectQuantized, MixedCheckpointAndTextOutput) {
  LQ_REQUIRE_SHARED();
  const std::string d = lq::test::scratch_dir("inspect_mixed");
  quantize("--scheme rtn-int4 --gen-scheme int8 --override 'down_proj=int4:g64'", d + "/mixed");
  const json j = inspect_json(d + "/mixed");
  EXPECT_EQ(j.at("schemes").at("und").at("int4_asym g128").at("linears"), 24);
  EXPECT_EQ(j.at("schemes").at("und").at("int4_asym g64").at("linears"), 4);
  EXPECT_EQ(j.at("schemes").at("gen").at("int8_sym g128").at("linears"), 24);
  EXPECT_EQ(j.at("schemes").at("gen").at("int4_asym g64").at("linears"), 4);
  EXPECT_NEAR(j.at("schemes").at("gen").at("int8_sym g128").at("bits_per_weight").get<double>(), 8 + 24.0 / 128, 1e-9);
  std::string out;
  ASSERT_EQ(run_command(exe() + " inspect " + d + "/mixed", &out), 0) << out;
  EXPECT_NE(out.find("format         lance-quant-v1"), std::string::npos) << out;
  EXPECT_NE(out.find("gen path       int4_asym g64 x4 (4.38 bits/weight), int8_sym g128 x24 (8.19 bits/weight)"), std::string::npos)
      << out;
  EXPECT_NE(out.find("method         rtn x56"), std::string::npos) << out;
}

TEST(InspectQuantized, MismatchErrorsNameTheFirstFewAndCountTheRest) {
  LQ_REQUIRE_SHARED();
  const std::string d = lq::test::scratch_dir("inspect_mismatch");
  const std::string m = lq::test::lance_mini_dir();
  fs::copy_file(m + "/model.safetensors", d + "/model.safetensors");
  json c = json::parse(std::ifstream(m + "/llm_config.json"));
  c["hidden_size"] = 512;  // every shape disagrees with the tensors
  c["num_attention_heads"] = 8;
  c["num_key_value_heads"] = 4;
  std::ofstream(d + "/llm_config.json") << c.dump();
  std::string out;
  EXPECT_EQ(run_command(exe() + " inspect " + d, &out), 1);
  size_t lines = 0;
  for (char ch : out) lines += ch == '\n';
  EXPECT_LT(lines, 25u) << out;  // 100+ lines before
  EXPECT_NE(out.find("mis-shaped tensor(s)"), std::string::npos) << out;
  EXPECT_NE(out.find("... and "), std::string::npos) << out;
}

}  // namespace
