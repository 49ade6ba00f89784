// Internal: the per-layer searches the driver can run (see layer_search.h).
#pragma once
#include <memory>
#include <vector>

#include "forward/forward.h"

#include "pipeline/layer_search.h"
#include "pipeline/quantize.h"

namespace lq::pipeline {

// The cached calibration rows of the forward-based searches: text windows and t2i sequences (the
// full-precision sampler's latents at a few taus), and the residual stream entering layer 0.
struct CalibRows {
  std::vector<fwd::Chunk> samples;           // routing, positions, splits (embeddings moved to states)
  std::vector<std::vector<float>> states;    // per sample [rows, hidden]
  int64_t rows_und = 0, rows_gen = 0;        // rows cached per path
  int64_t tokens_und = 0, tokens_gen = 0;    // tokens read from the calibration inputs
};
// The engine the searches run (source dtype, layer pages released after use).
fwd::Engine load_search_engine(const std::string& model_dir);
// Builds the rows from o.calib (runs the full-precision t2i sampler: the slow part at full size).
CalibRows collect_calib_rows(const QuantizeOptions& o, fwd::Engine& engine);

// AWQ and / or GPTQ on real activations through the native forward (awq-*, gptq-*, awq-gptq-*).
// Takes `rows` (moved from) or collects them, and fills the report's calibration counts.
// Each linear is fake-quantized with formats.params_for(its name), the parameters that write it.
std::unique_ptr<LayerSearch> make_forward_awq(const QuantizeOptions& o, const model::ModelSpec& spec,
                                              const LinearFormats& formats, QuantizeReport& report,
                                              CalibRows* rows = nullptr);
// Statistics-only searches (awq-proxy, legacy-awq). Loads and validates --stats.
std::unique_ptr<LayerSearch> make_stats_search(const QuantizeOptions& o, const model::ModelSpec& spec,
                                               const LinearFormats& formats);
// The original toolkit's INT4: codes chosen against f32 scales, scales stored rounded to bf16.
quant::QTensor legacy_quantize(const float* w, int64_t out, int64_t in, const quant::QuantParams& p);

}  // namespace lq::pipeline
