// Checkpoints whose linears have different number formats (INT4 groups, INT8, NVFP4): the layouts
// that can say so per tensor (lance-quant-v1's per_weight, compressed-tensors' config groups)
// round-trip every linear bit for bit; the one-format layouts (autoawq, modelopt) refuse the plan
// naming the format and two conflicting linears.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "formats/checkpoint.h"
#include "io/error.h"
#include "quant/quantizer.h"
#include "test_paths.h"
#include "test_random.h"

namespace lq::formats {
namespace {

namespace fs = std::filesystem;
using quant::QuantParams;
using quant::QTensor;
using quant::Scheme;

using lq::test::gaussian;

QuantParams params(Scheme s, int64_t group) {
  QuantParams p;
  p.scheme = s;
  p.group = group;
  p.nvfp4_pow2_tensor_scale = true;  // lance-quant-v1 stores NVFP4 block scales as bf16
  return p;
}

struct MixedLinear {
  std::string base;
  QuantParams p;
  int64_t out, in;
};

// INT4 g32 (with a bias), INT8 g64, NVFP4 and INT4 g64 between two plain tensors.
std::vector<MixedLinear> mixed_linears() {
  return {{"model.layers.0.self_attn.q_proj", params(Scheme::Int4Asym, 32), 16, 128},
          {"model.layers.0.self_attn.q_proj_moe_gen", params(Scheme::Int8Sym, 64), 16, 128},
          {"model.layers.0.mlp.down_proj", params(Scheme::NvFp4, 16), 24, 64},
          {"model.layers.0.mlp_moe_gen.down_proj", params(Scheme::Int4Sym, 64), 8, 192}};
}

std::vector<PlanEntry> plan_of(const std::vector<MixedLinear>& ls) {
  std::vector<PlanEntry> plan{PlainDecl{"model.norm.weight", {4}, io::DType::BF16}};
  for (size_t i = 0; i < ls.size(); ++i)
    plan.push_back(LinearDecl{ls[i].base, ls[i].p.scheme, ls[i].out, ls[i].in, ls[i].p.effective_group(ls[i].in),
                              quant::ScaleDType::BF16, i == 0});
  return plan;
}

std::vector<QTensor> write_mixed(FormatId f, const std::string& dir, const std::vector<MixedLinear>& ls) {
  std::vector<QTensor> q;
  CheckpointWriter w(dir, f, plan_of(ls));
  const std::vector<float> norm = {1, 2, 3, 4}, bias = gaussian(size_t(ls[0].out), 0.1f, 9);
  w.write_plain("model.norm.weight", norm.data());
  for (size_t i = 0; i < ls.size(); ++i) {
    const std::vector<float> wt = gaussian(size_t(ls[i].out * ls[i].in), 0.02f, uint32_t(20 + i));
    q.push_back(quant::quantize(wt.data(), ls[i].out, ls[i].in, ls[i].p));
    w.write_quantized(ls[i].base, q.back(), i == 0 ? bias.data() : nullptr);
  }
  w.finish();
  return q;
}

void expect_mixed_round_trip(const std::string& dir, const std::vector<MixedLinear>& ls, const std::vector<QTensor>& q) {
  CheckpointReader r(dir);
  ASSERT_EQ(r.quantized_linears().size(), ls.size());
  for (size_t i = 0; i < ls.size(); ++i) {
    const QTensor back = r.read_quantized(ls[i].base);
    EXPECT_EQ(back.scheme, ls[i].p.scheme) << ls[i].base;
    EXPECT_EQ(back.in, ls[i].in) << ls[i].base;
    EXPECT_EQ(back.group, q[i].group) << ls[i].base;
    const std::vector<float> a = back.dequantize(), b = q[i].dequantize();
    EXPECT_TRUE(a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0) << ls[i].base;
  }
  EXPECT_TRUE(r.read_bias(ls[0].base).has_value());
  EXPECT_EQ(r.plain_names(), std::vector<std::string>{"model.norm.weight"});
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream is(path);
  return nlohmann::json::parse(is);
}

TEST(MixedFormats, LanceQuantV1KeepsEachLinearsFormatInPerWeight) {
  const std::string dir = test::scratch_dir("mixed-v1");
  const auto ls = mixed_linears();
  const auto q = write_mixed(FormatId::LanceQuantV1, dir, ls);
  expect_mixed_round_trip(dir, ls, q);
  EXPECT_TRUE(fs::exists(dir + "/awq_state_dict.safetensors"));  // not all NVFP4
  const auto meta = read_json(dir + "/awq_meta.json");
  EXPECT_EQ(meta["mixed_formats"], true);
  EXPECT_EQ(meta["n_bit"], 4);
  EXPECT_EQ(meta["group_size"], 32);  // the first integer linear's
  const auto& pw = meta["per_weight"];
  EXPECT_EQ(pw["model.layers.0.self_attn.q_proj_moe_gen.weight"]["n_bit"], 8);
  EXPECT_EQ(pw["model.layers.0.self_attn.q_proj_moe_gen.weight"]["group_size"], 64);
  EXPECT_EQ(pw["model.layers.0.mlp.down_proj.weight"]["block_size"], 16);
  EXPECT_EQ(pw["model.layers.0.mlp_moe_gen.down_proj.weight"]["qscheme"], "int4_sym");
  // INT8: one code per byte; INT4: two.
  CheckpointReader r(dir);
  EXPECT_EQ(r.file().info("model.layers.0.self_attn.q_proj_moe_gen.qweight").shape, (std::vector<int64_t>{16, 128}));
  EXPECT_EQ(r.file().info("model.layers.0.self_attn.q_proj.qweight").shape, (std::vector<int64_t>{16, 64}));
  EXPECT_TRUE(r.file().has("model.layers.0.mlp.down_proj.scales_fp8"));
}

TEST(MixedFormats, OneFormatV1MetaHasNoMixedMarker) {
  const std::string dir = test::scratch_dir("mixed-v1-one");
  std::vector<MixedLinear> ls = {{"a.q_proj", params(Scheme::Int4Asym, 32), 8, 64}, {"a.k_proj", params(Scheme::Int4Asym, 32), 8, 64}};
  expect_mixed_round_trip(dir, ls, write_mixed(FormatId::LanceQuantV1, dir, ls));
  EXPECT_FALSE(read_json(dir + "/awq_meta.json").contains("mixed_formats"));
  // INT8 alone (our extension of the layout) also round-trips.
  const std::string d8 = test::scratch_dir("mixed-v1-int8");
  ls = {{"a.q_proj", params(Scheme::Int8Sym, 32), 8, 64}, {"a.k_proj", params(Scheme::Int8Sym, 0), 8, 96}};
  expect_mixed_round_trip(d8, ls, write_mixed(FormatId::LanceQuantV1, d8, ls));
}

TEST(MixedFormats, CompressedTensorsWritesOneConfigGroupPerFormat) {
  const std::string dir = test::scratch_dir("mixed-ct");
  const auto ls = mixed_linears();
  const auto q = write_mixed(FormatId::CompressedTensors, dir, ls);
  expect_mixed_round_trip(dir, ls, q);
  const auto qc = read_json(dir + "/config.json")["quantization_config"];
  EXPECT_EQ(qc["format"], "mixed-precision");  // INT and NVFP4 compressors in one model
  ASSERT_EQ(qc["config_groups"].size(), 4u);
  std::map<std::string, nlohmann::json> group_of;  // target -> its group
  for (const auto& [name, g] : qc["config_groups"].items())
    for (const auto& t : g["targets"]) group_of[t.get<std::string>()] = g;
  EXPECT_EQ(group_of.at("model.layers.0.self_attn.q_proj_moe_gen")["weights"]["num_bits"], 8);
  EXPECT_EQ(group_of.at("model.layers.0.self_attn.q_proj_moe_gen")["format"], "pack-quantized");
  EXPECT_EQ(group_of.at("model.layers.0.mlp.down_proj")["format"], "nvfp4-pack-quantized");
  EXPECT_EQ(group_of.at("model.layers.0.self_attn.q_proj")["weights"]["group_size"], 32);
  EXPECT_EQ(group_of.at("model.layers.0.mlp_moe_gen.down_proj")["weights"]["symmetric"], true);
  CheckpointReader r(dir);  // INT8 packs 4 codes per int32, INT4 8
  EXPECT_EQ(r.file().info("model.layers.0.self_attn.q_proj_moe_gen.weight_packed").shape, (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(r.file().info("model.layers.0.self_attn.q_proj.weight_packed").shape, (std::vector<int64_t>{16, 16}));
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(MixedFormats, OneFormatLayoutsRefuseAMixedPlan) {
  std::vector<MixedLinear> ls = {{"m.q_proj", params(Scheme::Int4Asym, 64), 16, 128}, {"m.q_proj_moe_gen", params(Scheme::Int4Asym, 128), 16, 128}};
  std::string e = error_of([&] { check_plan(FormatId::AutoAwq, plan_of(ls)); });
  EXPECT_NE(e.find("autoawq records one number format"), std::string::npos) << e;
  EXPECT_NE(e.find("'m.q_proj' is int4_asym g64"), std::string::npos) << e;
  EXPECT_NE(e.find("'m.q_proj_moe_gen' is int4_asym g128"), std::string::npos) << e;
  const std::string dir = test::scratch_dir("mixed-awq");
  e = error_of([&] { CheckpointWriter w(dir + "/q", FormatId::AutoAwq, plan_of(ls)); });  // the writer checks too
  EXPECT_NE(e.find("one number format"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir + "/q"));
  ls[1].p = params(Scheme::Int8Sym, 64);  // a mixed plan is named before an unsupported scheme
  e = error_of([&] { check_plan(FormatId::AutoAwq, plan_of(ls)); });
  EXPECT_NE(e.find("'m.q_proj_moe_gen' is int8_sym g64"), std::string::npos) << e;
  ls = {{"m.q_proj", params(Scheme::NvFp4, 16), 16, 128}, {"m.q_proj_moe_gen", params(Scheme::Int8Sym, 64), 16, 128}};
  e = error_of([&] { check_plan(FormatId::ModelOpt, plan_of(ls)); });
  EXPECT_NE(e.find("modelopt records one number format"), std::string::npos) << e;
  // The same plan is fine where formats are per tensor.
  EXPECT_EQ(error_of([&] { check_plan(FormatId::CompressedTensors, plan_of(ls)); }), "");
  EXPECT_EQ(error_of([&] { check_plan(FormatId::LanceQuantV1, plan_of(ls)); }), "");
}

}  // namespace
}  // namespace lq::formats
