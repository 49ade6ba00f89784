// Internal interface between the streaming driver (quantize.cpp) and the per-layer searches (AWQ on
// the native forward, statistics proxy, legacy). The driver owns I/O and writing; a search only sees
// one decoder layer's tensors as f32 and may fold scales into them.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/spec.h"
#include "quant/qtensor.h"
#include "quant/quantizer.h"

namespace lq::pipeline {

// Every tensor of one decoder layer (weights, biases, norms) as f32, by full tensor name.
using LayerTensors = std::map<std::string, std::vector<float>>;

// What a search decided for one target linear (by base name).
struct LinearPlan {
  std::vector<float> clip;          // [out][in/group] clip ratios; empty = none
  std::vector<float> input_scale;   // s of a norm fold (the linear's input is divided by s); empty = none
  // Multipliers the folds applied to the weight's columns [in] / rows [out] (empty = all 1): the
  // effective full-basis weight is W' / (row_scale x col_scale) (evaluation, --dense-out).
  std::vector<float> col_scale, row_scale;
  double alpha = -1;
  bool identity = false;
  double output_rel_error = -1;
  // Set by searches that round the weights themselves (GPTQ): the driver writes this tensor instead
  // of quantizing the folded weight.
  std::shared_ptr<const quant::QTensor> qtensor;
  double gptq_damp = -1;     // damping fraction GPTQ used (-1: not GPTQ)
  int64_t gptq_rows = 0;     // calibration rows its H came from
};
using LayerPlans = std::map<std::string, LinearPlan>;

class LayerSearch {
 public:
  virtual ~LayerSearch() = default;
  // Folds scales into `t` (norms, previous linears, targets) and fills `plans`. `quantized` tells which
  // target linears will be quantized (kept ones are left alone).
  virtual void search(int layer, LayerTensors& t, const std::map<std::string, bool>& quantized, LayerPlans& plans) = 0;
  // The layer's weights as the checkpoint will hold them (dequantized targets, folded tensors); the
  // forward-based search runs them to produce the next layer's inputs.
  virtual void layer_done(int layer, const LayerTensors& final_weights, const LayerPlans& plans) {}
  // True when the search had calibration data for this linear (its path's activations, or its
  // statistics); false means it was quantized without a search (a partial calibration).
  virtual bool calibrated(const model::LinearSpec& linear) const = 0;
};

// Column-wise input scaling W[:, c] *= s[index(c)] and the matching fold into the previous op.
// `index` maps a target channel to its scale (identity unless GQA v->o).
void scale_columns(float* w, int64_t out, int64_t in, const std::vector<float>& s, const model::FusionPair& f);
void divide_rows(float* w, int64_t in, const std::vector<float>& s, float* bias /* may be null */);
void divide_vector(float* v, const std::vector<float>& s);
// Applies fold `f` with scales `s` to the layer tensors and records the multipliers in `plans`.
void apply_fold(const model::ModelSpec& spec, const model::FusionPair& f, const std::vector<float>& s, LayerTensors& t,
                LayerPlans& plans);

}  // namespace lq::pipeline
