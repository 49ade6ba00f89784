// Every quantized-checkpoint reader validates every field before use (checkpoints come from the
// internet): hostile or damaged files give lq::Error naming the file and tensor, never a crash
// (issue 14: SIGFPE on group 0, a heap overflow on a 64-element weight_shape, zero-width tensors),
// and scales relabelled to another dtype are refused.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "formats/checkpoint.h"
#include "io/error.h"
#include "io/safetensors.h"
#include "quant/quantizer.h"
#include "test_paths.h"

namespace lq::formats {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using quant::Scheme;
using quant::ScaleDType;

const std::string kA = "model.layers.0.self_attn.q_proj", kB = "model.layers.0.mlp_moe_gen.down_proj";

// Two [16 x 32] linears (+ a plain tensor) written by our writer.
std::string write_checkpoint(const std::string& name, FormatId f, Scheme scheme, int64_t group, ScaleDType sdt) {
  const std::string dir = test::scratch_dir("reader_validation_" + name) + "/ckpt";
  std::vector<PlanEntry> plan;
  for (const auto& base : {kA, kB}) {
    LinearDecl d;
    d.base = base, d.scheme = scheme, d.out = 16, d.in = 32, d.group = scheme == Scheme::NvFp4 ? 16 : group;
    d.scale_dtype = sdt, d.has_bias = base == kA;
    plan.push_back(d);
  }
  plan.push_back(PlainDecl{"model.norm.weight", {32}, io::DType::BF16});
  CheckpointWriter w(dir, f, plan);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<float> wt(16 * 32), bias(16, 0.5f), norm(32, 1.0f);
  for (const auto& base : {kA, kB}) {
    for (auto& v : wt) v = nd(rng);
    quant::QuantParams p;
    p.scheme = scheme, p.group = group, p.scale_dtype = sdt, p.nvfp4_pow2_tensor_scale = f == FormatId::LanceQuantV1;
    w.write_quantized(base, quant::quantize(wt.data(), 16, 32, p), base == kA ? bias.data() : nullptr);
  }
  w.write_plain("model.norm.weight", norm.data());
  w.finish();
  return dir;
}

struct Entry {
  std::string name;
  io::DType dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};
// Rewrites a safetensors file through `edit` (which may change names, dtypes, shapes and bytes).
void rewrite(const std::string& path, const std::function<void(std::vector<Entry>&)>& edit) {
  std::vector<Entry> es;
  std::map<std::string, std::string> meta;
  {
    const io::SafetensorsFile f(path);
    meta = f.metadata();
    for (const auto& t : f.tensors()) {
      const auto b = f.bytes(t);
      es.push_back({t.name, t.dtype, t.shape, std::string(reinterpret_cast<const char*>(b.data()), b.size())});
    }
  }
  edit(es);
  io::SafetensorsWriter w(path + ".new", meta);
  for (const auto& e : es) w.declare(e.name, e.dtype, e.shape);
  for (const auto& e : es) w.write(e.bytes.data(), e.bytes.size());
  w.finish();
  fs::rename(path + ".new", path);
}
void edit_json(const std::string& path, const std::function<void(json&)>& edit) {
  json j = json::parse(std::ifstream(path));
  edit(j);
  std::ofstream(path) << j.dump(1);
}

// Opens the checkpoint and reads every linear; returns the error message ("" when accepted).
std::string read_all(const std::string& dir) {
  try {
    const CheckpointReader r(dir);
    for (const auto& d : r.quantized_linears()) r.read_quantized(d.base).dequantize();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ReaderValidation, OurFilesReadBack) {
  EXPECT_EQ(read_all(write_checkpoint("ok_v1", FormatId::LanceQuantV1, Scheme::Int4Asym, 16, ScaleDType::BF16)), "");
  EXPECT_EQ(read_all(write_checkpoint("ok_awq", FormatId::AutoAwq, Scheme::Int4Asym, 16, ScaleDType::F16)), "");
  EXPECT_EQ(read_all(write_checkpoint("ok_ct", FormatId::CompressedTensors, Scheme::Int4Asym, 16, ScaleDType::BF16)), "");
  EXPECT_EQ(read_all(write_checkpoint("ok_ct4", FormatId::CompressedTensors, Scheme::NvFp4, 16, ScaleDType::BF16)), "");
  EXPECT_EQ(read_all(write_checkpoint("ok_mo", FormatId::ModelOpt, Scheme::NvFp4, 16, ScaleDType::BF16)), "");
}

TEST(ReaderValidation, CompressedTensorsGroupZeroIsAnError) {  // was SIGFPE in ct_parts
  const std::string d = write_checkpoint("ct_g0", FormatId::CompressedTensors, Scheme::Int4Asym, 16, ScaleDType::BF16);
  edit_json(d + "/config.json", [](json& c) {
    for (auto& [k, g] : c["quantization_config"]["config_groups"].items()) g["weights"]["group_size"] = 0;
  });
  const std::string e = read_all(d);
  EXPECT_NE(e.find("group_size' must be an integer in [1,"), std::string::npos) << e;
}

TEST(ReaderValidation, CompressedTensorsLongWeightShapeIsAnError) {  // was a heap overflow in ct_describe
  const std::string d = write_checkpoint("ct_shape", FormatId::CompressedTensors, Scheme::Int4Asym, 16, ScaleDType::BF16);
  rewrite(d + "/model.safetensors", [](std::vector<Entry>& es) {
    for (auto& e : es)
      if (e.name == kA + ".weight_shape") {
        e.dtype = io::DType::I32;
        e.shape = {64};
        e.bytes.assign(64 * 4, '\x01');
      }
  });
  const std::string e = read_all(d);
  EXPECT_NE(e.find(kA + ".weight_shape' must hold 2 integers (I64 or I32), has 64 I32"), std::string::npos) << e;
}

TEST(ReaderValidation, ZeroWidthAndGroupZeroInEveryIntegerFormat) {
  // lance-quant-v1: group 0 in the meta and zero-width tensors (was SIGFPE in v1_describe).
  std::string d = write_checkpoint("v1_zero", FormatId::LanceQuantV1, Scheme::Int4Asym, 16, ScaleDType::BF16);
  edit_json(d + "/awq_meta.json", [](json& m) {
    m["group_size"] = 0;
    for (auto& [k, w] : m["per_weight"].items()) w["group_size"] = 0;
  });
  rewrite(d + "/awq_state_dict.safetensors", [](std::vector<Entry>& es) {
    for (auto& e : es)
      if (e.name.rfind(kA, 0) == 0 && e.name != kA + ".bias") e.shape[1] = 0, e.bytes.clear();
  });
  std::string e = read_all(d);
  EXPECT_NE(e.find(kA), std::string::npos) << e;
  EXPECT_FALSE(e.empty());
  // autoawq: group 0 and a zero-width qweight (was SIGFPE in awq_parts).
  d = write_checkpoint("awq_zero", FormatId::AutoAwq, Scheme::Int4Asym, 16, ScaleDType::F16);
  edit_json(d + "/config.json", [](json& c) { c["quantization_config"]["group_size"] = 0; });
  rewrite(d + "/model.safetensors", [](std::vector<Entry>& es) {
    for (auto& e : es)
      if (e.name == kA + ".qweight") e.shape = {0, 2}, e.bytes.clear();
  });
  e = read_all(d);
  EXPECT_NE(e.find("must be in [1, 2^31)"), std::string::npos) << e;
  // compressed-tensors: a weight_shape of zeros.
  d = write_checkpoint("ct_zero", FormatId::CompressedTensors, Scheme::Int4Sym, 16, ScaleDType::BF16);
  rewrite(d + "/model.safetensors", [](std::vector<Entry>& es) {
    for (auto& e : es)
      if (e.name == kA + ".weight_shape") e.bytes.assign(16, '\0');
  });
  e = read_all(d);
  EXPECT_NE(e.find("must be in [1, 2^31)"), std::string::npos) << e;
}

TEST(ReaderValidation, RelabelledScalesAreRefused) {
  // BF16 scales relabelled F16 (same bytes, other values): perplexity 130 -> 225 before the fix.
  std::string d = write_checkpoint("v1_relabel", FormatId::LanceQuantV1, Scheme::Int4Asym, 16, ScaleDType::BF16);
  rewrite(d + "/awq_state_dict.safetensors", [](std::vector<Entry>& es) {
    for (auto& e : es)
      if (e.name == kA + ".scales") e.dtype = io::DType::F16;
  });
  std::string e = read_all(d);
  EXPECT_NE(e.find(kA + ".scales' has dtype F16, expected BF16"), std::string::npos) << e;
  d = write_checkpoint("awq_relabel", FormatId::AutoAwq, Scheme::Int4Asym, 16, ScaleDType::F16);
  rewrite(d + "/model.safetensors", [](std::vector<Entry>& es) {
    for (auto& e : es)
      if (e.name == kB + ".scales") e.dtype = io::DType::BF16;
  });
  e = read_all(d);
  EXPECT_NE(e.find(kB + ".scales' has dtype BF16, expected F16"), std::string::npos) << e;
  d = write_checkpoint("ct_relabel", FormatId::CompressedTensors, Scheme::Int4Asym, 16, ScaleDType::BF16);
  rewrite(d + "/model.safetensors", [](std::vector<Entry>& es) {
    for (auto& e : es)
      if (e.name == kA + ".weight_scale") e.dtype = io::DType::F16;
  });
  e = read_all(d);
  EXPECT_NE(e.find("records scale_dtype torch.bfloat16"), std::string::npos) << e;
}

TEST(ReaderValidation, WrongJsonTypesNameTheFile) {
  std::string d = write_checkpoint("types_awq", FormatId::AutoAwq, Scheme::Int4Asym, 16, ScaleDType::F16);
  edit_json(d + "/config.json", [](json& c) { c["quantization_config"]["bits"] = "4"; });
  std::string e = read_all(d);
  EXPECT_NE(e.find("key 'bits' must be an integer"), std::string::npos) << e;
  d = write_checkpoint("types_v1", FormatId::LanceQuantV1, Scheme::Int4Asym, 16, ScaleDType::BF16);
  edit_json(d + "/awq_meta.json", [](json& m) { m["per_weight"] = json::array({1, 2}); });
  e = read_all(d);
  EXPECT_NE(e.find("key 'per_weight' must be a JSON object"), std::string::npos) << e;
  d = write_checkpoint("types_ct", FormatId::CompressedTensors, Scheme::Int4Asym, 16, ScaleDType::BF16);
  edit_json(d + "/config.json", [](json& c) { c["quantization_config"]["config_groups"] = "all"; });
  e = read_all(d);
  EXPECT_NE(e.find("key 'config_groups' must be a JSON object"), std::string::npos) << e;
  d = write_checkpoint("types_mo", FormatId::ModelOpt, Scheme::NvFp4, 16, ScaleDType::BF16);
  edit_json(d + "/hf_quant_config.json", [](json& c) { c["quantization"] = 3; });
  e = read_all(d);
  EXPECT_NE(e.find("key 'quantization' must be a JSON object"), std::string::npos) << e;
}

TEST(ReaderValidation, MissingAndMisshapedPartsAreNamed) {
  std::string d = write_checkpoint("parts_mo", FormatId::ModelOpt, Scheme::NvFp4, 16, ScaleDType::BF16);
  rewrite(d + "/model.safetensors", [](std::vector<Entry>& es) {
    for (auto& e : es)
      if (e.name == kA + ".weight_scale") e.name = kA + ".weight_scale_x";
  });
  std::string e = read_all(d);
  EXPECT_NE(e.find("has no tensor '" + kA + ".weight_scale'"), std::string::npos) << e;
  d = write_checkpoint("parts_bias", FormatId::LanceQuantV1, Scheme::Int4Asym, 16, ScaleDType::BF16);
  rewrite(d + "/awq_state_dict.safetensors", [](std::vector<Entry>& es) {
    for (auto& e : es)
      if (e.name == kA + ".bias") e.shape = {8}, e.bytes.resize(16);
  });
  e = read_all(d);
  EXPECT_NE(e.find(kA + ".bias' must have shape [16]"), std::string::npos) << e;
}

TEST(ReaderValidation, WeightsFileLinkedOutsideIsRefused) {
  const std::string d = write_checkpoint("link_out", FormatId::LanceQuantV1, Scheme::Int4Asym, 16, ScaleDType::BF16);
  const std::string elsewhere = fs::path(d).parent_path().string() + "/elsewhere.safetensors";
  fs::rename(d + "/awq_state_dict.safetensors", elsewhere);
  fs::create_symlink(elsewhere, d + "/awq_state_dict.safetensors");
  const std::string e = read_all(d);
  EXPECT_NE(e.find("outside the model directory"), std::string::npos) << e;
}

}  // namespace
}  // namespace lq::formats
