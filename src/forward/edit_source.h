// An edit's source as the sampler needs it: an image or a video read from a file, resized with Lance's
// VAE transform, encoded by the Wan2.2 VAE and sampled with Lance's reparameterisation.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "forward/t2i.h"
#include "media/image_io.h"
#include "vae/wan_vae.h"

namespace lq::fwd {

// Lance: a video is sampled at 12 fps over at most 6 s (4k + 1 frames); every frame is bucket-resized to
// about resolution^2 pixels (sides multiples of 16, values in [-1, 1]); the encoder's reparameterised
// sample (noise from `seed`) is the condition.
struct EditSource {
  std::string image, video;
  int resolution = 0;  // 0: Lance's defaults, 768 for images, 640 for videos (video_480p)
  int max_frames = 0;  // > 0: keep the first 4k + 1 <= max_frames sampled frames
  double folder_fps = 24.0;  // `video` a folder of frames: their frame rate
};
struct EncodedSource {
  LatentGrid grid;
  std::vector<float> latents;  // [t h w, C]
  int frames = 0, width = 0, height = 0;
  std::string vision_type;     // "image" or "video"
};
// The source's frames as Lance samples them (an image: one frame; a video: 12 fps over at most 6 s, 4k + 1,
// cut to max_frames), before any resize: the VAE block and the ViT reference are made of the same frames.
struct SourceFrames {
  std::vector<media::RgbImage> frames;
  std::string vision_type;  // "image" or "video"
  std::string path;
};
SourceFrames read_edit_source(const EditSource& src);
// The VAE transform's resolution: src.resolution, else 768 (images) / 640 (videos).
int edit_vae_resolution(const EditSource& src, const std::string& vision_type);
// show_progress: a progress line on a terminal.
EncodedSource encode_edit_source(const vae::WanVae& vae, const EditSource& src, const SourceFrames& frames, uint64_t seed,
                                 bool show_progress = true);
EncodedSource encode_edit_source(const vae::WanVae& vae, const EditSource& src, uint64_t seed, bool show_progress = true);

// The seed of the source's reparameterisation noise, derived from the sampler's seed.
uint64_t source_noise_seed(uint64_t seed);

}  // namespace lq::fwd
