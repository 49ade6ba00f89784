// Quantized linears in the forward engine, and loading quantized checkpoints without ever building
// a full-precision copy of a quantized weight.
//
//   QuantLinear          fwd::LinearWeights over kernels::Q4Matrix (INT4 asym / sym, NVFP4), bias fused
//   Q8Linear             the same over kernels::Q8Matrix (INT8)
//   make_quant_linear    QTensor -> LinearWeights
//   is_quantized_checkpoint / load_quantized
//                        any directory formats::CheckpointReader reads (lance-quant-v1, autoawq,
//                        compressed-tensors, modelopt) plus its config (llm_config.json / config.json,
//                        lance_config.json, copied there by `lance-quant quantize`). Engine::load calls
//                        load_quantized by itself when it sees such a directory.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "forward/forward.h"
#include "kernels/q4.h"
#include "kernels/q8.h"
#include "quant/qtensor.h"

namespace lq::fwd {

class QuantLinear final : public LinearWeights {
 public:
  // `bias` empty or out_features() floats.
  QuantLinear(kernels::Q4Matrix w, std::vector<float> bias);
  int64_t in_features() const override { return w_.cols; }
  int64_t out_features() const override { return w_.rows; }
  void apply(const float* x, int64_t n, float* y) const override;
  uint64_t weight_bytes() const override { return w_.weight_bytes() + bias_.size() * sizeof(float); }
  const kernels::Q4Matrix& matrix() const { return w_; }

 private:
  kernels::Q4Matrix w_;
  std::vector<float> bias_;
};

// fwd::LinearWeights over kernels::Q8Matrix (INT8 with groups of 64k inputs), bias fused.
class Q8Linear final : public LinearWeights {
 public:
  Q8Linear(kernels::Q8Matrix w, std::vector<float> bias);
  int64_t in_features() const override { return w_.cols; }
  int64_t out_features() const override { return w_.rows; }
  void apply(const float* x, int64_t n, float* y) const override;
  uint64_t weight_bytes() const override { return w_.weight_bytes() + bias_.size() * sizeof(float); }

 private:
  kernels::Q8Matrix w_;
  std::vector<float> bias_;
};

// The kernel form of a canonical quantized tensor (`where` names it in errors). INT4 (asym / sym)
// and NVFP4 become a QuantLinear; INT8 a Q8Linear when its group is a multiple of 64 dividing
// in_features, else a bf16 DenseLinear.
std::unique_ptr<LinearWeights> make_quant_linear(const quant::QTensor& qt, std::vector<float> bias,
                                                 const std::string& where);

// True when `dir` is a quantized checkpoint formats::detect_format recognises.
bool is_quantized_checkpoint(const std::string& dir);

// Engine over a quantized checkpoint: quantized linears run through make_quant_linear, every other
// tensor loads as in Engine::load (norms f32, embeddings / heads in opts.storage). Throws naming
// the directory when a target linear is neither quantized nor stored as a plain weight.
Engine load_quantized(const std::string& dir, const LoadOptions& opts = {});

}  // namespace lq::fwd
