// Pictures rather than latents: BASE's and QUANT's final latents of every t2i prompt decoded by the
// Wan2.2 VAE and compared as 8-bit RGB (what a user sees), with PSNR and SSIM, plus a side-by-side PNG.
#pragma once
#include <cstdint>
#include <string>

#include "eval/evaluate.h"
#include "vae/wan_vae.h"

namespace lq::eval {

// 10 log10(255^2 / MSE) over two 8-bit images of n bytes; +inf when identical.
double psnr_rgb8(const uint8_t* ref, const uint8_t* test, int64_t n);
// SSIM of Wang et al. (2004) as scikit-image's structural_similarity(a, b, channel_axis=2,
// data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False): per channel, Gaussian
// moments over an 11 x 11 window (sigma 1.5, truncate 3.5), K1 = 0.01, K2 = 0.03, the SSIM map averaged
// over pixels at least 5 from every border, then over the channels. Images [h, w, 3], h, w >= 11.
double ssim_rgb8(const uint8_t* ref, const uint8_t* test, int width, int height);

// Decodes every prompt's latents (both models), fills GenPrompt::image_psnr_db / image_ssim and the
// means in `g`, and writes rows of [BASE | QUANT | 4 x |BASE - QUANT|] (first frame) to `side_by_side_png`.
void compare_pictures(const vae::WanVae& vae, GenResult& g, const std::string& side_by_side_png);

}  // namespace lq::eval
