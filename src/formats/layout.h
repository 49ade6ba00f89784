// Internal: the table row that describes one on-disk layout. The writer and the reader are generic
// over these rows; a new layout is a new row (format_table.cpp), not a new code path.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "formats/checkpoint.h"

namespace lq::formats::detail {

using Bytes = std::vector<uint8_t>;

// One stored tensor of a quantized linear: `<base><suffix>`.
struct PartDecl {
  std::string suffix;
  io::DType dtype;
  std::vector<int64_t> shape;
};

struct Layout {
  FormatId id;
  const char* name;
  bool (*supports)(quant::Scheme);
  // The config records one number format for the whole checkpoint (no per-linear formats).
  bool one_format;
  // Safetensors file name inside the directory, from the plan's schemes (lance-quant-v1 names its file
  // after them).
  const char* (*weights_file)(const std::vector<PlanEntry>&);
  io::DType bias_dtype;                        // `<base>.bias`
  // Throws lq::Error naming the linear when the layout cannot store it.
  void (*check)(const LinearDecl&);
  // Stored tensors of a quantized linear, in write order (bias excluded: handled generically).
  std::vector<PartDecl> (*parts)(const LinearDecl&);
  // Bytes of each part, same order as parts(). Throws when a value is not exactly storable.
  std::vector<Bytes> (*pack)(const LinearDecl&, const quant::QTensor&);
  // Config / meta files: (file name, content), written by finish().
  std::vector<std::pair<std::string, nlohmann::json>> (*configs)(const std::vector<PlanEntry>&, const WriterOptions&);
  // Reading: is `dir` this layout? what quantization info does it carry?
  bool (*detect)(const std::string& dir);
  nlohmann::json (*load_config)(const std::string& dir);
  const char* marker;  // suffix present exactly once per quantized linear (e.g. ".qweight")
  LinearDecl (*describe)(const io::SafetensorsFile&, const nlohmann::json& config, const std::string& base);
  quant::QTensor (*unpack)(const io::SafetensorsFile&, const LinearDecl&);
};

const Layout& layout_of(FormatId f);
const std::vector<const Layout*>& all_layouts();

}  // namespace lq::formats::detail
