// The AWQ fold scales of a checkpoint, kept beside it so evaluation can compare each quantized linear
// with the original one in the ORIGINAL basis.
//
// An activation-aware checkpoint computes the original function, but its individual linears do not:
// a norm fold divides the norm by s and multiplies the linear's input columns by s; v -> o and
// up -> down divide the previous linear's rows (and bias) by s. For a linear with column scales c and
// row scales r, the stored weight is W'[o, i] ~ W[o, i] * c[i] * r[o], so the original-basis output is
//   y[o] = (W' (x / c) + b')[o] / r[o].
// No interchange format can say this (they describe the folded weights only), so `lance-quant quantize`
// writes the scales into FILE_NAME (safetensors content; a name that does not end in .safetensors, so
// loaders that glob *.safetensors never take it for weights): "<base>.col_scale" [in] and
// "<base>.row_scale" [out], f32, only for linears with a fold.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace lq::formats {

struct FoldScales {
  std::vector<float> col, row;  // empty = all ones
};
using FoldScaleMap = std::map<std::string, FoldScales>;  // by linear base name

inline constexpr const char* kFoldScalesFile = "lance-quant.fold-scales";

// Writes DIR/kFoldScalesFile (atomically); nothing when `scales` is empty.
void write_fold_scales(const std::string& dir, const FoldScaleMap& scales);
// Reads DIR/kFoldScalesFile; an empty map when the file is absent. Throws naming the file when malformed.
FoldScaleMap read_fold_scales(const std::string& dir);

}  // namespace lq::formats
