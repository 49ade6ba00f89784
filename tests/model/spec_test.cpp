// The model map: recognition, names, shapes, fusion pairs and strict validation.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <set>

#include "io/error.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/spec.h"
#include "test_paths.h"

namespace lq::model {
namespace {

namespace fs = std::filesystem;

// A small config with the Lance structure (GQA 4/2) and dims unlike the fixture's.
ModelConfig tiny_config() {
  ModelConfig c;
  c.source = "tiny test config";
  c.num_layers = 2;
  c.hidden_size = 64;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.intermediate_size = 96;
  c.vocab_size = 128;
  c.latent_channels = 8;
  c.time_embed_freq_dim = 32;
  c.max_latent_size = 4;
  c.latent_pos_embed_rows = 16;
  return c;
}

// The Lance_3B configuration from the architecture doc, section 1.
ModelConfig lance_3b_config() {
  ModelConfig c;
  c.num_layers = 36;
  c.hidden_size = 2048;
  c.num_heads = 16;
  c.num_kv_heads = 2;
  c.head_dim = 128;
  c.intermediate_size = 11008;
  c.vocab_size = 151936;
  c.latent_channels = 48;
  c.time_embed_freq_dim = 256;
  c.max_latent_size = 64;
  c.latent_pos_embed_rows = 4096;
  return c;
}

// Writes a safetensors file holding `tensors` (zeros), after `edit` may change the list.
struct FakeTensor {
  std::string name;
  std::vector<int64_t> shape;
};
std::string write_store(const std::string& dir_name, std::vector<FakeTensor> tensors) {
  const std::string dir = test::scratch_dir(dir_name);
  io::SafetensorsWriter w(dir + "/model.safetensors");
  for (const auto& t : tensors) w.declare(t.name, io::DType::F32, t.shape);
  for (const auto& t : tensors) {
    int64_t n = 1;
    for (auto d : t.shape) n *= d;
    std::vector<float> zeros(size_t(n), 0.0f);
    w.write(zeros.data(), zeros.size() * 4);
  }
  w.finish();
  return dir;
}
std::vector<FakeTensor> tensors_of(const ModelSpec& s) {
  std::vector<FakeTensor> v;
  for (const auto& t : s.tensors) v.push_back({t.name, t.shape});
  return v;
}

std::string build_error(const ModelConfig& c, const std::string& dir) {
  try {
    build_spec(c, io::TensorStore(dir));
  } catch (const lq::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Spec, LanceMiniFixtureIsRecognisedAndMapped) {
  LQ_REQUIRE_SHARED();
  const ModelConfig c = load_config(test::lance_mini_dir());
  const io::TensorStore store(test::lance_mini_dir());
  const ModelSpec s = build_spec(c, store);
  // Numbers from the fixture README: 125 tensors, 4 layers, 56 targets = 4 x 14.
  EXPECT_EQ(s.arch, Arch::LanceMoT);
  EXPECT_EQ(s.tensors.size(), 125u);
  ASSERT_EQ(s.layers.size(), 4u);
  EXPECT_EQ(s.num_targets(Path::Und), 28);
  EXPECT_EQ(s.num_targets(Path::Gen), 28);
  EXPECT_FALSE(s.has_vit);
  // Kept = 125 - 56 target weights - 24 q/k/v biases.
  EXPECT_EQ(s.kept.size(), 45u);
  // Every target's shape and bias agree with the file.
  for (const auto& l : s.linears) {
    EXPECT_EQ(store.info(l.weight_name()).shape, (std::vector<int64_t>{l.out, l.in})) << l.name;
    EXPECT_EQ(store.has(l.name + ".bias"), l.has_bias) << l.name;
  }
  // Naming: the attention twin suffixes the leaf, the MLP twin the module.
  const auto& gen2 = s.layers[2].path(Path::Gen);
  EXPECT_EQ(gen2.linear(LinearKind::K).name, "language_model.model.layers.2.self_attn.k_proj_moe_gen");
  EXPECT_EQ(gen2.linear(LinearKind::Up).name, "language_model.model.layers.2.mlp_moe_gen.up_proj");
  EXPECT_EQ(gen2.input_layernorm, "language_model.model.layers.2.input_layernorm_moe_gen.weight");
  EXPECT_EQ(gen2.q_norm, "language_model.model.layers.2.self_attn.q_norm_moe_gen.weight");
  EXPECT_EQ(s.layers[0].path(Path::Und).linear(LinearKind::Down).name, "language_model.model.layers.0.mlp.down_proj");
  EXPECT_EQ(gen2.linear(LinearKind::K).out, 128);
  EXPECT_EQ(gen2.linear(LinearKind::Down).in, 768);
  const LinearSpec* found = s.find_linear("language_model.model.layers.3.self_attn.o_proj_moe_gen");
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->layer, 3);
  EXPECT_EQ(found->path, Path::Gen);
  EXPECT_EQ(found->kind, LinearKind::O);
}

TEST(Spec, FusionPairsPerLayerAndPath) {
  LQ_REQUIRE_SHARED();
  const ModelSpec s = build_spec(load_config(test::lance_mini_dir()), io::TensorStore(test::lance_mini_dir()));
  ASSERT_EQ(s.fusions.size(), 4u * 2u * 4u);  // 4 layers x 2 paths x 4 folds
  std::map<FusionKind, int> counts;
  for (const auto& f : s.fusions) ++counts[f.kind];
  EXPECT_EQ(counts[FusionKind::NormToLinears], 16);
  EXPECT_EQ(counts[FusionKind::VToO], 8);
  EXPECT_EQ(counts[FusionKind::UpToDown], 8);

  const std::string L1 = "language_model.model.layers.1.";
  auto find = [&](int layer, Path p, FusionKind k, LinearKind first) -> const FusionPair& {
    for (const auto& f : s.fusions)
      if (f.layer == layer && f.path == p && f.kind == k && f.target_kinds.front() == first) return f;
    throw std::runtime_error("fusion pair not found");
  };
  const FusionPair& qkv = find(1, Path::Gen, FusionKind::NormToLinears, LinearKind::Q);
  EXPECT_EQ(qkv.prev_tensors, std::vector<std::string>{L1 + "input_layernorm_moe_gen.weight"});
  EXPECT_EQ(qkv.targets, (std::vector<std::string>{L1 + "self_attn.q_proj_moe_gen", L1 + "self_attn.k_proj_moe_gen",
                                                   L1 + "self_attn.v_proj_moe_gen"}));
  EXPECT_EQ(qkv.num_scales, 256);
  const FusionPair& mlp = find(1, Path::Und, FusionKind::NormToLinears, LinearKind::Gate);
  EXPECT_EQ(mlp.prev_tensors, std::vector<std::string>{L1 + "post_attention_layernorm.weight"});
  EXPECT_EQ(mlp.targets, (std::vector<std::string>{L1 + "mlp.gate_proj", L1 + "mlp.up_proj"}));
  const FusionPair& down = find(1, Path::Gen, FusionKind::UpToDown, LinearKind::Down);
  EXPECT_EQ(down.prev_tensors, std::vector<std::string>{L1 + "mlp_moe_gen.up_proj.weight"});
  EXPECT_EQ(down.num_scales, 768);

  // v -> o: 2 KV heads of 64 dims; query head j (of 4) uses KV head j / 2.
  const FusionPair& vo = find(1, Path::Und, FusionKind::VToO, LinearKind::O);
  EXPECT_EQ(vo.prev_tensors, (std::vector<std::string>{L1 + "self_attn.v_proj.weight", L1 + "self_attn.v_proj.bias"}));
  EXPECT_EQ(vo.targets, std::vector<std::string>{L1 + "self_attn.o_proj"});
  EXPECT_EQ(vo.num_scales, 128);
  EXPECT_EQ(vo.target_in, 256);
  EXPECT_EQ(vo.heads_per_group, 2);
  EXPECT_EQ(vo.scale_index(0 * 64 + 5), 5);        // head 0 -> kv 0
  EXPECT_EQ(vo.scale_index(1 * 64 + 5), 5);        // head 1 -> kv 0
  EXPECT_EQ(vo.scale_index(2 * 64 + 5), 64 + 5);   // head 2 -> kv 1
  EXPECT_EQ(vo.scale_index(3 * 64 + 63), 64 + 63); // head 3 -> kv 1
  // The shared attention mixes both paths' V rows: v -> o is tied across paths, the other folds are not.
  EXPECT_TRUE(vo.tied_across_paths);
  const FusionPair* partner = s.tied_partner(vo);
  ASSERT_NE(partner, nullptr);
  EXPECT_EQ(partner->path, Path::Gen);
  EXPECT_EQ(partner->targets, std::vector<std::string>{L1 + "self_attn.o_proj_moe_gen"});
  EXPECT_EQ(s.tied_partner(*partner), &vo);
  EXPECT_FALSE(qkv.tied_across_paths);
  EXPECT_EQ(s.tied_partner(down), nullptr);
  EXPECT_EQ(qkv.scale_index(200), 200);            // identity for norm folds
}

TEST(Spec, Lance3BCounts) {
  const ModelSpec s = expected_spec(lance_3b_config(), Arch::LanceMoT);
  // Architecture doc, section 2: 1021 tensors, 504 targets, 5.549e9 target weights.
  EXPECT_EQ(s.tensors.size(), 1021u);
  EXPECT_EQ(s.linears.size(), 504u);
  EXPECT_EQ(s.target_weights(), 36LL * 2 * (2048LL * 2048 * 2 + 256LL * 2048 * 2 + 3LL * 11008 * 2048));
  EXPECT_NEAR(double(s.target_weights()), 5.549e9, 0.001e9);
  // 6,176,817,200 parameters besides the [4096, 2048] latent table (24,707,268,800 bytes as F32).
  int64_t params = 0;
  for (const auto& t : s.tensors)
    if (t.role != TensorRole::LatentPosEmbed) params += t.numel();
  EXPECT_EQ(params, 6176817200LL);
  EXPECT_EQ(s.fusions.size(), 36u * 2 * 4);
}

TEST(Spec, StrictValidationListsEveryProblemInOneError) {
  const ModelConfig c = tiny_config();
  auto tensors = tensors_of(expected_spec(c, Arch::LanceMoT));
  const std::string gone = "language_model.model.layers.1.mlp_moe_gen.down_proj.weight";
  const std::string reshaped = "language_model.model.layers.0.self_attn.k_proj_moe_gen.weight";
  std::erase_if(tensors, [&](const FakeTensor& t) { return t.name == gone; });
  for (auto& t : tensors)
    if (t.name == reshaped) t.shape = {64, 64};
  tensors.push_back({"language_model.model.layers.0.self_attn.extra_proj.weight", {4, 4}});
  const std::string err = build_error(c, write_store("spec_strict", tensors));
  ASSERT_FALSE(err.empty());
  EXPECT_NE(err.find("1 missing, 1 unexpected, 1 mis-shaped"), std::string::npos) << err;
  EXPECT_NE(err.find("missing: " + gone + " [64,96]"), std::string::npos) << err;
  EXPECT_NE(err.find("unexpected: language_model.model.layers.0.self_attn.extra_proj.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("mis-shaped: " + reshaped + " is [64,64], expected [32,64]"), std::string::npos) << err;
}

TEST(Spec, CheckpointWithoutGenWeightsIsRefused) {
  // Lance's own loader silently fills missing gen weights from und; we must refuse and name them.
  const ModelConfig c = tiny_config();
  auto tensors = tensors_of(expected_spec(c, Arch::LanceMoT));
  std::erase_if(tensors, [](const FakeTensor& t) { return t.name.find("layers.") != std::string::npos && t.name.find("_moe_gen") != std::string::npos; });
  const std::string err = build_error(c, write_store("spec_nogen", tensors));
  EXPECT_NE(err.find("28 missing, 0 unexpected"), std::string::npos) << err;  // 2 layers x (7 weights + 3 biases + 4 norms)
  EXPECT_NE(err.find("missing: language_model.model.layers.0.self_attn.q_proj_moe_gen.bias"), std::string::npos) << err;
  // The first few are named, the rest counted (a checkpoint of another layout must not print hundreds of lines).
  EXPECT_NE(err.find("... and 22 more missing"), std::string::npos) << err;
  EXPECT_EQ(err.find("missing: language_model.model.layers.1.post_attention_layernorm_moe_gen.weight"), std::string::npos) << err;
}

TEST(Spec, ConfigMismatchIsReportedAsMisShaped) {
  LQ_REQUIRE_SHARED();
  ModelConfig c = load_config(test::lance_mini_dir());
  c.intermediate_size = 512;
  const std::string err = build_error(c, test::lance_mini_dir());
  EXPECT_NE(err.find("mis-shaped: language_model.model.layers.0.mlp.gate_proj.weight is [768,256], expected [512,256]"),
            std::string::npos)
      << err;
}

TEST(Spec, PlainQwen2IsRecognised) {
  ModelConfig c = tiny_config();
  const ModelSpec expected = expected_spec(c, Arch::Qwen2);
  EXPECT_EQ(expected.tensors.size(), 1u + 2 * 12 + 2);  // embed, 2 x (2 norms + 7 weights + 3 biases), norm, lm_head
  const ModelSpec s = build_spec(c, io::TensorStore(write_store("spec_qwen2", tensors_of(expected))));
  EXPECT_EQ(s.arch, Arch::Qwen2);
  EXPECT_EQ(s.num_paths(), 1);
  EXPECT_EQ(s.num_targets(Path::Und), 14);
  EXPECT_EQ(s.num_targets(Path::Gen), 0);
  EXPECT_FALSE(s.layers[0].has(Path::Gen));
  EXPECT_THROW(s.layers[0].path(Path::Gen), lq::Error);
  EXPECT_EQ(s.layers[1].path(Path::Und).linear(LinearKind::Q).name, "model.layers.1.self_attn.q_proj");
  EXPECT_TRUE(s.layers[1].path(Path::Und).q_norm.empty());
  EXPECT_EQ(s.fusions.size(), 2u * 4);

  // Tied embeddings: no lm_head tensor is fine.
  c.tie_word_embeddings = true;
  auto tied = tensors_of(expected);
  std::erase_if(tied, [](const FakeTensor& t) { return t.name == "lm_head.weight"; });
  EXPECT_EQ(build_spec(c, io::TensorStore(write_store("spec_qwen2_tied", tied))).tensors.size(), tied.size());
}

TEST(Spec, LanceUndOnlyIsQwen2WithLanceNames) {
  // The und half of a Lance checkpoint (no gen twins, no Lance globals) reads as Qwen2 with qk-norm.
  const ModelConfig c = tiny_config();
  auto tensors = tensors_of(expected_spec(c, Arch::LanceMoT));
  std::erase_if(tensors, [](const FakeTensor& t) {
    return t.name.find("_moe_gen") != std::string::npos || t.name.rfind("language_model.", 0) != 0;
  });
  const ModelSpec s = build_spec(c, io::TensorStore(write_store("spec_und_only", tensors)));
  EXPECT_EQ(s.arch, Arch::Qwen2);
  EXPECT_EQ(s.layers[0].path(Path::Und).q_norm, "language_model.model.layers.0.self_attn.q_norm.weight");
  EXPECT_EQ(s.tensors.size(), tensors.size());
}

TEST(Spec, VitTensorsAreKeptForLanceButUnexpectedForQwen2) {
  const ModelConfig c = tiny_config();
  auto lance = tensors_of(expected_spec(c, Arch::LanceMoT));
  lance.push_back({"vit_model.blocks.0.attn.qkv.weight", {48, 16}});
  const ModelSpec s = build_spec(c, io::TensorStore(write_store("spec_vit", lance)));
  EXPECT_TRUE(s.has_vit);
  EXPECT_EQ(s.kept.back().name, "vit_model.blocks.0.attn.qkv.weight");
  EXPECT_EQ(s.kept.back().role, TensorRole::Vit);
  EXPECT_EQ(s.linears.size(), 28u);  // the ViT is not a target

  auto qwen = tensors_of(expected_spec(c, Arch::Qwen2));
  qwen.push_back({"vit_model.blocks.0.attn.qkv.weight", {48, 16}});
  const std::string err = build_error(c, write_store("spec_qwen_vit", qwen));
  EXPECT_NE(err.find("unexpected: vit_model.blocks.0.attn.qkv.weight"), std::string::npos) << err;
}

}  // namespace
}  // namespace lq::model
