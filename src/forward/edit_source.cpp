#include "forward/edit_source.h"

#include "io/error.h"
#include "io/progress.h"
#include "media/image_io.h"
#include "media/lance_transform.h"
#include "media/video_reader.h"

namespace lq::fwd {

uint64_t source_noise_seed(uint64_t seed) { return seed ^ 0x5EED5EED5EED5EEDull; }

SourceFrames read_edit_source(const EditSource& src) {
  if (src.image.empty() == src.video.empty()) fail("edit", "give exactly one of --image SRC or --video SRC");
  SourceFrames s;
  if (!src.image.empty()) {
    s.vision_type = "image";
    s.path = src.image;
    s.frames.push_back(media::read_image(src.image));
  } else {
    s.vision_type = "video";
    s.path = src.video;
    media::SampledFrames clip = media::read_clip(src.video, media::FrameSampling{}, src.folder_fps);
    s.frames = std::move(clip.frames);
    if (src.max_frames > 0 && int(s.frames.size()) > src.max_frames) s.frames.resize(size_t((src.max_frames - 1) / 4 * 4 + 1));
  }
  return s;
}

int edit_vae_resolution(const EditSource& src, const std::string& vision_type) {
  return src.resolution > 0 ? src.resolution : vision_type == "image" ? 768 : 640;
}

EncodedSource encode_edit_source(const vae::WanVae& vae, const EditSource& src, uint64_t seed, bool show_progress) {
  return encode_edit_source(vae, src, read_edit_source(src), seed, show_progress);
}

EncodedSource encode_edit_source(const vae::WanVae& vae, const EditSource& src, const SourceFrames& sf, uint64_t seed,
                                 bool show_progress) {
  EncodedSource e;
  e.vision_type = sf.vision_type;
  const std::vector<media::RgbImage>& frames = sf.frames;
  media::FrameTransform t;  // Lance's VAE transform: bucket stride 16, crop to multiples of 16, mean = std = 0.5
  t.resolution = edit_vae_resolution(src, e.vision_type);
  t.bucket_stride = 16;
  t.divisible = vae.config().spatial_ratio();
  t.mean = {0.5f, 0.5f, 0.5f};
  t.std = {0.5f, 0.5f, 0.5f};
  const media::FrameTensor ft = media::transform_frames(frames, t, sf.path);
  // [T, 3, H, W] -> [T, H, W, 3]
  std::vector<float> px(ft.data.size());
  const size_t plane = size_t(ft.h) * ft.w;
  for (int f = 0; f < ft.t; ++f)
    for (size_t i = 0; i < plane; ++i)
      for (int c = 0; c < 3; ++c) px[(size_t(f) * plane + i) * 3 + c] = ft.data[(size_t(f) * 3 + c) * plane + i];
  io::Progress progress("VAE encode", 1, "latent frames");
  vae::ChunkProgress on_chunk;
  if (show_progress)
    on_chunk = [&](int d, int n) {
      progress.set_total(n);
      progress.update(d);
    };
  const vae::Encoded enc = vae.encode(px.data(), ft.t, ft.h, ft.w, on_chunk);
  progress.finish();
  const std::vector<float> eps = normal_noise(source_noise_seed(seed), int64_t(enc.mu.size()));
  e.latents = vae::reparameterize(enc, eps.data());
  e.grid = {enc.t, enc.h, enc.w};
  e.frames = ft.t;
  e.width = ft.w;
  e.height = ft.h;
  return e;
}

}  // namespace lq::fwd
