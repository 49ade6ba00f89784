// AWQ building blocks (activation-aware weight quantization; mit-han-lab/llm-awq auto_scale/auto_clip,
// AutoAWQ's quantizer), independent of any model: scale candidates, the scaled fake-quantizer, the
// generic grid search with the identity as a candidate, and the per-group clip search.
//
// For a pair (previous op -> targets) with per-input-channel scale s the targets compute
// Q(W diag(s)) (x / s): the previous op absorbs 1/s exactly (norm weight, or rows + bias of a linear),
// so only the quantization error changes. The fake-quantizer here is quant::fake_quantize, bit-identical
// to the writer (stored scale dtype included).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "quant/quantizer.h"

namespace lq::quant {

// Candidate s for exponent `alpha`: s_c = x_mean_c^alpha / w_mean_c^(1 - alpha) ("duo scaling", AutoAWQ)
// or x_mean_c^alpha (llm-awq), clamped to >= 1e-4 and normalised by sqrt(max(s) * min(s)).
std::vector<float> awq_scales(const std::vector<float>& x_mean, const std::vector<float>& w_mean, double alpha, bool duo);

// Mean over output rows of |W| / max|W in its group| per input channel, over several matrices that
// share the input (AutoAWQ's w_mean of the concatenated targets). group 0 = whole row.
std::vector<float> weight_channel_mean(const std::vector<const float*>& ws, const std::vector<int64_t>& outs, int64_t in,
                                       int64_t group);

// wq = Q(W diag(s)) diag(1/s): the effective weight the targets apply to the UNSCALED input.
// `scale_of_channel` maps input channel c to s's index (identity when null; GQA v->o otherwise).
void fake_quantize_scaled(const float* w, int64_t out, int64_t in, const QuantParams& p, const std::vector<float>& s,
                          float* wq, const std::function<int64_t(int64_t)>& scale_of_channel = nullptr);

struct ScaleSearch {
  double alpha = 0;        // exponent of the chosen candidate (identity: 0 and identity = true)
  bool identity = false;
  double loss = 0, identity_loss = 0;
  std::vector<float> s;    // the chosen scales (all ones for the identity)
};
// Evaluates loss(s) for the identity (s = 1) and `grid` candidates alpha = i / grid, i = 0..grid-1;
// returns the minimum. Never worse than the identity on the loss it is given (ties keep the identity).
ScaleSearch search_scales(const std::vector<float>& x_mean, const std::vector<float>& w_mean, int grid, bool duo,
                          const std::function<double(const std::vector<float>&)>& loss);

// Per output row and group, the clip ratio in {1.00, 0.95, ..., 0.55} minimising the squared error of
// the group's partial dot products sum_n (x_n,g . (w_g - Q_r(w)_g))^2 over the rows x [n, in].
// Integer schemes only. Returns [out][in/group] ratios for quant::quantize.
std::vector<float> search_clip(const float* w, int64_t out, int64_t in, const QuantParams& p, const float* x, int64_t n);

}  // namespace lq::quant
