// Pillow's Image.resize for 8-bit RGB, bit-exact: separable convolution (horizontal pass, then vertical),
// filter support scaled by the reduction factor (antialiasing), coefficients normalised in double and
// rounded to 22-bit fixed point, an 8-bit intermediate image, rounding and clipping as libImaging's
// Resample.c. Lance's image pipeline resizes with it (torchvision's resize on PIL images calls it).
#pragma once
#include "media/image_io.h"

namespace lq::media {

enum class ResampleFilter { Bilinear, Bicubic, Lanczos };  // PIL's BILINEAR, BICUBIC (a = -0.5), LANCZOS (a = 3)

// `in` resized to out_w x out_h (PIL's size order is (width, height)). Same size returns a copy.
RgbImage resize_pil(const RgbImage& in, int out_w, int out_h, ResampleFilter filter);

// Pixels [left, left + width) x [top, top + height) of `in` (must lie inside).
RgbImage crop(const RgbImage& in, int left, int top, int width, int height);

}  // namespace lq::media
