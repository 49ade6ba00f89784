// Synthetic ViT directories (vit.safetensors + config.json, Lance_3B's layout) with exact names and
// shapes and deterministic random weights (model::TensorSynth's recipe: linear weights z / sqrt(in) with
// heavy-tailed input columns, biases 0.05 z, norm weights 1 + 0.1 z), streamed to disk (any size in a
// few MB of memory). Random weights exercise the plumbing only: the features mean nothing.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "vit/vit_config.h"

namespace lq::vit {

struct VitPreset {
  std::string name, summary;
  VitConfig config;
};
const std::vector<VitPreset>& vit_presets();  // "qwen2.5-vl" (Lance's shapes), "small"
const VitPreset& find_vit_preset(const std::string& name);

struct VitSynthOptions {
  std::string preset = "small";
  std::string out_dir;
  io::DType dtype = io::DType::F32;
  uint64_t seed = 0;
  int out_hidden = 0;  // 0: the preset's; else the LLM's hidden size the merger must produce
  bool force = false;  // replace vit.safetensors / config.json in a non-empty directory
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct VitSynthResult {
  VitConfig config;
  int num_tensors = 0;
  uint64_t bytes = 0;
};

VitSynthResult synthesize_vit(const VitSynthOptions& o);

}  // namespace lq::vit
