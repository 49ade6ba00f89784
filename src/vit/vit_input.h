// From pixels to the ViT's input, as Lance builds it (validation_dataset.py get_video_tensor_online and
// data_utils.py patchify_video_with_merge):
//   image: the frame transform (media/lance_transform.h, 672), then the frame repeated to 2 frames;
//   video: the sampled frames (media/video_reader.h) through the transform (616), the last frame repeated
//          when the count is odd (it always is: 4k+1);
//   patches: frames [T, C, H, W] -> (T/tp, H/p/m, W/p/m, m, m) patches of (C, tp, p, p) values, so each
//          m x m merge group is contiguous. grid = (T/tp, H/p, W/p); LLM tokens = T/tp * H/p/m * W/p/m.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "media/image_io.h"
#include "media/lance_transform.h"
#include "vit/vit_config.h"

namespace lq::vit {

struct VitInput {
  std::vector<float> patches;  // [t*h*w, patch_dim]
  std::array<int, 3> grid{0, 0, 0};  // (t, h, w) in patches
  int64_t patch_count() const { return int64_t(grid[0]) * grid[1] * grid[2]; }
  int64_t llm_tokens(const VitConfig& c) const { return patch_count() / c.merge_unit(); }
};

// Patchifies normalised frames (T a multiple of temporal_patch_size, sides multiples of patch * merge).
VitInput patchify(const media::FrameTensor& frames, const VitConfig& c);

enum class MediaKind { Image, Video };
// Lance's frame rule for each kind (image: repeat to 2 frames; video: duplicate the last frame if odd)
// applied to transformed frames, then patchify.
VitInput vit_input(media::FrameTensor frames, MediaKind kind, const VitConfig& c);

// Convenience: read + transform + vit_input. `transform` defaults to Lance's (672 images, 616 video).
VitInput image_input(const media::RgbImage& image, const VitConfig& c);
VitInput image_input(const media::RgbImage& image, const VitConfig& c, const media::FrameTransform& t);
VitInput video_input(const std::vector<media::RgbImage>& frames, const VitConfig& c);
VitInput video_input(const std::vector<media::RgbImage>& frames, const VitConfig& c, const media::FrameTransform& t);

}  // namespace lq::vit
