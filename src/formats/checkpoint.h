// Quantized checkpoint writers and readers, one per on-disk layout (docs: shared/docs/formats.md).
//
//   lance-quant-v1      the original Python toolkit: awq_state_dict.safetensors + awq_meta.json (INT4),
//                       nvfp4_state_dict.safetensors + nvfp4_meta.json (NVFP4)
//   autoawq             AutoAWQ GEMM (HF quant_method "awq"): model.safetensors + config.json
//   compressed-tensors  pack-quantized (INT4/INT8) or nvfp4-pack-quantized: model.safetensors + config.json
//   modelopt            NVIDIA ModelOpt NVFP4: model.safetensors + hf_quant_config.json (+ config.json)
//
// The layouts differ only in a table row (format_table.cpp): tensor names and dtypes per quantized
// linear, pack / unpack functions, config content, detection. Writing streams: every tensor is
// declared up front (the plan), then written in plan order, one linear at a time; finish() writes
// the configs and renames the temporary files into place. Tensors keep the names they are given
// (name mapping to other ecosystems is the caller's policy); lm_head stays a separate tensor.
// Linears may have different number formats (INT4 with different groups, INT8, NVFP4) where the
// layout can say so per tensor: lance-quant-v1 (per_weight entries of the meta) and compressed-tensors
// (one config group per format). autoawq (one w_bit / group_size) and modelopt (NVFP4 only) hold one
// format. Everything else passes through as bf16 (or f32).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <functional>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "io/safetensors.h"
#include "quant/qtensor.h"

namespace lq::formats {

enum class FormatId { LanceQuantV1, AutoAwq, CompressedTensors, ModelOpt };
const char* format_name(FormatId f);  // "lance-quant-v1", "autoawq", "compressed-tensors", "modelopt"
FormatId parse_format(const std::string& name, const std::string& where);
bool format_supports(FormatId f, quant::Scheme s);

// A quantized linear `<base>` (e.g. language_model.model.layers.3.self_attn.q_proj).
struct LinearDecl {
  std::string base;
  quant::Scheme scheme = quant::Scheme::Int4Asym;
  int64_t out = 0, in = 0, group = 128;  // group 16 for NVFP4
  quant::ScaleDType scale_dtype = quant::ScaleDType::BF16;
  bool has_bias = false;
};
// A tensor written as is (converted to `dtype`: BF16 or F32).
struct PlainDecl {
  std::string name;
  std::vector<int64_t> shape;
  io::DType dtype = io::DType::BF16;
};
using PlanEntry = std::variant<LinearDecl, PlainDecl>;

struct WriterOptions {
  // The source model's config.json; HF-style formats write it back with a quantization_config.
  nlohmann::json model_config = nlohmann::json::object();
  // Merged into the lance-quant-v1 meta (e.g. {"tasks_calibrated": [...], "scheme": "awq"}).
  nlohmann::json extra_meta = nlohmann::json::object();
  std::string method = "rtn";  // recorded in metas / configs: "rtn", "awq", ...
  // Per quantized linear (base name), when it differs from `method` (e.g. "rtn" for the linears of a
  // path a partial calibration left uncalibrated): lance-quant-v1 records it in per_weight.
  std::map<std::string, std::string> linear_methods;
};

// Throws lq::Error naming the format and the linears when `format` cannot hold `plan` (a scheme it
// cannot store, a shape it cannot pack, or different number formats in a one-format layout). The
// writer runs it too; callers run it first to refuse before any slow work.
void check_plan(FormatId format, const std::vector<PlanEntry>& plan);

class CheckpointWriter {
 public:
  // Creates `dir` if needed and declares every tensor of `plan` (in order). Throws lq::Error when
  // the format cannot hold a linear (scheme, shape, mixed schemes).
  CheckpointWriter(std::string dir, FormatId format, std::vector<PlanEntry> plan, WriterOptions options = {});
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Must be called in plan order. `bias` has `out` floats when the linear was declared with one.
  void write_quantized(const std::string& base, const quant::QTensor& qt, const float* bias = nullptr);
  void write_plain(const std::string& name, const float* data);
  void write_plain_bf16(const std::string& name, const uint16_t* data);
  // The same, reading rows [b, e) through `fill` a bounded chunk at a time, so a large tensor
  // (embeddings, lm_head: 1.2 GB in f32 at Lance's size) never sits in memory whole.
  using RowSource = std::function<void(int64_t row_begin, int64_t row_end, float* out)>;
  void write_plain_rows(const std::string& name, const RowSource& fill);
  // Updates what finish() records (per-linear methods, extra meta), for facts known only once the
  // linears are quantized.
  void set_linear_method(const std::string& base, const std::string& method);
  void merge_extra_meta(const nlohmann::json& extra);
  // Writes configs / metas, renames every file into place. Nothing appears before this.
  void finish();

  const std::string& weights_path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Recognises a checkpoint directory by its files; throws lq::Error naming the directory otherwise.
FormatId detect_format(const std::string& dir);

class CheckpointReader {
 public:
  explicit CheckpointReader(const std::string& dir);  // auto-detects the format
  ~CheckpointReader();
  FormatId format() const;
  const std::vector<LinearDecl>& quantized_linears() const;  // in file order
  bool is_quantized(const std::string& base) const;
  quant::QTensor read_quantized(const std::string& base) const;  // canonical form
  std::optional<std::vector<float>> read_bias(const std::string& base) const;
  std::vector<std::string> plain_names() const;                  // tensors outside quantized linears
  std::vector<float> read_plain(const std::string& name) const;  // as f32
  const io::SafetensorsFile& file() const;
  const nlohmann::json& config() const;  // the meta / quantization config that was read

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lq::formats
