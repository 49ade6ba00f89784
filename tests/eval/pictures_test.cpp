// Picture metrics against scikit-image (golden: tools/gen_ssim_golden.py; image pairs from integer
// formulas evaluated here too), and compare_pictures on a tiny random-weight Wan2.2 VAE: identical
// latents give SSIM 1 / PSNR inf, different ones less, and the side-by-side sheet has the right size.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "eval/pictures.h"
#include "media/image_io.h"
#include "test_paths.h"
#include "vae/wan_vae.h"

namespace {

std::vector<uint8_t> image_a(int w, int h) {
  std::vector<uint8_t> a(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) a[(size_t(y) * w + x) * 3 + c] = uint8_t((7 * x + 13 * y + 29 * c + (x * y) % 17) % 256);
  return a;
}

std::vector<uint8_t> image_b(int w, int h, int k, int s) {
  std::vector<uint8_t> b = image_a(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        uint8_t& v = b[(size_t(y) * w + x) * 3 + c];
        v = uint8_t(std::clamp(int(v) + s * ((3 * x + 5 * y + 7 * c + k) % 21 - 10), 0, 255));
      }
  return b;
}

TEST(Pictures, MatchScikitImage) {
  std::ifstream in(std::string(LQ_SOURCE_DIR) + "/tests/eval/data/ssim_golden.json");
  const auto j = nlohmann::json::parse(in);
  ASSERT_EQ(j["cases"].size(), 4u);
  for (const auto& c : j["cases"]) {
    const int w = c["width"], h = c["height"], k = c["k"], s = c["s"];
    const auto a = image_a(w, h), b = image_b(w, h, k, s);
    EXPECT_NEAR(lq::eval::ssim_rgb8(a.data(), b.data(), w, h), c["ssim"].get<double>(), 1e-9) << w << "x" << h;
    EXPECT_NEAR(lq::eval::psnr_rgb8(a.data(), b.data(), int64_t(a.size())), c["psnr_db"].get<double>(), 1e-9);
  }
  const auto a = image_a(20, 20);
  EXPECT_DOUBLE_EQ(lq::eval::ssim_rgb8(a.data(), a.data(), 20, 20), 1.0);
  EXPECT_TRUE(std::isinf(lq::eval::psnr_rgb8(a.data(), a.data(), int64_t(a.size()))));
}

TEST(Pictures, CompareDecodedLatents) {
  const auto vae = lq::vae::WanVae::load(std::string(LQ_SOURCE_DIR) + "/tests/vae/data/wan_vae_tiny");
  lq::eval::GenResult g;
  g.grid = {1, 2, 3};
  std::vector<float> x(size_t(6 * 48));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(std::sin(0.37 * double(i)));
  lq::eval::GenPrompt same, diff;
  same.base_latents = same.quant_latents = x;
  diff.base_latents = x;
  diff.quant_latents = x;
  for (size_t i = 0; i < x.size(); i += 3) diff.quant_latents[i] += 0.5f;
  g.prompts = {same, diff};
  const std::string png = lq::test::scratch_dir("pictures") + "/sheet.png";
  lq::eval::compare_pictures(vae, g, png);
  EXPECT_TRUE(g.has_pictures);
  EXPECT_TRUE(std::isinf(g.prompts[0].image_psnr_db));
  EXPECT_DOUBLE_EQ(g.prompts[0].image_ssim, 1.0);
  EXPECT_LT(g.prompts[1].image_ssim, 1.0);
  EXPECT_TRUE(std::isfinite(g.prompts[1].image_psnr_db));
  const auto sheet = lq::media::read_image(png);
  EXPECT_EQ(sheet.width, 3 * 48 + 4 * 8);   // three 48-pixel-wide pictures and four gutters
  EXPECT_EQ(sheet.height, 2 * (32 + 8) + 8);
}

}  // namespace
