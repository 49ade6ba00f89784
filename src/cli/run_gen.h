// Pictures and videos for `run`'s generation tasks (t2i / t2v / edit): the Wan2.2 VAE around the
// sampler, i.e. encoding an edit's source and writing decoded PNG / frames / MP4.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "forward/t2i.h"
#include "kernels/conv.h"
#include "vae/wan_vae.h"

namespace lq::cli {

struct VisualOutputs {
  std::string png;         // picture (t = 1) or, for videos, the first frame
  std::string mp4;         // video
  std::string frames_dir;  // every frame as frame_NNNN.png
  int fps = 12;            // Lance saves at 12 frames per second
  bool any() const { return !png.empty() || !mp4.empty() || !frames_dir.empty(); }
};

// Decodes latents [t, h, w, C] chunk by chunk and writes the requested outputs (progress on stderr).
// Returns a JSON summary (paths, frames, size, seconds).
nlohmann::json write_visuals(const vae::WanVae& vae, const std::vector<float>& latents, const fwd::LatentGrid& grid,
                             const VisualOutputs& out);

// An edit's source: an image or a video (Lance: frames sampled at 12 fps over at most 6 s, 4k + 1 of
// them), bucket-resized to about resolution^2 pixels (sides multiples of 16, values in [-1, 1]) as
// Lance's VAE transform does, encoded, and sampled with Lance's reparameterisation (noise from `seed`).
struct EditSource {
  std::string image, video;
  int resolution = 0;  // 0: Lance's defaults, 768 for images, 640 for videos (video_480p)
  int max_frames = 0;  // > 0: keep the first 4k + 1 <= max_frames sampled frames
};
struct EncodedSource {
  fwd::LatentGrid grid;
  std::vector<float> latents;  // [t h w, C]
  int frames = 0, width = 0, height = 0;
  std::string vision_type;     // "image" or "video"
};
EncodedSource encode_edit_source(const vae::WanVae& vae, const EditSource& src, uint64_t seed);

// The seed of the source's reparameterisation noise, derived from the sampler's seed.
uint64_t source_noise_seed(uint64_t seed);

}  // namespace lq::cli
