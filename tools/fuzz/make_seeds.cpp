// Writes seed inputs for the file-based fuzz targets (fuzz_util.h bundles) into OUT/<target>/:
// small valid checkpoints of every format and scheme our writers produce, model configs and tokenizers.
// Usage: make_seeds OUT   (run.sh runs it into the scratch corpus before fuzzing)
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "formats/checkpoint.h"
#include "fuzz_util.h"
#include "model/synth_tokenizer.h"
#include "quant/quantizer.h"
#include "tokenizer/pretokenizer.h"
#include "vae/wan_vae.h"
#include "vit/vit_config.h"

namespace fs = std::filesystem;
using lq::formats::FormatId;
using lq::quant::Scheme;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void put(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

struct Lin {
  std::string base;
  Scheme scheme;
  int64_t group;
  lq::quant::ScaleDType sdt;
  bool bias;
};

// A two-to-three-linear checkpoint [16 x 32] plus one plain tensor, written by our writer.
std::string checkpoint(FormatId f, const std::vector<Lin>& lins, const fs::path& tmp, std::string* config_name,
                       std::string* weights_name) {
  fs::remove_all(tmp);
  std::vector<lq::formats::PlanEntry> plan;
  for (const auto& l : lins) {
    lq::formats::LinearDecl d;
    d.base = l.base, d.scheme = l.scheme, d.out = 16, d.in = 32, d.group = l.scheme == Scheme::NvFp4 ? 16 : l.group == 0 ? 32 : l.group;  // 0 = per channel
    d.scale_dtype = l.sdt, d.has_bias = l.bias;
    plan.push_back(d);
  }
  plan.push_back(lq::formats::PlainDecl{"model.norm.weight", {32}, lq::io::DType::BF16});
  lq::formats::WriterOptions wo;
  wo.model_config = {{"hidden_size", 32}};
  wo.extra_meta = {{"producer", "lance-quant seeds"}};
  lq::formats::CheckpointWriter w(tmp.string(), f, plan, wo);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<float> wt(16 * 32), bias(16), norm(32, 1.0f);
  for (const auto& l : lins) {
    for (auto& v : wt) v = nd(rng);
    for (auto& v : bias) v = nd(rng);
    lq::quant::QuantParams p;
    p.scheme = l.scheme, p.group = l.group, p.scale_dtype = l.sdt;
    p.nvfp4_pow2_tensor_scale = f == FormatId::LanceQuantV1;
    w.write_quantized(l.base, lq::quant::quantize(wt.data(), 16, 32, p), l.bias ? bias.data() : nullptr);
  }
  w.write_plain("model.norm.weight", norm.data());
  w.finish();
  *weights_name = fs::path(w.weights_path()).filename().string();
  for (const char* c : {"awq_meta.json", "nvfp4_meta.json", "hf_quant_config.json", "config.json"})
    if (fs::exists(tmp / c)) {
      *config_name = c;
      break;
    }
  return slurp(tmp / *config_name);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds OUT\n");
    return 2;
  }
  const fs::path out(argv[1]), tmp = out / "tmp-checkpoint";
  using SD = lq::quant::ScaleDType;
  const std::string a = "model.layers.0.self_attn.q_proj", b = "model.layers.0.mlp_moe_gen.down_proj", c = "model.layers.1.mlp.up_proj";
  struct Case {
    const char* target;
    FormatId f;
    std::vector<Lin> lins;
  };
  const std::vector<Case> cases = {
      {"lance-quant-v1", FormatId::LanceQuantV1, {{a, Scheme::Int4Asym, 16, SD::BF16, true}, {b, Scheme::Int4Asym, 32, SD::BF16, false}}},
      {"lance-quant-v1", FormatId::LanceQuantV1, {{a, Scheme::Int4Sym, 16, SD::BF16, false}, {b, Scheme::Int8Sym, 32, SD::BF16, true}}},
      {"lance-quant-v1", FormatId::LanceQuantV1, {{a, Scheme::NvFp4, 16, SD::BF16, false}, {b, Scheme::NvFp4, 16, SD::BF16, true}}},
      {"lance-quant-v1", FormatId::LanceQuantV1, {{a, Scheme::NvFp4, 16, SD::BF16, false}, {b, Scheme::Int4Asym, 32, SD::BF16, false}}},
      {"autoawq", FormatId::AutoAwq, {{a, Scheme::Int4Asym, 16, SD::F16, true}, {b, Scheme::Int4Asym, 16, SD::F16, false}}},
      {"autoawq", FormatId::AutoAwq, {{a, Scheme::Int4Asym, 32, SD::F16, false}}},
      {"compressed-tensors", FormatId::CompressedTensors,
       {{a, Scheme::Int4Asym, 16, SD::BF16, true}, {b, Scheme::Int4Sym, 32, SD::F16, false}, {c, Scheme::Int8Sym, 16, SD::F32, false}}},
      {"compressed-tensors", FormatId::CompressedTensors, {{a, Scheme::NvFp4, 16, SD::BF16, false}, {b, Scheme::NvFp4, 16, SD::BF16, true}}},
      {"compressed-tensors", FormatId::CompressedTensors, {{a, Scheme::Int4Asym, 0, SD::BF16, false}}},
      {"modelopt", FormatId::ModelOpt, {{a, Scheme::NvFp4, 16, SD::BF16, true}, {b, Scheme::NvFp4, 16, SD::BF16, false}}},
  };
  std::map<std::string, int> n;
  for (const auto& k : cases) {
    std::string cfg_name, weights_name;
    const std::string cfg = checkpoint(k.f, k.lins, tmp, &cfg_name, &weights_name);
    const std::string weights = slurp(tmp / weights_name);
    std::vector<std::string> parts = {cfg, weights};
    if (k.f == FormatId::LanceQuantV1) parts.insert(parts.begin(), cfg_name == "nvfp4_meta.json" ? "N" : "A");
    put(out / k.target, "seed" + std::to_string(n[k.target]++), lq::fuzz::bundle(parts));
  }
  fs::remove_all(tmp);

  // Model configs: lance-mini's shape and a plain Qwen2 one.
  const nlohmann::json llm = {{"hidden_size", 256}, {"intermediate_size", 768}, {"num_attention_heads", 4},
                              {"num_key_value_heads", 2}, {"num_hidden_layers", 4}, {"vocab_size", 4288},
                              {"rope_theta", 1000000.0}, {"rms_norm_eps", 1e-6}, {"max_position_embeddings", 4096},
                              {"tie_word_embeddings", false}, {"rope_scaling", {{"type", "mrope"}, {"mrope_section", {8, 12, 12}}}}};
  const nlohmann::json lance = {{"latent_channels", 48}, {"max_latent_size", 64}, {"max_num_latent_frames", 1},
                                {"latent_pos_embed_rows", 4096}, {"t2i_latent_grid_thw", {1, 8, 8}}, {"time_embed_freq_dim", 256},
                                {"timestep_shift", 3.5}, {"num_timesteps", 30}, {"cfg_text_scale", 4.0},
                                {"cfg_interval", {0.4, 1.0}}, {"toy_vae", {{"pixel_patch", 4}, {"latent_mean", 0.5}, {"latent_std", 0.36}}},
                                {"t2i_system_instruction", "Generate an image."}};
  put(out / "config", "seed0", lq::fuzz::bundle({llm.dump(2), lance.dump(2)}));
  put(out / "config", "seed1", lq::fuzz::bundle({nlohmann::json{{"hidden_size", 64}, {"intermediate_size", 128}, {"num_attention_heads", 2},
                                                                  {"num_hidden_layers", 2}, {"vocab_size", 300}}.dump(), ""}));

  // Tokenizers: the small BPE synth writes (vocab.json + merges.txt + tokenizer_config.json), and the
  // same as one tokenizer.json.
  const fs::path tok = out / "tmp-tokenizer";
  fs::remove_all(tok);
  fs::create_directories(tok);
  lq::model::write_small_bpe(tok.string(), 40);
  const std::string vocab = slurp(tok / "vocab.json"), merges = slurp(tok / "merges.txt"), tcfg = slurp(tok / "tokenizer_config.json");
  put(out / "tokenizer", "seed0", lq::fuzz::bundle({"V", vocab, merges, tcfg}));
  nlohmann::json tj;
  tj["normalizer"] = {{"type", "NFC"}};
  tj["pre_tokenizer"] = {{"type", "Sequence"},
                         {"pretokenizers",
                          {{{"type", "Split"}, {"pattern", {{"Regex", lq::tok::kQwen2Pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
                           {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}}}};
  nlohmann::json merge_list = nlohmann::json::array();
  std::istringstream ml(merges);
  for (std::string line; std::getline(ml, line);)
    if (!line.empty() && line[0] != '#') merge_list.push_back(line);
  tj["model"] = {{"type", "BPE"}, {"vocab", nlohmann::json::parse(vocab)}, {"merges", merge_list}};
  const nlohmann::json cfgj = nlohmann::json::parse(tcfg);
  nlohmann::json added = nlohmann::json::array();
  if (cfgj.contains("added_tokens_decoder"))
    for (const auto& [id, t] : cfgj["added_tokens_decoder"].items()) {
      nlohmann::json e = t;
      e["id"] = std::stoi(id);
      added.push_back(e);
    }
  tj["added_tokens"] = added;
  put(out / "tokenizer", "seed1", lq::fuzz::bundle({"J", tj.dump(), "", ""}));
  fs::remove_all(tok);

  // Vision configs: Qwen2.5-VL's vision tower (flat and nested), the Wan2.2 VAE's diffusers config.
  const nlohmann::json vit = lq::vit::VitConfig{}.to_json();
  put(out / "vision_config", "seed0", lq::fuzz::bundle({"V", vit.dump(1)}));
  put(out / "vision_config", "seed1", lq::fuzz::bundle({"V", nlohmann::json{{"vision_config", vit}, {"model_type", "qwen2_5_vl"}}.dump()}));
  const lq::vae::WanVaeConfig w = lq::vae::wan22_config();
  std::vector<bool> td(w.temporal_downsample.begin(), w.temporal_downsample.end());
  const nlohmann::json vae = {{"_class_name", "AutoencoderKLWan"}, {"is_residual", true}, {"z_dim", w.z_dim},
                              {"base_dim", w.base_dim}, {"decoder_base_dim", w.decoder_base_dim}, {"dim_mult", w.dim_mult},
                              {"num_res_blocks", w.num_res_blocks}, {"temperal_downsample", td}, {"patch_size", w.patch_size},
                              {"in_channels", 12}, {"out_channels", 12}, {"attn_scales", nlohmann::json::array()},
                              {"latents_mean", w.latents_mean}, {"latents_std", w.latents_std}};
  put(out / "vision_config", "seed2", lq::fuzz::bundle({"A", vae.dump(1)}));
  std::printf("seeds written to %s\n", out.c_str());
  return 0;
}
