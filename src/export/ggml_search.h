// Weighted scale searches for the ggml block types (export/ggml_types.h). The problem per block: choose
// the stored scales so that the weighted squared error sum_i w_i (x_i - y_i)^2 of the decoded values y is
// small, where w_i is the element's importance (llama.cpp's imatrix idea: the calibration mean of x^2 of
// the input column, times a magnitude term). With the scales fixed every element's best code is the
// nearest grid point, whatever its weight, so the searches only enumerate scales:
//   - per block, candidate scales around the extreme value, each refined by weighted least squares on its
//     codes and re-rounded (two Lloyd steps);
//   - for super-blocks (K types, IQ4_XS), the sub-block scales are stored as small integers times one f16
//     super scale: a few super-scale candidates, and per sub-block a window of integer codes around the
//     continuous optimum, all scored with the decoder's exact float arithmetic.
// Everything is deterministic; no state is shared between calls.
#pragma once
#include <cstdint>

namespace lq::exporter::search {

float f16_round(float v);  // the value an f16 field holds after storing v

// x ~= s * q with integer q in [qmin, qmax]. Writes q; returns s (f16-rounded when `f16`).
float fit_symmetric(const float* x, const float* w, int n, int qmin, int qmax, bool f16, int8_t* q);
// Weighted squared error of x ~= s * clamp(round(x / s)) (writes q when non-null).
double symmetric_error(const float* x, const float* w, int n, float s, int qmin, int qmax, int8_t* q);

// x ~= s * q + b with q in [0, qmax]; `b_nonpositive` forces b <= 0 (K types store -b as an unsigned
// code). Writes q; returns {s, b} (both f16-rounded when `f16`).
struct Affine {
  float s = 0, b = 0;
};
Affine fit_affine(const float* x, const float* w, int n, int qmax, bool b_nonpositive, bool f16, uint8_t* q);
// Weighted squared error of x ~= s * q - m with q = clamp(round((x + m) / s), 0, qmax), evaluated as the
// K-type decoders do: y = s * q - m (writes q when non-null).
double affine_error(const float* x, const float* w, int n, float s, float m, int qmax, uint8_t* q);

// x ~= s * grid[q] with q in 0..15 (grid sorted ascending). Writes q; returns s (f16-rounded when `f16`).
float fit_grid(const float* x, const float* w, int n, const int8_t* grid, bool f16, uint8_t* q);
double grid_error(const float* x, const float* w, int n, float s, const int8_t* grid, uint8_t* q);
int nearest_grid_index(const int8_t* grid, float v);

}  // namespace lq::exporter::search
