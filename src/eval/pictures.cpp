#include "eval/pictures.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "io/error.h"
#include "io/png.h"

namespace lq::eval {

double psnr_rgb8(const uint8_t* a, const uint8_t* b, int64_t n) {
  double se = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(b[i]);
    se += d * d;
  }
  if (se == 0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(255.0 * 255.0 / (se / double(n)));
}

namespace {

// Separable Gaussian filter (11 taps, sigma 1.5), valid region only: out has (h - 10) x (w - 10) values.
std::vector<double> gauss_valid(const std::vector<double>& x, int w, int h) {
  constexpr int r = 5;
  double k[2 * r + 1], s = 0;
  for (int i = -r; i <= r; ++i) s += k[i + r] = std::exp(-0.5 * double(i * i) / (1.5 * 1.5));
  for (double& v : k) v /= s;
  const int ow = w - 2 * r, oh = h - 2 * r;
  std::vector<double> tmp(size_t(h) * ow), out(size_t(oh) * ow);
  for (int y = 0; y < h; ++y)
    for (int x0 = 0; x0 < ow; ++x0) {
      double a = 0;
      for (int i = 0; i <= 2 * r; ++i) a += k[i] * x[size_t(y) * w + x0 + i];
      tmp[size_t(y) * ow + x0] = a;
    }
  for (int y0 = 0; y0 < oh; ++y0)
    for (int x = 0; x < ow; ++x) {
      double a = 0;
      for (int i = 0; i <= 2 * r; ++i) a += k[i] * tmp[size_t(y0 + i) * ow + x];
      out[size_t(y0) * ow + x] = a;
    }
  return out;
}

}  // namespace

double ssim_rgb8(const uint8_t* ref, const uint8_t* test, int w, int h) {
  if (w < 11 || h < 11) fail("ssim", "images must be at least 11 x 11 pixels");
  const double C1 = (0.01 * 255) * (0.01 * 255), C2 = (0.03 * 255) * (0.03 * 255);
  const size_t n = size_t(w) * h;
  double total = 0;
  for (int c = 0; c < 3; ++c) {
    std::vector<double> X(n), Y(n), XX(n), YY(n), XY(n);
    for (size_t i = 0; i < n; ++i) {
      X[i] = ref[i * 3 + size_t(c)];
      Y[i] = test[i * 3 + size_t(c)];
      XX[i] = X[i] * X[i];
      YY[i] = Y[i] * Y[i];
      XY[i] = X[i] * Y[i];
    }
    const auto ux = gauss_valid(X, w, h), uy = gauss_valid(Y, w, h), uxx = gauss_valid(XX, w, h), uyy = gauss_valid(YY, w, h),
               uxy = gauss_valid(XY, w, h);
    double s = 0;
    for (size_t i = 0; i < ux.size(); ++i) {
      const double vx = uxx[i] - ux[i] * ux[i], vy = uyy[i] - uy[i] * uy[i], vxy = uxy[i] - ux[i] * uy[i];
      s += ((2 * ux[i] * uy[i] + C1) * (2 * vxy + C2)) / ((ux[i] * ux[i] + uy[i] * uy[i] + C1) * (vx + vy + C2));
    }
    total += s / double(ux.size());
  }
  return total / 3.0;
}

void compare_pictures(const vae::WanVae& vae, GenResult& g, const std::string& png) {
  if (g.prompts.empty()) return;
  const int gap = 8;
  std::vector<uint8_t> sheet;
  int W = 0, H = 0, fw = 0, fh = 0;
  double psnr_sum = 0, ssim_sum = 0;
  for (size_t p = 0; p < g.prompts.size(); ++p) {
    GenPrompt& gp = g.prompts[p];
    const std::vector<float> a = vae.decode(gp.base_latents.data(), g.grid.t, g.grid.h, g.grid.w);
    const std::vector<float> b = vae.decode(gp.quant_latents.data(), g.grid.t, g.grid.h, g.grid.w);
    const std::vector<uint8_t> ra = vae::to_rgb8(a.data(), a.size()), rb = vae::to_rgb8(b.data(), b.size());
    fw = g.grid.w * vae.config().spatial_ratio();
    fh = g.grid.h * vae.config().spatial_ratio();
    const size_t frame = size_t(fw) * fh * 3;
    const int frames = int(ra.size() / frame);
    gp.image_psnr_db = psnr_rgb8(ra.data(), rb.data(), int64_t(ra.size()));
    double ssim = 0;
    for (int f = 0; f < frames; ++f) ssim += ssim_rgb8(ra.data() + f * frame, rb.data() + f * frame, fw, fh);
    gp.image_ssim = ssim / frames;
    psnr_sum += gp.image_psnr_db;
    ssim_sum += gp.image_ssim;
    if (sheet.empty()) {
      W = 3 * fw + 4 * gap;
      H = int(g.prompts.size()) * (fh + gap) + gap;
      sheet.assign(size_t(W) * H * 3, 128);
    }
    const int y0 = gap + int(p) * (fh + gap);
    for (int y = 0; y < fh; ++y)
      for (int x = 0; x < fw; ++x)
        for (int c = 0; c < 3; ++c) {
          const size_t i = (size_t(y) * fw + x) * 3 + size_t(c);
          const int d = std::min(255, 4 * std::abs(int(ra[i]) - int(rb[i])));
          sheet[(size_t(y0 + y) * W + gap + x) * 3 + size_t(c)] = ra[i];
          sheet[(size_t(y0 + y) * W + 2 * gap + fw + x) * 3 + size_t(c)] = rb[i];
          sheet[(size_t(y0 + y) * W + 3 * gap + 2 * fw + x) * 3 + size_t(c)] = uint8_t(d);
        }
  }
  g.has_pictures = true;
  g.image_psnr_db = psnr_sum / double(g.prompts.size());  // +inf when every prompt is identical
  g.image_ssim = ssim_sum / double(g.prompts.size());
  io::write_png_rgb(png, sheet.data(), W, H);
}

}  // namespace lq::eval
