// GPTQ (Frantar et al. 2022; the reference is IST-DASLab/gptq `gptq.py`): second-order rounding of
// W [out][in] against H = 2 X^T X / n of the linear's calibration inputs X [n][in].
//
//   H += damp * mean(diag H) * I (retried with 10x more while the Cholesky fails); dead inputs
//   (H_ii = 0) get H_ii = 1 and are rounded plainly. U = upper Cholesky factor of H^-1. Columns are
//   quantized in order (descending diag H with act_order), each one's rounding error e_i = (w_i - q_i)
//   / U_ii pushed onto the not yet quantized columns through U's row i; within a block of `block`
//   columns immediately, beyond it lazily once per block (one GEMM).
//   Group parameters come from the SAME functions that write the file (rtn_group_params /
//   nvfp4_block_params) and every code from the same element rule (rtn_code / nvfp4_code), so the
//   returned QTensor dequantizes to exactly the weights GPTQ optimised:
//     default         a group's parameters are fixed when its first column is reached, from the
//                     group's current (error-updated) values, as in the reference;
//     static_groups   every group's parameters are fixed up front from the original W;
//     act_order       implies static groups, so the file keeps the standard contiguous-group layout
//                     (no g_idx): only the order in which columns are rounded changes.
// Rows are independent given U: the result does not depend on the thread count.
// Memory: H is consumed in place (it becomes U); plus a working copy of W and the codes.
#pragma once
#include <cstdint>
#include <vector>

#include "quant/qtensor.h"
#include "quant/quantizer.h"

namespace lq::quant {

struct GptqOptions {
  int64_t block = 128;       // lazy-update block (columns)
  double damp = 0.01;        // fraction of mean(diag H) added to the diagonal
  bool act_order = false;    // columns by descending diag H (static groups)
  bool static_groups = false;
  int max_retries = 6;       // damping x10 per failed Cholesky
};

struct GptqInfo {
  double damp = 0;           // damping fraction finally used
  int retries = 0;
  int64_t dead_columns = 0;  // inputs never active in the calibration rows
  // sum_i ||w_i - q_i||^2 / U_ii^2 / 2 over columns, GPTQ's own loss (diagnostic).
  double loss = 0;
};

// `h`: H [in][in], both triangles (consumed: becomes workspace). `clip_ratios`: optional [out][in/group]
// integer-scheme clip ratios applied wherever group parameters are computed (AWQ's clip search).
// Throws lq::Error for shapes the scheme cannot take or an H that stays singular after the retries.
QTensor gptq_quantize(const float* w, int64_t out, int64_t in, const QuantParams& p, std::vector<float>& h,
                      const GptqOptions& o = {}, const float* clip_ratios = nullptr, GptqInfo* info = nullptr);

// tr((W - W') H (W - W')^T): the output error of W' on the rows H was accumulated from (up to the
// 2/n of H). Plain double loops, O(out in^2): for tests and small diagnostics.
double hessian_error(const float* w, const float* wq, int64_t out, int64_t in, const std::vector<float>& h);

}  // namespace lq::quant
