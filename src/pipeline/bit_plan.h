// Mixed precision under a size budget (`quantize --bpw B`): one number format per target linear,
// chosen by measured sensitivity so that the target linears average at most B bits per weight.
//
// Bits, as llama.cpp counts bits per weight (everything stored per weight): QTensor::payload_bytes * 8
// = codes (4 or 8 bits) + one bf16 scale per group + one 4-bit zero point per group (asymmetric INT4;
// lance-quant-v1 spends a byte on disk, compressed-tensors packs 4 bits) + NVFP4's E4M3 block scales
// and fp32 tensor scale; a bf16 linear costs 16 bits per weight. Biases, norms, embeddings and the
// lm_head are not counted. The average is over all target linears' weights (kept ones included).
// INT4 g128 / g64 / g32 = 4.156 / 4.3125 / 4.625 bits, INT8 g128 = 8.125, NVFP4 = 4.5.
//
// Sensitivity (the loss increase a choice causes on the calibration rows, both paths), measured layer
// by layer on the full-precision model, as the effect on the final hidden state of each path:
//   e(l, f)  = tr(dW H dW^T): linear l's output error with format f (the scheme's rounding, GPTQ for
//              gptq schemes, the writer's fake-quantizer) on its calibration inputs (H = 2 X^T X / n);
//   d_p(l)   = sum over path-p rows of ||layer output with l in the probe format - full precision||^2,
//              one layer forward per linear (und linears reach gen rows through the shared attention);
//   s(l, f)  = sum_p d_p(l) / F_p * e(l, f) / e(l, probe), F_p = the final hidden states' energy of
//              path p's rows (a residual perturbation reaches the final norm about unchanged, so
//              d / F is the relative error of the final hidden state both heads read).
// The plan minimises sum_l s(l, f_l) under the budget (solve_bit_plan).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "model/spec.h"
#include "pipeline/quantize.h"
#include "pipeline/searches.h"

namespace lq::pipeline {

struct BitCandidate {
  std::string label;  // "int4:g128", "int8:g128", "bf16", "nvfp4"
  FormatSpec format;
};
// INT4 schemes: int4:g128, int4:g64, int4:g32, int8:g128, bf16; NVFP4 schemes: nvfp4, int8:g128, bf16.
std::vector<BitCandidate> bit_candidates(const SchemeChoice& scheme, bool sym);
// Bits a linear [out][in] costs in a format, as counted above.
uint64_t linear_bits(const FormatSpec& f, int64_t out, int64_t in);

struct BitPlanLinear {
  std::string name;
  int64_t weights = 0;
  std::vector<uint64_t> bits;         // per candidate
  std::vector<double> sensitivity;    // per candidate (bf16: 0)
  int chosen = 0;
  bool fixed = false;                 // --keep: bf16 whatever the budget (counted at 16 bits)
};

struct BitPlan {
  double budget_bpw = 0;
  std::vector<BitCandidate> candidates;
  std::vector<BitPlanLinear> linears;
  double average_bpw() const;
  uint64_t total_bits() const;
  int64_t total_weights() const;
  nlohmann::json to_json() const;
  // Reads what to_json wrote (candidate formats re-parsed); throws naming `where` on bad input.
  static BitPlan from_json(const nlohmann::json& j, const std::string& where);
};

// Chooses each non-fixed linear's candidate minimising the summed sensitivity with total_bits <=
// budget * weights: a multiple-choice knapsack solved by dynamic programming over the spare bits in
// 50,000 steps (costs rounded up, so the result always fits), then topped up greedily with exact
// counts. Throws when even the cheapest plan (each linear in its fewest bits) exceeds the budget.
void solve_bit_plan(BitPlan& plan);

// The candidates and bits of every target linear (--keep ones fixed in bf16), solved with zero
// sensitivities: throws at once when the budget is below the cheapest plan.
BitPlan make_bit_plan(const QuantizeOptions& o, const model::ModelSpec& spec, double budget_bpw);
// Measures every sensitivity on `rows` (a copy: its states advance through the layers) with `engine`
// (its layers' linears are replaced while measuring), then solves the plan again.
// `progress(layer_done, layers)` after each layer.
void measure_bit_plan(BitPlan& plan, const QuantizeOptions& o, const model::ModelSpec& spec, CalibRows rows, fwd::Engine& engine,
                      const std::function<void(int, int)>& progress = {});

// Bits per weight of a quantized checkpoint's target linears, counted as above (kept ones at 16):
// `model_dir` is the original model (its target list).
double target_bits_per_weight(const std::string& quant_dir, const std::string& model_dir);

// DIR/lance-quant.bit-plan.json (written by quantize --bpw beside the checkpoint).
inline constexpr const char* kBitPlanFile = "lance-quant.bit-plan.json";
void write_bit_plan(const std::string& dir, const BitPlan& plan);
std::optional<BitPlan> read_bit_plan(const std::string& dir);

}  // namespace lq::pipeline
