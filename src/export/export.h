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
#include <map>
#include <string>
#include <vector>

#include "export/ggml_types.h"

namespace lq::exporter {

enum class ExportTarget { Gguf, Mlx, Hf };
ExportTarget parse_export_target(const std::string& name, const std::string& where);

struct ExportOptions {
  ExportTarget target = ExportTarget::Gguf;
  // gguf: a llama.cpp file type (export/type_mix.h: f16, q8_0, q4_0, q4_1, q4_k_s, q4_k_m, q5_k_m,
  // q6_k, iq4_xs, ...): the per-tensor types follow llama-quantize's mix for it (output head Q6_K, ...)
  // unless `pure`; norms and biases stay f32. mlx/hf: f32 or f16 for dense tensors. Unset = f16 for
  // gguf, f32 otherwise.
  std::string type;
  bool pure = false;
  // gguf: calibration statistics (`calibrate`'s file) of MODEL: the mean x^2 of every input column of
  // each und linear weights the quantized types' scale searches, as llama.cpp's importance matrix does.
  std::string stats_path;
  // gguf: GPTQ codes for the und linears (export/ggml_gptq.h), with the X^T X that stats_path carries
  // (`calibrate --hessian`); gptq_damp is the damping relative to H's mean diagonal.
  bool gptq = false;
  double gptq_damp = 0.01;
  // gguf from a quantized checkpoint whose grid no ggml type holds exactly: the dense original to
  // quantize instead (with stats_path's statistics, which must be the original's).
  std::string original_dir;
  std::string base_dir;  // config + tokenizer when MODEL (a quantized checkpoint) lacks them
  std::string out_dir;   // written as OUT.lq-partial-PID, renamed at the end (io/output.h)
  bool force = false;    // replace an existing OUT that lance-quant wrote
  std::string name;      // model name recorded in the files (gguf general.name); default: OUT's name
};

struct ExportedTensor {
  std::string name;
  std::string type;        // ggml type name
  int64_t elements = 0;
  uint64_t bytes = 0;
  bool layer_linear = false;  // blk.N.attn_* / ffn_* weight
  bool importance = false;    // quantized with calibration statistics
  bool exact = false;         // copied from a quantized source without re-rounding
  bool gptq = false;          // codes chosen by GPTQ with the calibration X^T X
};

struct ExportResult {
  std::string architecture;        // "qwen3", "glm4_moe", ...
  std::vector<std::string> files;  // written, inside out_dir
  int tensors = 0;
  bool from_quantized = false;
  // gguf only
  std::string file_type;               // "Q4_K_M"
  std::vector<ExportedTensor> tensor_report;
  std::string note;                    // how a quantized source was handled, when it was; a ViT left out
  std::string vit_not_exported;        // non-empty when the source carries a ViT (vit_model.*): what was left out
  // Bits per weight as llama.cpp counts them: tensor bytes * 8 / elements, over the layer linears and
  // over every tensor (what llama.cpp's loader prints as "file size = ... (N BPW)").
  double linear_bpw = 0, file_bpw = 0;
};

ExportResult export_und(const std::string& model_dir, const ExportOptions& options);

// The way back, so that one evaluator measures both sides: a GGUF of the und path (ours, or
// llama-quantize's re-quantization of ours) read into a dense f32 checkpoint of BASE: every tensor of
// BASE, the und-path ones (embedding, layer linears, biases, norms, output head) replaced by the GGUF's,
// dequantized with our decoders (export/ggml_types.h). Throws naming the tensor when the GGUF does not
// match BASE (missing tensor, other shape, unsupported type).
struct ImportResult {
  int replaced = 0;
  std::map<std::string, int> types;  // ggml type name -> tensors
  double linear_bpw = 0, file_bpw = 0;  // as ExportResult
};
ImportResult import_gguf_und(const std::string& gguf_path, const std::string& base_dir, const std::string& out_dir,
                             bool force = false);  // --force: replace an OUT that lance-quant wrote

}  // namespace lq::exporter
