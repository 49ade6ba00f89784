// Exports of a model's understanding ("und") path to formats the wider ecosystem runs, as one
// standard decoder architecture that keeps everything Lance's und path computes: per-head q/k
// RMSNorm, q/k/v biases, an untied lm_head, NEOX (half-split) RoPE. Text positions have
// p_t = p_h = p_w, so Lance's M-RoPE is exactly 1-D RoPE there (docs/exports.md has the evidence).
//
//   gguf  llama.cpp architecture "qwen3" (q/k norm required; q/k/v biases loaded when present;
//         separate `output.weight`), tokenizer "gpt2" with pre-tokenizer "qwen2".
//   mlx   mlx-lm model_type "glm4_moe" with every layer dense (first_k_dense_replace = layers):
//         the one mlx-lm decoder with attention_bias + use_qk_norm + an untied lm_head.
//         Integer-quantized sources map losslessly to MLX affine: w = scale * q + bias with
//         bias = -scale * zero, scales/biases stored as f32 (exact).
//   hf    Hugging Face "qwen3" safetensors + config.json with attention_bias = true.
//
// MODEL is a dense checkpoint directory or a quantized one (formats/checkpoint.h); a quantized
// source exports its stored (AWQ-folded) weights, dequantized for gguf/hf.
#pragma once
#include <string>
#include <vector>

#include "export/ggml_types.h"

namespace lq::exporter {

enum class ExportTarget { Gguf, Mlx, Hf };
ExportTarget parse_export_target(const std::string& name, const std::string& where);

struct ExportOptions {
  ExportTarget target = ExportTarget::Gguf;
  // gguf: type of the layer linears and lm_head (the embedding is f16 unless f32; norms and biases
  // f32). mlx/hf: f32 or f16 for dense tensors. Unset = f16 for gguf, f32 otherwise.
  std::string type;
  std::string base_dir;  // config + tokenizer when MODEL (a quantized checkpoint) lacks them
  std::string out_dir;   // written as OUT.lq-partial-PID, renamed at the end (io/output.h)
  bool force = false;    // replace an existing OUT that lance-quant wrote
  std::string name;      // model name recorded in the files (gguf general.name); default: OUT's name
};

struct ExportResult {
  std::string architecture;        // "qwen3", "glm4_moe", ...
  std::vector<std::string> files;  // written, inside out_dir
  int tensors = 0;
  bool from_quantized = false;
};

ExportResult export_und(const std::string& model_dir, const ExportOptions& options);

}  // namespace lq::exporter
