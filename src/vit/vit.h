// Native forward of the Qwen2.5-VL vision tower (see vit_config.h for the tensors):
//   patch embedding  a linear over patch vectors (C, tp, p, p) = the Conv3d of stride = kernel, no bias
//   32 blocks        x += proj(attn(RoPE2D(qkv(RMSNorm(x))))); x += down(silu(gate(h)) * up(h)), h = RMSNorm(x)
//                    attention inside 112-pixel windows (4 x 4 merged units; tokens reordered window by
//                    window), full attention in fullatt_block_indexes; both only within a temporal slice
//   merger           RMSNorm, 2 x 2 patches concatenated, Linear, exact GELU, Linear -> out_hidden_size,
//                    back in raster order of the merged grid: the rows that replace <|video_pad|> tokens.
// Every block only mixes patches of one temporal slice, so the forward runs one slice at a time (memory
// of one slice, whatever the video length). Linears go through fwd::LinearWeights (kernels::linear for
// dense weights; 4-bit kernels after replace_linear); attention is fwd::attention with one noise split
// per window (block-diagonal). f32 activations; error vs Hugging Face's f32 model ~1e-6 relative.
// Memory: weights borrowed from the safetensors memory map when their dtype is the storage's.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "forward/forward.h"
#include "quant/quantizer.h"
#include "vit/vit_config.h"

namespace lq::vit {

struct VitLoadOptions {
  fwd::WeightStorage storage = fwd::WeightStorage::F32;
  // Release each block's mapped pages after it runs (bounded resident set for a full-size f32 ViT while
  // the page cache keeps them; the next forward faults them back).
  bool release_pages = false;
};

// The window order of one temporal slice of a (h, w) patch grid: merged-unit indices (raster order) as
// the windows list them, and the patch count of each window (empty windows left out).
struct WindowOrder {
  std::vector<int32_t> units;
  std::vector<int64_t> window_patches;
};
WindowOrder window_order(int grid_h, int grid_w, const VitConfig& c);

// Rotary angles [patches, head_dim / 2] of one slice in the merge-contiguous patch order:
// (row, col) of patch -> [row * inv_freq (head_dim/4), col * inv_freq (head_dim/4)].
std::vector<float> rotary_angles(int grid_h, int grid_w, const VitConfig& c);

class Vit {
 public:
  static Vit load(const VitLocation& where, const VitLoadOptions& opts = {});
  static Vit load(const std::string& path, const VitLoadOptions& opts = {});  // locate_vit(path)
  Vit(Vit&&) noexcept;
  Vit& operator=(Vit&&) noexcept;
  ~Vit();

  const VitConfig& config() const;
  const std::string& weights_path() const;  // the file or directory read
  const std::string& prefix() const;        // "" or "vit_model."

  // patches: [t*h*w, patch_dim] in Lance's order (vit_input.h); grid (t, h, w) in patches, h and w
  // multiples of spatial_merge_size. Returns [t*h*w / merge_unit, out_hidden_size] in raster order of
  // the merged grid (t, h/2, w/2). Throws lq::Error on shape mismatches.
  std::vector<float> forward(const float* patches, std::array<int, 3> grid) const;

  // The linears (names without prefix, e.g. "blocks.3.attn.qkv", "merger.mlp.0", "patch_embed.proj"),
  // for quantizing them (the patch embedding is listed but never a quantization target by default).
  std::vector<std::string> linear_names() const;
  const fwd::LinearWeights& linear(const std::string& name) const;
  void replace_linear(const std::string& name, std::unique_ptr<fwd::LinearWeights> w);
  uint64_t weight_bytes() const;
  // Loaded from a quantized checkpoint whose ViT linears are stored quantized (`quantize --vit`): a
  // summary in quantize_linears_rtn_int4's words ("int4 g64 x18, 4 kept dense (...)"); else empty.
  const std::string& stored_quantization() const;

  struct Impl;

 private:
  explicit Vit(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Opt-in 4-bit ViT: every linear but the patch embedding becomes round-to-nearest asymmetric INT4 (bf16
// scales) run by the fused 4-bit kernels, group 64 (or 48 / 32 / 16, the largest dividing the input
// width). Linears whose input width is not a multiple of 16 stay dense: the kernels' step (Lance's
// down_proj, input 3420). One quantizer for both places it runs: at load (quantize_linears_rtn_int4,
// `eval --vit-quant int4`) and into a checkpoint (`quantize --vit`, pipeline/vit_quantize.h), so a
// checkpoint's ViT loads bit for bit as the load-time one on the same weights.
//
// The number format of linear `name` (without prefix) of input width `in`; nullopt when it stays dense.
std::optional<quant::QuantParams> rtn_int4_params(const std::string& name, int64_t in);
// W [out][in] (f32) -> the QTensor both paths use (quant::quantize with those parameters).
quant::QTensor rtn_int4_quantize(const float* w, int64_t out, int64_t in, const quant::QuantParams& p);
// "int4 g64 x126, 32 kept dense (input width not a multiple of 16), 4 kept dense (--keep)" from the
// per-group counts, the linears too narrow for the kernels and those the user kept.
std::string rtn_int4_summary(const std::map<int64_t, int>& groups, int kept_width, int kept_chosen = 0);
// Replaces the linears in `v` (at load time), but those `keep` (name without prefix) selects. Throws when
// a linear is already quantized (a ViT loaded from a checkpoint that `quantize --vit` wrote). Returns the summary.
std::string quantize_linears_rtn_int4(Vit& v, const std::function<bool(const std::string&)>& keep = {});

}  // namespace lq::vit
