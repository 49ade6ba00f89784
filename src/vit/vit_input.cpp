#include "vit/vit_input.h"

#include <cstring>

#include "io/error.h"

namespace lq::vit {

VitInput patchify(const media::FrameTensor& f, const VitConfig& c) {
  const int tp = c.temporal_patch_size, p = c.patch_size, m = c.spatial_merge_size, C = c.in_channels;
  if (C != 3) fail("vit input", "the ViT expects " + std::to_string(C) + " channels; frames have 3");
  if (f.t % tp) fail("vit input", std::to_string(f.t) + " frames is not a multiple of temporal_patch_size " + std::to_string(tp));
  if (f.h % (p * m) || f.w % (p * m))
    fail("vit input", "frame " + std::to_string(f.w) + "x" + std::to_string(f.h) + " is not a multiple of " +
                          std::to_string(p * m) + " pixels");
  VitInput in;
  in.grid = {f.t / tp, f.h / p, f.w / p};
  const int gt = in.grid[0], gh = in.grid[1], gw = in.grid[2];
  const int64_t dim = c.patch_dim(), plane = int64_t(f.h) * f.w;
  in.patches.resize(size_t(in.patch_count() * dim));
  float* o = in.patches.data();
  // (gt, gh/m, gw/m, m, m) patches, each (C, tp, p, p).
  for (int t = 0; t < gt; ++t)
    for (int mh = 0; mh < gh / m; ++mh)
      for (int mw = 0; mw < gw / m; ++mw)
        for (int sh = 0; sh < m; ++sh)
          for (int sw = 0; sw < m; ++sw) {
            const int y0 = (mh * m + sh) * p, x0 = (mw * m + sw) * p;
            for (int ch = 0; ch < C; ++ch)
              for (int k = 0; k < tp; ++k) {
                const float* frame = f.data.data() + (int64_t(t * tp + k) * 3 + ch) * plane;
                for (int y = 0; y < p; ++y) {
                  std::memcpy(o, frame + int64_t(y0 + y) * f.w + x0, sizeof(float) * size_t(p));
                  o += p;
                }
              }
          }
  return in;
}

VitInput vit_input(media::FrameTensor f, MediaKind kind, const VitConfig& c) {
  const size_t frame = f.data.size() / size_t(std::max(1, f.t));
  if (kind == MediaKind::Image) {  // video_tensor.repeat(1, 2, 1, 1)
    const std::vector<float> once = f.data;
    f.data.insert(f.data.end(), once.begin(), once.end());
    f.t *= 2;
  }
  if (f.t % 2 == 1) {  // the last frame duplicated to make the count even
    const std::vector<float> last(f.data.end() - long(frame), f.data.end());
    f.data.insert(f.data.end(), last.begin(), last.end());
    f.t += 1;
  }
  return patchify(f, c);
}

VitInput image_input(const media::RgbImage& image, const VitConfig& c) {
  return image_input(image, c, media::vit_image_transform());
}
VitInput image_input(const media::RgbImage& image, const VitConfig& c, const media::FrameTransform& t) {
  return vit_input(media::transform_frames({image}, t, "image"), MediaKind::Image, c);
}
VitInput video_input(const std::vector<media::RgbImage>& frames, const VitConfig& c) {
  return video_input(frames, c, media::vit_video_transform());
}
VitInput video_input(const std::vector<media::RgbImage>& frames, const VitConfig& c, const media::FrameTransform& t) {
  return vit_input(media::transform_frames(frames, t, "video"), MediaKind::Video, c);
}

}  // namespace lq::vit
