#include "vae/synth.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/error.h"
#include "num/formats.h"

namespace lq::vae {

namespace fs = std::filesystem;

WanVaeConfig tiny_config() {
  WanVaeConfig c = wan22_config();
  c.base_dim = 4;
  c.decoder_base_dim = 4;
  return c;
}

namespace {

uint64_t mix(uint64_t z) {  // SplitMix64 finaliser
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Standard normal sample number i of stream `key` (Box-Muller on two hashed uniforms).
float normal_at(uint64_t key, uint64_t i) {
  const uint64_t a = mix(key ^ mix(2 * i)), b = mix(key ^ mix(2 * i + 1));
  const double u1 = (double(a >> 11) + 0.5) * 0x1.0p-53, u2 = (double(b >> 11) + 0.5) * 0x1.0p-53;
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

nlohmann::json diffusers_config(const WanVaeConfig& c) {
  return {{"_class_name", "AutoencoderKLWan"},
          {"_diffusers_version", "0.42.1"},
          {"base_dim", c.base_dim},
          {"decoder_base_dim", c.decoder_base_dim},
          {"z_dim", c.z_dim},
          {"dim_mult", c.dim_mult},
          {"num_res_blocks", c.num_res_blocks},
          {"attn_scales", nlohmann::json::array()},
          {"temperal_downsample", c.temporal_downsample},
          {"dropout", 0.0},
          {"latents_mean", c.latents_mean},
          {"latents_std", c.latents_std},
          {"is_residual", true},
          {"in_channels", 3 * c.patch_size * c.patch_size},
          {"out_channels", 3 * c.patch_size * c.patch_size},
          {"patch_size", c.patch_size},
          {"scale_factor_temporal", c.temporal_ratio()},
          {"scale_factor_spatial", c.spatial_ratio()}};
}

}  // namespace

uint64_t write_synthetic_vae(const WanVaeConfig& c, const std::string& dir, uint64_t seed, io::DType dtype, bool force,
                             const std::function<void(uint64_t, uint64_t)>& progress) {
  if (dtype != io::DType::F32 && dtype != io::DType::BF16) fail("synth-vae", "dtype must be F32 or BF16");
  const fs::path d(dir);
  const fs::path weights = d / "diffusion_pytorch_model.safetensors", cfg = d / "config.json";
  if (!force && (fs::exists(weights) || fs::exists(cfg))) fail(dir, "already holds a VAE (use --force to replace it)");
  fs::create_directories(d);
  const auto tensors = expected_tensors(c);
  uint64_t total = 0;
  for (const auto& t : tensors) {
    int64_t n = 1;
    for (auto s : t.shape) n *= s;
    total += uint64_t(n);
  }
  io::SafetensorsWriter w(weights.string(), {{"producer", "lance-quant synth-vae"}, {"seed", std::to_string(seed)}});
  for (const auto& t : tensors) w.declare(t.name, dtype, t.shape);
  constexpr int64_t kChunk = int64_t(1) << 20;
  std::vector<float> buf;
  std::vector<uint16_t> half;
  uint64_t done = 0;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const auto& t = tensors[k];
    int64_t n = 1;
    for (auto s : t.shape) n *= s;
    const bool gamma = t.name.size() > 6 && t.name.compare(t.name.size() - 6, 6, ".gamma") == 0;
    const bool bias = t.name.size() > 5 && t.name.compare(t.name.size() - 5, 5, ".bias") == 0;
    const int64_t fan_in = t.shape.size() > 1 ? n / t.shape[0] : 1;
    float scale = gamma ? 0.1f : bias ? 0.1f : float(1.0 / std::sqrt(double(fan_in)));
    if (t.name == "decoder.conv_out.weight") scale *= 0.25f;
    const float offset = gamma ? 1.0f : 0.0f;
    const uint64_t key = mix(seed * 0x100000001B3ull + k + 1);
    for (int64_t b = 0; b < n; b += kChunk) {
      const int64_t e = std::min(n, b + kChunk);
      buf.resize(size_t(e - b));
      for (int64_t i = b; i < e; ++i) buf[size_t(i - b)] = offset + scale * normal_at(key, uint64_t(i));
      if (dtype == io::DType::F32) {
        w.write(buf.data(), buf.size() * 4);
      } else {
        half.resize(buf.size());
        num::f32_to_bf16(buf.data(), half.data(), buf.size());
        w.write(half.data(), half.size() * 2);
      }
      done += uint64_t(e - b);
      if (progress) progress(done, total);
    }
  }
  w.finish();
  const std::string tmp = cfg.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << diffusers_config(c).dump(2) << "\n";
    if (!out) fail(tmp, "cannot write");
  }
  fs::rename(tmp, cfg);
  return fs::file_size(weights);
}

}  // namespace lq::vae
