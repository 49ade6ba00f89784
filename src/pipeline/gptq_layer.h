// Internal: GPTQ of one decoder layer inside the layer-streaming pipeline (gptq-*, awq-gptq-*).
//
// The layer's target linears are rounded in four steps, the order of the forward: [q,k,v], [o],
// [gate,up], [down]. For each step the layer runs over the cached calibration rows with an observer
// that accumulates H = 2 X^T X / n per (path, input) from exactly the rows routed to that path (q/k/v
// share one H per path, gate/up another); then each linear of the step is GPTQ-rounded with its own
// number format. Sequential ("true sequential"): every finished step's dequantized weights replace its
// linears in the engine before the next step runs, so o_proj sees the quantized q/k/v's attention,
// down_proj the quantized MLP input, and so on; otherwise every H comes from the full-precision layer.
// Memory: one step's H matrices at a time (both paths together while they fit in 512 MB, one path per
// pass otherwise: down_proj at Lance's size is 11008^2 floats = 0.48 GB per path).
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "forward/forward.h"
#include "pipeline/layer_search.h"
#include "pipeline/quantize.h"
#include "quant/gptq.h"

namespace lq::pipeline {

struct GptqLayerInputs {
  fwd::Engine& engine;
  const model::ModelSpec& spec;
  const LinearFormats& formats;
  const std::vector<fwd::Chunk>& samples;          // routing, positions, splits
  const std::vector<std::vector<float>>& states;   // residual stream entering the layer, per sample
};

// For each step of the layer, and each path with a `wanted` linear in it: runs the layer on the
// engine's CURRENT weights over the samples, accumulating H of that step's input, then calls
// visit(wanted linears of the step and path, H (2 X^T X / rows, may be consumed), rows). The visitor
// may replace linears in the engine; the next step's H sees them.
using HessianVisitor =
    std::function<void(const std::vector<const model::LinearSpec*>& targets, std::vector<float>& h, int64_t rows)>;
void visit_layer_hessians(int layer, const GptqLayerInputs& in, const std::function<bool(const model::LinearSpec&)>& wanted,
                          const HessianVisitor& visit);

// Rounds every quantized target of `layer` (weights in `t`, already folded; norm folds recorded as
// plans[name].input_scale) and stores the QTensors in plans[name].qtensor. On return the engine runs
// the layer's linears from the full-precision folded weights in `t` (not sequential) or from the
// dequantized GPTQ weights (sequential); `t` must outlive that use.
void gptq_layer(int layer, const GptqLayerInputs& in, const LayerTensors& t, const std::map<std::string, bool>& quantized,
                const GptqSettings& settings, bool sequential, LayerPlans& plans);

}  // namespace lq::pipeline
