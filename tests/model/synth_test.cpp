// Synthetic checkpoints: determinism, validity against the model map, the planted statistics, the
// latent position table, and the tokenizer files.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/error.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/spec.h"
#include "model/synth.h"
#include "num/formats.h"
#include "test_paths.h"

namespace lq::model {
namespace {

namespace fs = std::filesystem;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

SynthResult synth(const std::string& dir, const std::string& preset, uint64_t seed,
                  io::DType dtype = io::DType::F32, const std::string& tokenizer = "") {
  SynthOptions o;
  o.preset = preset;
  o.out_dir = dir;
  o.seed = seed;
  o.dtype = dtype;
  o.tokenizer_dir = tokenizer;
  o.force = true;
  return synthesize(o);
}

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + long(v.size() / 2), v.end());
  return v[v.size() / 2];
}

TEST(Synth, SameSeedSameBytesDifferentSeedDifferentBytes) {
  const std::string a = test::scratch_dir("synth_a"), b = test::scratch_dir("synth_b"), c = test::scratch_dir("synth_c");
  synth(a, "tiny", 7);
  synth(b, "tiny", 7);
  synth(c, "tiny", 8);
  const std::string fa = slurp(a + "/model.safetensors");
  EXPECT_GT(fa.size(), 1000000u);
  EXPECT_EQ(fa, slurp(b + "/model.safetensors"));
  EXPECT_EQ(slurp(a + "/vocab.json"), slurp(b + "/vocab.json"));
  const std::string fc = slurp(c + "/model.safetensors");
  ASSERT_EQ(fa.size(), fc.size());  // same header (names, shapes), different data
  EXPECT_NE(fa, fc);
}

// --layers keeps every shape and name of the preset but stops after N decoder layers: the config says
// so, the spec validates, and layer N's tensors do not exist.
TEST(Synth, FewerLayersKeepShapes) {
  const std::string dir = test::scratch_dir("synth_layers");
  SynthOptions o;
  o.preset = "small";
  o.out_dir = dir;
  o.layers = 2;
  o.force = true;
  const SynthResult r = synthesize(o);
  EXPECT_EQ(r.config.num_layers, 2);
  const ModelConfig cfg = load_config(dir);
  EXPECT_EQ(cfg.num_layers, 2);
  EXPECT_EQ(cfg.hidden_size, find_synth_preset("small").config.hidden_size);
  io::TensorStore store(dir);
  const ModelSpec spec = build_spec(cfg, store);
  EXPECT_EQ(spec.layers.size(), 2u);
  EXPECT_TRUE(store.has("language_model.model.layers.1.mlp.down_proj.weight"));
  EXPECT_FALSE(store.has("language_model.model.layers.2.mlp.down_proj.weight"));
  o.layers = -1;
  EXPECT_THROW(synthesize(o), Error);
}

TEST(Synth, Bf16FileIsTheRoundedF32File) {
  const std::string f = test::scratch_dir("synth_f32"), h = test::scratch_dir("synth_bf16");
  synth(f, "tiny", 3, io::DType::F32);
  synth(h, "tiny", 3, io::DType::BF16);
  const io::TensorStore sf(f), sh(h);
  ASSERT_EQ(sf.names(), sh.names());
  for (const auto& name : sf.names()) {
    ASSERT_EQ(sh.info(name).dtype, io::DType::BF16);
    const auto full = sf.read_f32(name);
    std::vector<uint16_t> expect(full.size()), got(full.size());
    num::f32_to_bf16(full.data(), expect.data(), full.size());
    sh.read_rows_bf16(name, 0, sh.info(name).rows(), got.data());
    ASSERT_EQ(expect, got) << name;
  }
}

TEST(Synth, ChunkingDoesNotChangeValues) {
  ModelConfig c = find_synth_preset("tiny").config;
  c.vocab_size = 512;
  const ModelSpec spec = expected_spec(c, Arch::LanceMoT);
  for (const auto& t : spec.tensors) {
    if (t.numel() > 50000) continue;
    const TensorSynth gen(t, c, 11);
    std::vector<float> whole(size_t(t.numel())), parts(size_t(t.numel()));
    gen.fill(0, t.numel(), whole.data());
    for (int64_t b = 0; b < t.numel(); b += 997) gen.fill(b, std::min(t.numel(), b + 997), parts.data() + b);
    ASSERT_EQ(whole, parts) << t.name;
  }
}

TEST(Synth, NormalVariateHasUnitMoments) {
  double s1 = 0, s2 = 0, s4 = 0;
  const int n = 1 << 20;
  for (int i = 0; i < n; ++i) {
    const double z = synth_normal(12345, uint64_t(i));
    s1 += z, s2 += z * z, s4 += z * z * z * z;
  }
  EXPECT_NEAR(s1 / n, 0.0, 0.01);
  EXPECT_NEAR(s2 / n, 1.0, 0.01);
  EXPECT_NEAR(s4 / n, 2.7, 0.03);  // Irwin-Hall(n=4): excess kurtosis -6/(5n) = -0.3
}

TEST(Synth, SmallPresetValidatesAndHasPlantedOutliers) {
  const std::string dir = test::scratch_dir("synth_small");
  const SynthResult r = synth(dir, "small", 1);
  const ModelConfig c = load_config(dir);
  EXPECT_EQ(c.num_layers, 8);
  EXPECT_EQ(c.hidden_size, 512);
  EXPECT_EQ(c.vocab_size % 64, 0);
  EXPECT_GE(c.vocab_size, c.len_tokenizer);
  const io::TensorStore store(dir);
  const ModelSpec spec = build_spec(c, store);  // strict: throws on any name/shape problem
  EXPECT_EQ(int(spec.tensors.size()), r.num_tensors);
  EXPECT_EQ(spec.num_targets(Path::Gen), 8 * 7);

  // Layer norms: ~1, with a few channels 10-50x, the same channels in every layer of a path.
  auto outliers = [&](const std::string& name) {
    const auto w = store.read_f32(name);
    std::vector<int> big;
    for (size_t i = 0; i < w.size(); ++i) {
      EXPECT_TRUE(std::abs(w[i]) < 1.6f || (w[i] >= 10.0f && w[i] <= 50.0f)) << name << "[" << i << "]=" << w[i];
      if (w[i] >= 10.0f) big.push_back(int(i));
    }
    return big;
  };
  const auto und0 = outliers(spec.layers[0].path(Path::Und).input_layernorm);
  EXPECT_EQ(und0.size(), 2u);  // hidden 512 / 256
  EXPECT_EQ(outliers(spec.layers[5].path(Path::Und).post_attention_layernorm), und0);
  EXPECT_EQ(outliers(spec.layers[3].path(Path::Gen).input_layernorm).size(), 2u);

  // Linear weights: column RMS ~ 1/sqrt(in) with a few heavy columns (3-8x).
  const LinearSpec& gate = spec.layers[2].path(Path::Gen).linear(LinearKind::Gate);
  const auto w = store.read_f32(gate.weight_name());
  std::vector<double> col_rms(size_t(gate.in), 0.0);
  for (int64_t o = 0; o < gate.out; ++o)
    for (int64_t i = 0; i < gate.in; ++i) col_rms[size_t(i)] += double(w[size_t(o * gate.in + i)]) * w[size_t(o * gate.in + i)];
  for (auto& v : col_rms) v = std::sqrt(v / double(gate.out));
  const double med = median(col_rms);
  EXPECT_NEAR(med * std::sqrt(double(gate.in)), 1.0, 0.05);
  const auto heavy = std::count_if(col_rms.begin(), col_rms.end(), [&](double v) { return v > 2.5 * med; });
  EXPECT_GE(heavy, 2);   // ~512/64 = 8 expected
  EXPECT_LE(heavy, 24);
  EXPECT_GT(*std::max_element(col_rms.begin(), col_rms.end()), 3.0 * med);
}

TEST(Synth, LatentTableMatchesLanceMini) {
  LQ_REQUIRE_SHARED();
  // The fixture stores the real sin-cos table for hidden 256; ours must be the same function.
  const ModelConfig c = load_config(test::lance_mini_dir());
  const io::TensorStore store(test::lance_mini_dir());
  const auto ref = store.read_f32("latent_pos_embed.pos_embed");
  const TensorSpec t{"latent_pos_embed.pos_embed", store.info("latent_pos_embed.pos_embed").shape, TensorRole::LatentPosEmbed};
  std::vector<float> ours(ref.size());
  TensorSynth(t, c, 0).fill(0, t.numel(), ours.data());
  float max_err = 0;
  for (size_t i = 0; i < ref.size(); ++i) max_err = std::max(max_err, std::abs(ref[i] - ours[i]));
  EXPECT_LT(max_err, 1e-6f);
}

TEST(Synth, GeneratedTokenizerFiles) {
  const std::string dir = test::scratch_dir("synth_tok");
  const SynthResult r = synth(dir, "tiny", 0);
  const auto vocab = nlohmann::json::parse(slurp(dir + "/vocab.json"));
  const auto cfg = nlohmann::json::parse(slurp(dir + "/tokenizer_config.json"));
  std::istringstream merges(slurp(dir + "/merges.txt"));
  std::string line;
  std::getline(merges, line);
  EXPECT_EQ(line, "#version: 0.2");
  int n_merges = 0;
  while (std::getline(merges, line)) {
    const auto sp = line.find(' ');
    ASSERT_NE(sp, std::string::npos) << line;
    // Merge k creates id 256 + k, and its parts are earlier tokens.
    EXPECT_EQ(vocab.at(line.substr(0, sp) + line.substr(sp + 1)).get<int>(), 256 + n_merges) << line;
    EXPECT_LT(vocab.at(line.substr(0, sp)).get<int>(), 256 + n_merges);
    ++n_merges;
  }
  EXPECT_GT(n_merges, 200);
  EXPECT_EQ(int(vocab.size()), 256 + n_merges);
  EXPECT_EQ(vocab.at("!").get<int>(), 0);
  EXPECT_EQ(vocab.at("\xC4\xA0").get<int>(), 220);  // "Ġ" (byte 0x20) is the 221st symbol
  const auto& added = cfg.at("added_tokens_decoder");
  EXPECT_EQ(added.size(), 7u);
  EXPECT_EQ(added.at(std::to_string(256 + n_merges + 2)).at("content"), "<|im_end|>");
  EXPECT_EQ(r.config.len_tokenizer, 256 + n_merges + 7);
  const auto lance = nlohmann::json::parse(slurp(dir + "/lance_config.json"));
  EXPECT_EQ(lance.at("special_token_ids").at("<|vision_start|>").get<int>(), 256 + n_merges + 3);
  EXPECT_EQ(lance.at("len_tokenizer").get<int>(), r.config.len_tokenizer);
}

TEST(Synth, CopiedTokenizerSetsVocab) {
  LQ_REQUIRE_SHARED();
  const std::string dir = test::scratch_dir("synth_copytok");
  const SynthResult r = synth(dir, "tiny", 0, io::DType::BF16, test::lance_mini_dir());
  // lance-mini: len(tokenizer) 4263, vocab 4288 (the next multiple of 64), <|im_start|> = 4257.
  EXPECT_EQ(r.config.len_tokenizer, 4263);
  EXPECT_EQ(r.config.vocab_size, 4288);
  EXPECT_EQ(slurp(dir + "/merges.txt"), slurp(test::lance_mini_dir() + "/merges.txt"));
  const auto llm = nlohmann::json::parse(slurp(dir + "/llm_config.json"));
  EXPECT_EQ(llm.at("vocab_size").get<int>(), 4288);
  EXPECT_EQ(llm.at("eos_token_id").get<int>(), 4258);
}

TEST(Synth, RefusesNonEmptyDirectoryWithoutForce) {
  const std::string dir = test::scratch_dir("synth_refuse");
  std::ofstream(dir + "/keep.txt") << "mine";
  SynthOptions o;
  o.preset = "tiny";
  o.out_dir = dir;
  EXPECT_THROW(synthesize(o), lq::Error);
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));
  o.force = true;
  synthesize(o);
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors"));
  EXPECT_TRUE(fs::exists(dir + "/keep.txt"));  // --force replaces only synth's own files
  o.preset = "no-such-preset";
  EXPECT_THROW(synthesize(o), lq::Error);
}

}  // namespace
}  // namespace lq::model
