// Internal: the per-layer searches the driver can run (see layer_search.h).
#pragma once
#include <memory>

#include "pipeline/layer_search.h"
#include "pipeline/quantize.h"

namespace lq::pipeline {

// AWQ on real activations through the native forward (awq-int4, awq-nvfp4). Runs the calibration
// inputs up to the first layer on construction and fills the report's calibration counts.
// Each linear is fake-quantized with formats.params_for(its name), the parameters that write it.
std::unique_ptr<LayerSearch> make_forward_awq(const QuantizeOptions& o, const model::ModelSpec& spec,
                                              const LinearFormats& formats, QuantizeReport& report);
// Statistics-only searches (awq-proxy, legacy-awq). Loads and validates --stats.
std::unique_ptr<LayerSearch> make_stats_search(const QuantizeOptions& o, const model::ModelSpec& spec,
                                               const LinearFormats& formats);
// The original toolkit's INT4: codes chosen against f32 scales, scales stored rounded to bf16.
quant::QTensor legacy_quantize(const float* w, int64_t out, int64_t in, const quant::QuantParams& p);

}  // namespace lq::pipeline
