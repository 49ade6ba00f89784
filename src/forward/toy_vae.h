// lance-mini's toy "VAE" decode: latent token (r, c) holds the patch x patch RGB pixel block
// [p r : p r + p, p c : p c + p, :] in (py, px, rgb) order; pixel = clamp(latent * std + mean, 0, 1).
#pragma once
#include <cstdint>
#include <vector>

#include "forward/t2i.h"

namespace lq::fwd {

struct ToyVae {
  int patch = 4;
  double mean = 0.5, std = 0.36;
};

// latents [h*w, patch*patch*3] (t must be 1) -> pixels [h*patch, w*patch, 3] in [0, 1].
std::vector<float> toy_vae_decode(const float* latents, const LatentGrid& g, const ToyVae& vae);

// Pixels in [0, 1] -> 8-bit RGB, each pixel repeated `scale` x `scale` times (nearest upscale).
std::vector<uint8_t> to_rgb8_upscaled(const std::vector<float>& pixels, int width, int height, int scale);

}  // namespace lq::fwd
