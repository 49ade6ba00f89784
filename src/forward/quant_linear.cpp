#include "forward/quant_linear.h"

#include <utility>

#include "formats/checkpoint.h"
#include "io/error.h"
#include "io/safetensors.h"
#include "num/formats.h"

namespace lq::fwd {

QuantLinear::QuantLinear(kernels::Q4Matrix w, std::vector<float> bias) : w_(std::move(w)), bias_(std::move(bias)) {
  if (!bias_.empty() && int64_t(bias_.size()) != w_.rows)
    fail("QuantLinear", "bias has " + std::to_string(bias_.size()) + " entries, weight has " +
                            std::to_string(w_.rows) + " rows");
}

void QuantLinear::apply(const float* x, int64_t n, float* y) const {
  kernels::q4_linear(x, n, w_, bias_.empty() ? nullptr : bias_.data(), y);
}

Q8Linear::Q8Linear(kernels::Q8Matrix w, std::vector<float> bias) : w_(std::move(w)), bias_(std::move(bias)) {
  if (!bias_.empty() && int64_t(bias_.size()) != w_.rows)
    fail("Q8Linear", "bias has " + std::to_string(bias_.size()) + " entries, weight has " + std::to_string(w_.rows) + " rows");
}

void Q8Linear::apply(const float* x, int64_t n, float* y) const {
  kernels::q8_linear(x, n, w_, bias_.empty() ? nullptr : bias_.data(), y);
}

namespace {

// INT8 without a fused-kernel shape: the dequantized values rounded to bf16 (half the f32 size).
std::unique_ptr<LinearWeights> bf16_fallback(const quant::QTensor& qt, std::vector<float> bias) {
  std::vector<uint8_t> storage(size_t(qt.numel()) * sizeof(uint16_t));
  auto* dst = reinterpret_cast<uint16_t*>(storage.data());
  std::vector<float> row(size_t(qt.in));
  for (int64_t r = 0; r < qt.out; ++r) {
    qt.dequantize_rows(r, r + 1, row.data());
    num::f32_to_bf16(row.data(), dst + r * qt.in, size_t(qt.in));
  }
  kernels::DenseMatrix m{kernels::WeightType::BF16, qt.out, qt.in, storage.data()};
  return std::make_unique<DenseLinear>(m, std::move(storage), std::move(bias));
}

}  // namespace

std::unique_ptr<LinearWeights> make_quant_linear(const quant::QTensor& qt, std::vector<float> bias,
                                                 const std::string& where) {
  qt.validate(where);
  switch (qt.scheme) {
    case quant::Scheme::Int4Asym:
    case quant::Scheme::Int4Sym:  // zeros hold the fixed zero point 8
      return std::make_unique<QuantLinear>(kernels::pack_int4(qt.out, qt.in, qt.group, qt.codes.data(),
                                                              qt.scales.data(), qt.zeros.data(), where.c_str()),
                                           std::move(bias));
    case quant::Scheme::NvFp4:
      return std::make_unique<QuantLinear>(kernels::pack_nvfp4(qt.out, qt.in, qt.codes.data(), qt.block_scales.data(),
                                                               qt.tensor_scale, where.c_str()),
                                           std::move(bias));
    case quant::Scheme::Int8Sym:
      if (qt.group % 64 == 0 && qt.in % qt.group == 0)
        return std::make_unique<Q8Linear>(kernels::pack_int8(qt.out, qt.in, qt.group, qt.codes.data(), qt.scales.data(),
                                                             where.c_str()),
                                          std::move(bias));
      return bf16_fallback(qt, std::move(bias));
  }
  fail(where, "unsupported quantization scheme");
}

bool is_quantized_checkpoint(const std::string& dir) {
  try {
    formats::detect_format(dir);
    return true;
  } catch (const Error&) {
    return false;  // not one of the quantized layouts: a plain model directory
  }
}

namespace {

// Every target linear of the model map is either a quantized linear of matching shape or a plain
// weight; every quantized linear belongs to the map. One error listing all problems.
void check_coverage(const model::ModelSpec& spec, const formats::CheckpointReader& r, const std::string& dir) {
  std::string problems;
  for (const auto& d : r.quantized_linears()) {
    if (d.base.rfind("vit_model.", 0) == 0) continue;  // the ViT's linears (quantize --vit): vit::Vit::load checks them
    const model::LinearSpec* ls = spec.find_linear(d.base);
    if (!ls)
      problems += "\n  quantized " + d.base + " is not a target linear of this model";
    else if (ls->out != d.out || ls->in != d.in)
      problems += "\n  " + d.base + " is [" + std::to_string(d.out) + ", " + std::to_string(d.in) + "], expected [" +
                  std::to_string(ls->out) + ", " + std::to_string(ls->in) + "]";
  }
  for (const auto& ls : spec.linears)
    if (!r.is_quantized(ls.name) && !r.file().has(ls.weight_name()))
      problems += "\n  " + ls.name + " is neither quantized nor stored as " + ls.weight_name();
  if (!problems.empty()) fail(dir, "quantized checkpoint does not match its config:" + problems);
}

// Releases the mapped pages of a linear's stored parts once its kernel layout is built.
void drop_parts(const io::SafetensorsFile& f, const std::string& base) {
  const std::string prefix = base + ".";
  for (const auto& t : f.tensors())
    if (t.name.compare(0, prefix.size(), prefix) == 0) f.drop(t);
}

}  // namespace

Engine load_quantized(const std::string& dir, const LoadOptions& opts) {
  auto reader = std::make_shared<const formats::CheckpointReader>(dir);
  const model::ModelConfig config = model::load_config(dir);
  std::vector<std::string> names;
  for (const auto& t : reader->file().tensors()) names.push_back(t.name);
  model::check_layer_count(config, names, dir);  // before the config sizes anything
  const model::ModelSpec spec = model::expected_spec(config, model::Arch::LanceMoT);
  check_coverage(spec, *reader, dir);
  LoadOptions o = opts;
  o.weights_file = reader->file().path();
  o.linear_factory = [reader](const model::LinearSpec& ls) -> std::unique_ptr<LinearWeights> {
    if (!reader->is_quantized(ls.name)) return nullptr;
    std::optional<std::vector<float>> bias = reader->read_bias(ls.name);
    auto w = make_quant_linear(reader->read_quantized(ls.name), bias ? std::move(*bias) : std::vector<float>{}, ls.name);
    drop_parts(reader->file(), ls.name);
    return w;
  };
  return Engine::load(dir, o);
}

}  // namespace lq::fwd
