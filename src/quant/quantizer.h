// One entry point for every weight quantizer: `quantize` produces the QTensor a checkpoint writer
// stores, `fake_quantize` produces its dequantized weights directly (used inside searches such as
// AWQ's scale/clip grid). Both run the same code, so fake_quantize(w) == quantize(w).dequantize()
// bit for bit (tested): a search optimises exactly the weights that end up in the file.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "quant/qtensor.h"

namespace lq::quant {

enum class Nvfp4Encoding {
  // FP32 tensor scale amax/(6*448); E4M3 block scale picked among a few candidates around
  // block_max/(6*tensor_scale) by the block's squared error; codes against the rounded scale.
  Standard,
  // The original Python toolkit: no tensor scale (1.0), block scale = e4m3(block_max/6) (underflows
  // into E4M3 subnormals for typical weights), codes chosen against the UNROUNDED block_max/6.
  Legacy,
};

struct QuantParams {
  Scheme scheme = Scheme::Int4Asym;
  int64_t group = 128;                         // ignored for NVFP4 (always 16); 0 = whole row (per channel)
  ScaleDType scale_dtype = ScaleDType::BF16;   // integer schemes only
  Nvfp4Encoding nvfp4 = Nvfp4Encoding::Standard;
  int nvfp4_candidates = 2;                    // E4M3 codes tried on each side of block_max/6
  // Round the NVFP4 tensor scale up to a power of two: then e4m3 * tensor_scale is exact in bf16
  // (lance-quant-v1's runtime reads bf16 block scales) and 1/tensor_scale is exact in fp32.
  bool nvfp4_pow2_tensor_scale = false;

  int64_t effective_group(int64_t in) const;   // resolves 0 and NVFP4
};

// Quantizes W [out][in] (row-major f32). `clip_ratios` (optional, [out][in/group]) clamps each
// group to [-r*absmax, r*absmax] before min-max (AWQ's clip search); integer schemes only.
// Throws lq::Error for shapes the scheme cannot take.
QTensor quantize(const float* w, int64_t out, int64_t in, const QuantParams& p,
                 const float* clip_ratios = nullptr);
// Writes the dequantized quantize(w) into `wq` ([out][in]) without materialising codes.
void fake_quantize(const float* w, int64_t out, int64_t in, const QuantParams& p, float* wq,
                   const float* clip_ratios = nullptr);

// Runs body(row_begin, row_end) over [0, rows) in contiguous chunks on up to
// hardware_concurrency threads (rows are independent in every quantizer); small jobs run inline.
// The result never depends on the thread count.
void parallel_rows(int64_t rows, int64_t elems_per_row, const std::function<void(int64_t, int64_t)>& body);

}  // namespace lq::quant
