// `lance-quant quantize --vit`: the vision tower's linears written 4-bit into the output checkpoint.
//
//   source   the ViT of --vit-dir DIR (vit.safetensors + config.json) or the model's own vit_model.*
//            tensors (Lance_3B_Video), located and strictly checked before any slow work
//   number   vit::rtn_int4_params / vit::rtn_int4_quantize, the quantizer `eval --vit-quant int4` runs
//            at load: RTN asymmetric INT4, bf16 scales, group 64 (48 / 32 / 16 when 64 does not divide
//            the input width); the patch embedding and linears whose input width is not a multiple of
//            16 (Lance's down_proj, 3420) stay dense, in --keep-dtype
//   layout   the checkpoint's own per-linear layout, under the `vit_model.` prefix of its weights file
//            (lance-quant-v1: vit_model.blocks.0.attn.qkv.{qweight,scales,zeros,bias}, per_weight
//            entries in awq_meta.json), as Lance_3B_Video keeps its ViT; the vision config goes into
//            llm_config.json's "vision_config" when the model's has none
//   memory   one linear at a time, read from the memory map and released once written
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "io/safetensors.h"
#include "model/spec.h"
#include "quant/quantizer.h"
#include "vit/vit_config.h"

namespace lq::pipeline {

inline constexpr const char* kVitPrefix = "vit_model.";
// --keep / --override PATTERN=keep patterns that begin with "vit_model." select ViT linears (and only they do).
inline bool is_vit_pattern(const std::string& pattern) { return pattern.rfind(kVitPrefix, 0) == 0; }

struct VitQuantPlan {
  vit::VitLocation source;
  std::unique_ptr<io::TensorStore> store;           // the source weights (memory map)
  std::vector<formats::PlanEntry> entries;          // output names (vit_model.*), in vit::vit_tensors order
  std::map<std::string, quant::QuantParams> params;  // output base -> number format of quantized linears
  nlohmann::json kept_dense = nlohmann::json::array();  // [{name, reason}]
  int kept_narrow = 0, kept_chosen = 0;             // kept linears: too narrow for the kernels / by --keep
  std::map<int64_t, int> groups;                   // group size -> quantized linears
  bool source_is_model = false;                    // the model's own vit_model.* (else --vit-dir)
  uint64_t source_bytes = 0;                        // the ViT's tensors as stored in the source
};

// Locates the ViT (`vit_dir` when given, else `model_dir`'s vit_model.*), checks every tensor and plans
// the output entries. `kept_dtype` is the dtype of tensors written as they are; linears whose output name
// (vit_model.blocks.0.attn.qkv) matches a `keep` pattern (pipeline::matches_pattern) stay dense too. Throws
// lq::Error naming the input when there is no ViT, when both hold one, when the source is already
// quantized, when a tensor is missing or mis-shaped, or when a `keep` pattern matches no ViT linear.
VitQuantPlan plan_vit_quantization(const std::string& model_dir, const std::string& vit_dir, const model::ModelSpec& spec,
                                   io::DType kept_dtype, const std::vector<std::string>& keep = {});

// What one ViT linear became (weight error of the dequantized codes vs the source).
struct VitLinearReport {
  std::string name, format;
  double weight_rel_error = 0;
};

// Writes `entry` (one of plan.entries, in order): a quantized linear (read, quantized, written, pages
// released) or a tensor as it is (in row chunks). Non-finite source values are an error naming them.
void write_vit_entry(const VitQuantPlan& plan, const formats::PlanEntry& entry, formats::CheckpointWriter& writer,
                     std::vector<VitLinearReport>& report);

// The record of the ViT's quantization (quantize --json "vit", awq_meta.json / lance-quant.json "vit"):
// scheme, number format, scale dtype, groups, kept-dense list, source, summary. `linears` adds the
// per-linear entries (--json only).
nlohmann::json vit_quantization_json(const VitQuantPlan& plan, const std::vector<VitLinearReport>* linears = nullptr);

// The output's llm_config.json gets the ViT's "vision_config" when it has none (a --vit-dir source).
void record_vision_config(const VitQuantPlan& plan, const std::string& out_dir);

}  // namespace lq::pipeline
