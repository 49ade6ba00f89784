// Pictures and videos for `run`'s generation tasks (t2i / t2v / edit): decoded PNG / frames / MP4.
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

}  // namespace lq::cli
