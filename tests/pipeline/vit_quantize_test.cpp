// `quantize --vit` end to end on lance-mini with a synthetic small ViT (random weights: plumbing and exact
// equalities only, the answers mean nothing): the ViT written 4-bit into the checkpoint loads BIT FOR BIT as
// the load-time quantizer (vit::quantize_linears_rtn_int4) on the same full-precision ViT, from both sources
// (--vit-dir and the model's own vit_model.*); run / eval / inspect / export use it without --vit DIR; eval's
// cost equals `--vit-quant int4`'s exactly when the LLM is kept; bad inputs are refused clearly.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "formats/checkpoint.h"
#include "forward/quant_linear.h"
#include "io/error.h"
#include "io/safetensors.h"
#include "test_paths.h"
#include "vit/vit.h"
#include "vit/vit_fixtures.h"

namespace lq::pipeline {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string src(const std::string& rel) { return std::string(LQ_SOURCE_DIR) + "/" + rel; }
int sh(const std::string& cmd, std::string* out) { return test::run_command(cmd, out); }
json last_json(const std::string& out) {
  const auto brace = out.rfind("\n{");
  return json::parse(brace == std::string::npos ? out : out.substr(brace + 1));
}

class VitQuantize : public ::testing::Test {
 protected:
  // Every test has its own scratch directory: ctest runs the tests of this suite in parallel processes.
  void SetUp() override {
    LQ_REQUIRE_SHARED();
    dir_ = test::scratch_dir(std::string("vit_quantize_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::string out;
    // bf16 like Lance's own ViT: every tensor the checkpoint keeps as it is (bf16) is then exactly the source's.
    ASSERT_EQ(sh(test::exe() + " synth --vit small --vit-out-hidden 256 --dtype bf16 --seed 3 --out " + dir_ + "/vit", &out), 0) << out;
  }
  static std::string quantize(const std::string& model, const std::string& out, const std::string& extra) {
    return test::exe() + " quantize " + model + " --scheme rtn-int4 --out " + out + " " + extra;
  }
  std::string dir_;
};

// Features of `v` on a fixed random 12 x 16 patch grid in two temporal slices (several windows).
std::vector<float> features(const vit::Vit& v) {
  const int t = 2, h = 12, w = 16;
  std::vector<float> patches(size_t(t * h * w) * size_t(v.config().patch_dim()));
  std::mt19937 g(11);
  std::normal_distribution<float> n;
  for (auto& x : patches) x = n(g);
  return v.forward(patches.data(), {t, h, w});
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The checkpoint's ViT == the load-time 4-bit ViT on the same weights, bit for bit; and it is not the
// full-precision ViT (so the comparison could fail).
void expect_same_as_load_time(const std::string& checkpoint, const std::string& full_precision) {
  ASSERT_TRUE(vit::model_has_vit(checkpoint));
  ASSERT_TRUE(vit::model_has_quantized_vit(checkpoint));
  const vit::Vit stored = vit::Vit::load(checkpoint);
  vit::Vit at_load = vit::Vit::load(full_precision);
  const vit::Vit dense = vit::Vit::load(full_precision);
  const std::string summary = vit::quantize_linears_rtn_int4(at_load);
  EXPECT_EQ(summary, "int4 g64 x18, 4 kept dense (input width not a multiple of 16)");
  EXPECT_EQ(stored.stored_quantization(), summary);
  const auto a = features(stored), b = features(at_load), c = features(dense);
  EXPECT_TRUE(bit_identical(a, b)) << "the checkpoint's 4-bit ViT differs from the load-time one";
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) num += double(a[i] - c[i]) * (a[i] - c[i]), den += double(c[i]) * c[i];
  EXPECT_GT(num / den, 1e-6) << "the 4-bit ViT computes what the full-precision one does: nothing was quantized";
  // Each stored linear holds exactly the codes the shared quantizer makes from the source weights.
  const formats::CheckpointReader r(checkpoint);
  int vit_linears = 0;
  for (const auto& d : r.quantized_linears()) {
    if (d.base.rfind("vit_model.", 0) != 0) continue;
    ++vit_linears;
    const std::string name = d.base.substr(10);
    const auto p = vit::rtn_int4_params(name, d.in);
    ASSERT_TRUE(p.has_value()) << name;
    EXPECT_EQ(d.group, 64) << name;
    const auto* dl = dynamic_cast<const fwd::DenseLinear*>(&dense.linear(name));
    ASSERT_NE(dl, nullptr) << name;
    std::vector<float> wf(size_t(d.out * d.in));
    std::memcpy(wf.data(), dl->matrix().data, wf.size() * sizeof(float));  // the dense ViT loads f32
    const quant::QTensor want = vit::rtn_int4_quantize(wf.data(), d.out, d.in, *p), got = r.read_quantized(d.base);
    EXPECT_EQ(got.codes, want.codes) << name;
    EXPECT_EQ(got.scales, want.scales) << name;
    EXPECT_EQ(got.zeros, want.zeros) << name;
  }
  EXPECT_EQ(vit_linears, 18);
}

TEST_F(VitQuantize, FromVitDirLoadsBitIdenticalToTheLoadTimeQuantizer) {
  std::string out;
  ASSERT_EQ(sh(quantize(test::lance_mini_dir(), dir_ + "/q", "--vit --vit-dir " + dir_ + "/vit --json"), &out), 0) << out;
  const json rep = last_json(out);
  ASSERT_TRUE(rep.contains("vit")) << out;
  const json& v = rep["vit"];
  EXPECT_EQ(v["scheme"], "rtn-int4");
  EXPECT_EQ(v["scale_dtype"], "bf16");
  EXPECT_EQ(v["quantized_linears"], 18);
  EXPECT_EQ(v["groups"], json::parse(R"({"64": 18})"));
  ASSERT_EQ(v["kept_dense"].size(), 5u);  // the patch embedding + 4 down_proj (input 172)
  EXPECT_EQ(v["kept_dense"][1]["name"], "vit_model.blocks.0.mlp.down_proj");
  EXPECT_NE(v["kept_dense"][1]["reason"].get<std::string>().find("172 is not a multiple of 16"), std::string::npos);
  EXPECT_EQ(v["linears"].size(), 18u);
  EXPECT_LT(v["output_bytes"].get<uint64_t>(), v["source_bytes"].get<uint64_t>());
  EXPECT_EQ(rep["quantized_linears"], 56);  // the LLM's count is the LLM's alone
  // The checkpoint records it: awq_meta.json and lance-quant.json, per_weight entries of the ViT's linears.
  std::ifstream mf(dir_ + "/q/awq_meta.json"), kf(dir_ + "/q/lance-quant.json"), lf(dir_ + "/q/llm_config.json");
  const json meta = json::parse(mf), marker = json::parse(kf), llm = json::parse(lf);
  EXPECT_EQ(meta["vit"]["summary"], v["summary"]);
  EXPECT_EQ(marker["vit"]["kept_dense"], v["kept_dense"]);
  EXPECT_EQ(meta["per_weight"]["vit_model.blocks.2.attn.qkv.weight"]["group_size"], 64);
  EXPECT_EQ(meta["per_weight"]["vit_model.blocks.2.attn.qkv.weight"]["scheme"], "rtn");
  EXPECT_EQ(llm["vision_config"]["depth"], 4);  // the --vit-dir's config, for locate_vit
  expect_same_as_load_time(dir_ + "/q", dir_ + "/vit");
}

TEST_F(VitQuantize, FromTheModelsOwnVitAndWithoutVitItIsCarriedThrough) {
  vit::embed_vit(test::lance_mini_dir(), dir_ + "/vit", dir_ + "/mini-video");
  std::string out;
  ASSERT_EQ(sh(quantize(dir_ + "/mini-video", dir_ + "/q", "--vit"), &out), 0) << out;
  EXPECT_NE(out.find("vit: int4 g64 x18, 4 kept dense"), std::string::npos) << out;
  expect_same_as_load_time(dir_ + "/q", dir_ + "/vit");
  // No ViT tensor twice: every vit_model.* linear weight is either quantized or plain, not both.
  const formats::CheckpointReader r(dir_ + "/q");
  EXPECT_FALSE(r.file().has("vit_model.blocks.0.attn.qkv.weight"));
  EXPECT_TRUE(r.file().has("vit_model.blocks.0.mlp.down_proj.weight"));
  // Without --vit (today's behaviour): the ViT passes through unquantized, and run / Vit::load find it in
  // the quantized checkpoint (awq_state_dict.safetensors) all the same.
  ASSERT_EQ(sh(quantize(dir_ + "/mini-video", dir_ + "/plain", ""), &out), 0) << out;
  EXPECT_TRUE(vit::model_has_vit(dir_ + "/plain"));
  EXPECT_FALSE(vit::model_has_quantized_vit(dir_ + "/plain"));
  const formats::CheckpointReader p(dir_ + "/plain");
  EXPECT_EQ(p.file().info("vit_model.blocks.0.attn.qkv.weight").dtype, io::DType::BF16);
  const vit::Vit carried = vit::Vit::load(dir_ + "/plain"), original = vit::Vit::load(dir_ + "/vit");
  EXPECT_TRUE(carried.stored_quantization().empty());
  EXPECT_TRUE(bit_identical(features(carried), features(original)));  // bf16 in, bf16 out
}

TEST_F(VitQuantize, RunEvalInspectAndExportUseTheCheckpointsVit) {
  std::string out;
  // --keep '*' --keep-dtype f32: the LLM stays exactly lance-mini, so eval measures the ViT alone.
  ASSERT_EQ(sh(quantize(test::lance_mini_dir(), dir_ + "/q", "--keep '*' --keep-dtype f32 --vit --vit-dir " + dir_ + "/vit"), &out), 0)
      << out;
  // run --task x2t without --vit.
  ASSERT_EQ(sh(test::exe() + " run " + dir_ + "/q --task x2t --image " + src("data/images/chelsea.jpg") +
                   " --resolution 224 --prompt 'what animal is this?' --max-new-tokens 5 --json",
               &out),
            0)
      << out;
  const json run = last_json(out);
  EXPECT_EQ(run["grid_thw"], json::parse("[1, 6, 9]"));
  EXPECT_EQ(run["generated_ids"].size(), 5u);
  EXPECT_EQ(run["vit_quantization"], "int4 g64 x18, 4 kept dense (input width not a multiple of 16)");
  // eval: the stored 4-bit ViT's cost is exactly the load-time --vit-quant int4's.
  const std::string m = test::lance_mini_dir();
  const std::string ev = " --no-text --no-chat --no-t2i --x2t-image " + src("data/eval/x2t_image.jsonl") + " --vit " + dir_ +
                         "/vit --x2t-resolution 224 --max-x2t 2 --max-new-tokens 6 --quiet --out ";
  ASSERT_EQ(sh(test::exe() + " eval " + m + " " + dir_ + "/q" + ev + dir_ + "/rep-stored", &out), 0) << out;
  ASSERT_EQ(sh(test::exe() + " eval " + m + " " + m + ev + dir_ + "/rep-load --vit-quant int4", &out), 0) << out;
  std::ifstream a(dir_ + "/rep-stored/report.json"), b(dir_ + "/rep-load/report.json");
  json xa = json::parse(a)["x2t"], xb = json::parse(b)["x2t"];
  EXPECT_EQ(xa["quant_vit"], true);
  EXPECT_GT(xa["vit_rel_error"].get<double>(), 0.0);
  EXPECT_NE(xa["quant_vit_note"].get<std::string>().find("4-bit from QUANT's checkpoint"), std::string::npos) << xa;
  EXPECT_NE(xb["quant_vit_note"].get<std::string>().find("at load"), std::string::npos) << xb;
  xa.erase("quant_vit_note");
  xb.erase("quant_vit_note");
  EXPECT_EQ(xa, xb);  // feature error, KL, top-1, answers: identical
  std::ifstream md(dir_ + "/rep-stored/report.md");
  std::stringstream s;
  s << md.rdbuf();
  EXPECT_NE(s.str().find("ViT feature rel. error"), std::string::npos);
  // --vit-quant int4 on a QUANT whose ViT is already 4-bit: refused before the long work.
  EXPECT_NE(sh(test::exe() + " eval " + m + " " + dir_ + "/q" + ev + dir_ + "/rep-twice --vit-quant int4", &out), 0);
  EXPECT_NE(out.find("already holds a 4-bit ViT"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir_ + "/rep-twice"));
  // inspect shows it.
  ASSERT_EQ(sh(test::exe() + " inspect " + dir_ + "/q", &out), 0) << out;
  EXPECT_NE(out.find("quantized linears: int4_asym g64 x18 (4.38 bits/weight)"), std::string::npos) << out;
  ASSERT_EQ(sh(test::exe() + " inspect " + dir_ + "/q --json", &out), 0) << out;
  const json ins = json::parse(out);
  EXPECT_EQ(ins["vit"]["quantized"]["int4_asym g64"]["linears"], 18);
  EXPECT_EQ(ins["vit"]["linears"].size(), 23u);  // 18 quantized + 4 dense down_proj + the patch embedding
  // Exports carry the und text decoder; the ViT is left out and the result says so.
  ASSERT_EQ(sh(test::exe() + " export " + dir_ + "/q --to hf --out " + dir_ + "/hf --json", &out), 0) << out;
  EXPECT_NE(last_json(out)["vit_not_exported"].get<std::string>().find("18 of its linears 4-bit"), std::string::npos) << out;
  ASSERT_EQ(sh(test::exe() + " export " + dir_ + "/q --to gguf --out " + dir_ + "/gguf", &out), 0) << out;
  EXPECT_NE(out.find("the ViT (vit_model.*: 54 tensors, 18 of its linears 4-bit) is not exported"), std::string::npos) << out;
}

TEST_F(VitQuantize, CompressedTensorsToo) {
  std::string out;
  ASSERT_EQ(sh(quantize(test::lance_mini_dir(), dir_ + "/q", "--format compressed-tensors --vit --vit-dir " + dir_ + "/vit"), &out), 0)
      << out;
  expect_same_as_load_time(dir_ + "/q", dir_ + "/vit");
}

// --keep / --override PATTERN=keep with a vit_model.* pattern keep those ViT linears dense; the checkpoint
// then loads bit for bit as the load-time quantizer told to keep the same linears; other patterns leave the ViT alone.
TEST_F(VitQuantize, KeepPatternsThatNameTheVitKeepThoseLinearsDense) {
  std::string out;
  const std::string m = test::lance_mini_dir(), v = " --vit-dir " + dir_ + "/vit";
  ASSERT_EQ(sh(quantize(m, dir_ + "/q", "--vit" + v + " --keep 'vit_model.merger.*' --override 'vit_model.blocks.1.attn.*=keep' --json"), &out), 0)
      << out;
  const json rep = last_json(out);
  EXPECT_EQ(rep["quantized_linears"], 56);  // the LLM's linears: no pattern reached them
  const json& vr = rep["vit"];
  EXPECT_EQ(vr["quantized_linears"], 14);
  const std::string summary = "int4 g64 x14, 4 kept dense (input width not a multiple of 16), 4 kept dense (--keep)";
  EXPECT_EQ(vr["summary"], summary);
  std::map<std::string, std::string> reasons;
  for (const auto& k : vr["kept_dense"]) reasons[k["name"]] = k["reason"];
  EXPECT_EQ(reasons.size(), 9u);
  EXPECT_EQ(reasons["vit_model.merger.mlp.0"], "--keep vit_model.merger.*");
  EXPECT_EQ(reasons["vit_model.merger.mlp.2"], "--keep vit_model.merger.*");
  EXPECT_EQ(reasons["vit_model.blocks.1.attn.qkv"], "--keep vit_model.blocks.1.attn.*");
  EXPECT_EQ(reasons["vit_model.blocks.1.attn.proj"], "--keep vit_model.blocks.1.attn.*");
  EXPECT_EQ(reasons.count("vit_model.blocks.0.attn.qkv"), 0u);

  const vit::Vit stored = vit::Vit::load(dir_ + "/q");
  vit::Vit at_load = vit::Vit::load(dir_ + "/vit");
  const std::string at_load_summary = vit::quantize_linears_rtn_int4(
      at_load, [](const std::string& n) { return n.rfind("merger.", 0) == 0 || n.rfind("blocks.1.attn.", 0) == 0; });
  EXPECT_EQ(at_load_summary, summary);
  EXPECT_EQ(stored.stored_quantization(), summary);
  for (const char* n : {"merger.mlp.0", "merger.mlp.2", "blocks.1.attn.qkv", "blocks.1.attn.proj"})
    EXPECT_NE(dynamic_cast<const fwd::DenseLinear*>(&stored.linear(n)), nullptr) << n;
  EXPECT_EQ(dynamic_cast<const fwd::DenseLinear*>(&stored.linear("blocks.0.attn.qkv")), nullptr);
  EXPECT_TRUE(bit_identical(features(stored), features(at_load)));

  // A ViT pattern that selects nothing, a ViT override to another format, a ViT pattern without --vit.
  EXPECT_NE(sh(quantize(m, dir_ + "/q1", "--vit" + v + " --keep vit_model.blocks.9"), &out), 0);
  EXPECT_NE(out.find("[--keep vit_model.blocks.9] matches no linear of the ViT"), std::string::npos) << out;
  EXPECT_NE(sh(quantize(m, dir_ + "/q2", "--vit" + v + " --override 'vit_model.merger.*=int8'"), &out), 0);
  EXPECT_NE(out.find("the ViT's linears are written RTN INT4 (group 64) or kept dense"), std::string::npos) << out;
  EXPECT_NE(sh(quantize(m, dir_ + "/q3", "--keep vit_model.merger"), &out), 0);
  EXPECT_NE(out.find("which only --vit quantizes"), std::string::npos) << out;
  for (const char* d : {"/q1", "/q2", "/q3"}) EXPECT_FALSE(fs::exists(dir_ + d)) << d;
}

TEST_F(VitQuantize, BadInputsAreRefusedClearly) {
  std::string out;
  const std::string m = test::lance_mini_dir();
  // No ViT source.
  EXPECT_NE(sh(quantize(m, dir_ + "/q1", "--vit"), &out), 0);
  EXPECT_NE(out.find("holds no ViT (no vit_model.* tensors): give it with --vit-dir DIR"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir_ + "/q1"));
  // Two sources.
  vit::embed_vit(m, dir_ + "/vit", dir_ + "/mini-video");
  EXPECT_NE(sh(quantize(dir_ + "/mini-video", dir_ + "/q2", "--vit --vit-dir " + dir_ + "/vit"), &out), 0);
  EXPECT_NE(out.find("holds its own ViT"), std::string::npos) << out;
  // Layouts with one number format, and --dense-out.
  EXPECT_NE(sh(quantize(m, dir_ + "/q3", "--vit --vit-dir " + dir_ + "/vit --format autoawq"), &out), 0);
  EXPECT_NE(out.find("needs a layout with per-linear formats"), std::string::npos) << out;
  EXPECT_NE(sh(quantize(m, dir_ + "/q4", "--vit --vit-dir " + dir_ + "/vit --dense-out " + dir_ + "/d4"), &out), 0);
  EXPECT_NE(out.find("--dense-out"), std::string::npos) << out;
  // An incomplete ViT source: named before any work.
  vit::embed_vit(m, dir_ + "/vit", dir_ + "/mini-broken", "blocks.1.attn.proj.bias");
  EXPECT_NE(sh(quantize(dir_ + "/mini-broken", dir_ + "/q5", "--vit"), &out), 0);
  EXPECT_NE(out.find("missing: vit_model.blocks.1.attn.proj.bias"), std::string::npos) << out;
  for (const char* d : {"/q2", "/q3", "/q4", "/d4", "/q5"}) EXPECT_FALSE(fs::exists(dir_ + d)) << d;

  // A damaged checkpoint: one ViT linear's scales missing, another's mis-shaped; the messages name file and tensor.
  ASSERT_EQ(sh(quantize(m, dir_ + "/q", "--vit --vit-dir " + dir_ + "/vit"), &out), 0) << out;
  auto rewrite = [&](const std::string& to, const std::string& drop, const std::string& reshape) {
    fs::create_directories(to);
    for (const auto& e : fs::directory_iterator(dir_ + "/q"))
      if (e.path().filename() != "awq_state_dict.safetensors") fs::copy_file(e.path(), to / e.path().filename());
    const io::SafetensorsFile f(dir_ + "/q/awq_state_dict.safetensors");
    io::SafetensorsWriter w(to + "/awq_state_dict.safetensors");
    for (const auto& t : f.tensors()) {
      if (t.name == drop) continue;
      auto shape = t.shape;
      if (t.name == reshape) shape = {shape[1], shape[0]};  // same bytes, transposed shape
      w.declare(t.name, t.dtype, shape);
    }
    for (const auto& t : f.tensors())
      if (t.name != drop) {
        const auto b = f.bytes(t);
        w.write(b.data(), b.size());
      }
    w.finish();
  };
  rewrite(dir_ + "/no-scales", "vit_model.blocks.1.attn.qkv.scales", "");
  rewrite(dir_ + "/bad-scales", "", "vit_model.merger.mlp.0.scales");
  const std::string x2t = " --task x2t --image " + src("data/images/camera.png") + " --resolution 56 --prompt q --max-new-tokens 1";
  EXPECT_NE(sh(test::exe() + " run " + dir_ + "/no-scales" + x2t, &out), 0);
  EXPECT_NE(out.find(dir_ + "/no-scales/awq_state_dict.safetensors"), std::string::npos) << out;
  EXPECT_NE(out.find("vit_model.blocks.1.attn.qkv.scales"), std::string::npos) << out;
  EXPECT_NE(sh(test::exe() + " inspect " + dir_ + "/bad-scales", &out), 0);
  EXPECT_NE(out.find("vit_model.merger.mlp.0"), std::string::npos) << out;
  EXPECT_NE(out.find("scales"), std::string::npos) << out;
  EXPECT_THROW(vit::Vit::load(dir_ + "/bad-scales"), lq::Error);
}

}  // namespace
}  // namespace lq::pipeline
