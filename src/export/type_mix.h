// llama.cpp's file types ("ftype", `llama-quantize`'s type names) and the per-tensor type each one gives
// the tensors of a dense decoder file (llama.cpp src/llama-quant.cpp, llama_tensor_get_type: the output
// head in Q6_K, attn_v / ffn_down of chosen layers in Q5_K / Q6_K, ...), so that our exports carry the
// same mix, byte for byte the same sizes, as `llama-quantize` writes. Only the rules that reach a dense,
// expert-free, non-Falcon model with separate q/k/v are implemented; every rule is listed in
// docs/exports.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "export/ggml_types.h"

namespace lq::exporter {

enum class TensorCategory { TokenEmbd, Output, AttnQ, AttnK, AttnV, AttnOutput, FfnGate, FfnUp, FfnDown, Other };

struct FileType {
  std::string name;       // as llama-quantize prints it: "Q4_K_M"
  uint32_t llama_ftype;   // llama_ftype (general.file_type)
  GgmlType base;          // the default tensor type
};

// Parses "f32", "f16", "q8_0", "q4_0", "q4_1", "q4_k_s", "q4_k_m", "q4_k" (= Q4_K_M, as llama-quantize),
// "q5_k_s", "q5_k_m", "q5_k" (= Q5_K_M), "q6_k", "iq4_nl", "iq4_xs" (case-insensitive); throws naming `where`.
FileType parse_file_type(const std::string& name, const std::string& where);

struct MixContext {
  int n_layer = 0;
  int n_head = 0, n_head_kv = 0;
  bool has_importance = false;  // llama.cpp's qs.has_imatrix
  bool pure = false;            // llama-quantize --pure: every quantizable tensor in the base type
};

struct MixTensor {
  std::string name;
  TensorCategory category = TensorCategory::Other;
  int layer = -1;
  int64_t ncols = 0;  // the row length (ggml ne[0])
};

// The type of every tensor, in file order (attn_v's counter follows file order, as llama.cpp's does).
// Tensors of category Other (norms, biases) are never quantized: F32. Throws naming the tensor when a
// row length fits neither the chosen type nor a fallback this exporter writes.
std::vector<GgmlType> choose_types(const FileType& ft, const std::vector<MixTensor>& tensors, const MixContext& ctx);

}  // namespace lq::exporter
