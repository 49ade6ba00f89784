#include "forward/toy_vae.h"

#include <algorithm>
#include <cmath>

#include "io/error.h"

namespace lq::fwd {

std::vector<float> toy_vae_decode(const float* latents, const LatentGrid& g, const ToyVae& vae) {
  if (g.t != 1) fail("toy VAE", "decodes single images only (t = 1), got t = " + std::to_string(g.t));
  const int p = vae.patch, W = g.w * p, C = p * p * 3;
  std::vector<float> px(size_t(g.h) * p * W * 3);
  for (int r = 0; r < g.h; ++r)
    for (int c = 0; c < g.w; ++c) {
      const float* tok = latents + (int64_t(r) * g.w + c) * C;
      for (int py = 0; py < p; ++py)
        for (int pxl = 0; pxl < p; ++pxl)
          for (int ch = 0; ch < 3; ++ch) {
            const double v = tok[(py * p + pxl) * 3 + ch] * vae.std + vae.mean;
            px[((size_t(r) * p + py) * W + size_t(c) * p + pxl) * 3 + ch] = float(std::clamp(v, 0.0, 1.0));
          }
    }
  return px;
}

std::vector<uint8_t> to_rgb8_upscaled(const std::vector<float>& pixels, int width, int height, int scale) {
  if (int64_t(pixels.size()) != int64_t(width) * height * 3) fail("to_rgb8_upscaled", "pixel count does not match size");
  const int W = width * scale;
  std::vector<uint8_t> out(size_t(W) * height * scale * 3);
  for (int y = 0; y < height * scale; ++y)
    for (int x = 0; x < W; ++x)
      for (int ch = 0; ch < 3; ++ch) {
        const float v = pixels[(size_t(y / scale) * width + x / scale) * 3 + ch];
        out[(size_t(y) * W + x) * 3 + ch] = uint8_t(std::lround(std::clamp(v, 0.0f, 1.0f) * 255.0f));
      }
  return out;
}

}  // namespace lq::fwd
