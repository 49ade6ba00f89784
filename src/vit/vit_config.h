// The Qwen2.5-VL vision tower's configuration and tensor map (Lance's `vit_type = qwen_2_5_vl_original`).
//
// Where Lance keeps it:
//   * a ViT directory (Lance_3B): `vit.safetensors` (names without prefix) + `config.json`, the Hugging
//     Face Qwen2_5_VLVisionConfig either flat or nested under "vision_config";
//   * inside a Lance_3B_Video checkpoint: `vit_model.*` tensors in model.safetensors; the configuration
//     then comes from llm_config.json's "vision_config" when it has one, else Qwen2.5-VL's values with
//     the dims the tensors show (depth, width, MLP width, output width).
//   * inside a quantized checkpoint (formats/checkpoint.h) that `lance-quant quantize --vit` wrote or
//     that carries the ViT through: `vit_model.*` in the checkpoint's weights file, each linear either a
//     plain `.weight` or stored quantized in the checkpoint's layout (lance-quant-v1: `.qweight`,
//     `.scales`, `.zeros` + `.bias`); the configuration as above (quantize --vit records it).
// Tensors (per block i < depth): patch_embed.proj.weight [hidden, C, tp, p, p]; blocks.i.norm1/norm2.weight
// [hidden]; blocks.i.attn.qkv.{weight [3 hidden, hidden], bias}; blocks.i.attn.proj.{weight, bias};
// blocks.i.mlp.{gate_proj,up_proj}.{weight [inter, hidden], bias}, mlp.down_proj.{weight, bias};
// merger.ln_q.weight [hidden]; merger.mlp.0.{weight [4 hidden, 4 hidden], bias}; merger.mlp.2.{weight
// [out, 4 hidden], bias}. 390 tensors at depth 32.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lq::io {
class TensorStore;
}
namespace lq::formats {
class CheckpointReader;
}

namespace lq::vit {

struct VitConfig {
  std::string source;  // where the values came from (messages, inspect)
  int depth = 32;
  int hidden_size = 1280;
  int num_heads = 16;
  int intermediate_size = 3420;
  int out_hidden_size = 2048;
  int in_channels = 3;
  int patch_size = 14;
  int temporal_patch_size = 2;
  int spatial_merge_size = 2;
  int window_size = 112;  // pixels
  int tokens_per_second = 2;
  std::vector<int> fullatt_block_indexes{7, 15, 23, 31};
  std::string hidden_act = "silu";
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;

  int head_dim() const { return hidden_size / num_heads; }
  int64_t patch_dim() const { return int64_t(in_channels) * temporal_patch_size * patch_size * patch_size; }
  int merge_unit() const { return spatial_merge_size * spatial_merge_size; }
  int window_units() const { return window_size / spatial_merge_size / patch_size; }  // merged units per window side
  bool full_attention(int block) const;
  nlohmann::json to_json() const;  // Hugging Face Qwen2_5_VLVisionConfig keys
};

// Parses a Qwen2_5_VLVisionConfig (flat, or the "vision_config" of a full Qwen2.5-VL config). Missing
// keys keep Qwen2.5-VL's values; inconsistent values (width not divisible by heads, odd rotary halves,
// an activation other than silu, ...) throw naming `where`.
VitConfig parse_vit_config(const nlohmann::json& j, const std::string& where);

struct TensorShape {
  std::string name;  // without prefix
  std::vector<int64_t> shape;
};
// Every tensor the configuration implies, in a fixed order (what synth writes).
std::vector<TensorShape> vit_tensors(const VitConfig& c);

// Checks `store` against the configuration: every tensor `prefix + name` present with its shape, and
// no other tensor with that prefix. Throws ONE lq::Error naming `where` and listing what is missing,
// unexpected or mis-shaped. With `quantized` (the reader of the quantized checkpoint whose weights file
// `store` is), a linear's `.weight` may instead be a quantized linear of the same [out, in] (its parts
// checked by the reader); its `.bias` stays a plain tensor.
void check_vit_tensors(const VitConfig& c, const io::TensorStore& store, const std::string& prefix, const std::string& where,
                       const formats::CheckpointReader* quantized = nullptr);

// Where a ViT lives and what it is.
struct VitLocation {
  std::string weights;  // a .safetensors file or a model directory
  std::string prefix;   // "" or "vit_model."
  VitConfig config;
  // Non-empty when the ViT lives in a quantized checkpoint: its directory (read with
  // formats::CheckpointReader); `weights` is then the checkpoint's weights file.
  std::string checkpoint_dir;
};
// `path` is a ViT directory (vit.safetensors + config.json) or a model directory (dense or a quantized
// checkpoint) whose weights hold `vit_model.*` tensors. Throws naming `path` when it is neither. Does not
// check the tensors.
VitLocation locate_vit(const std::string& path);
// True when the model directory's weights (model.safetensors[.index.json], or a quantized checkpoint's
// weights file) hold `vit_model.*` tensors.
bool model_has_vit(const std::string& model_dir);
// True when the model directory is a quantized checkpoint holding at least one `vit_model.*` linear
// stored quantized (`quantize --vit`).
bool model_has_quantized_vit(const std::string& model_dir);

}  // namespace lq::vit
