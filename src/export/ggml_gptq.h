// GPTQ inside the ggml block types: second-order rounding of a linear's codes with the calibration
// inputs' second moment H = E[x x^T] (`calibrate --hessian`), so that a GGUF carries more than llama.cpp's
// importance matrix (its diagonal) can. Per row, left to right, one block at a time:
//   1. the block's scales come from the type's own weighted search (export/ggml_types.h, with the row's
//      importance) on the row as updated so far;
//   2. each element takes the code whose decoded value (a * grid[code] + b, the decoder's arithmetic) is
//      nearest, and its error is spread over the columns not yet quantized through the upper Cholesky
//      factor U of H^-1: w[k] -= (w[j] - y[j]) / U[j][j] * U[j][k] for k > j (Frantar et al., 2022).
// Rows are independent given U, so rows are encoded in parallel and the bytes do not depend on the thread
// count. With H diagonal no error moves and the result equals the type's plain encoder on that row.
// Cost: the factor is O(n^3) per linear (n = input width, double precision), the rows O(rows * n^2 / 2).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "export/ggml_types.h"

namespace lq::exporter {

struct GptqFactor {
  int64_t n = 0;
  std::vector<float> u;  // n x n row-major, upper triangular: (H + damp I)^-1 = U^T U
  double damp = 0;       // the damping added to H's diagonal (relative to its mean)
  int64_t dead = 0;      // inputs no calibration row reached (H[j][j] = 0): quantized without feedback
};

// `xtx` (n x n, row-major, any positive multiple of E[x x^T]): damped by rel_damp * mean diagonal (times 10
// per retry while the Cholesky factorisation fails, up to 6 tries). Throws naming `where` otherwise.
GptqFactor gptq_factor(const std::vector<double>& xtx, int64_t n, double rel_damp, const std::string& where);

// Encodes one row of n elements (n = f.n, a multiple of the type's block size) of a quantized type with
// GPTQ codes. `importance` (n values) or nullptr weights the scale searches as in the plain encoder.
void gptq_encode_row(const GgmlTypeTraits& type, const float* x, int64_t n, const float* importance,
                     const GptqFactor& f, uint8_t* dst);

}  // namespace lq::exporter
