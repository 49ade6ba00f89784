// Where the VAE's weights come from (internal to lq_vae): a diffusers safetensors file or Wan's original
// torch.save archive, addressed by diffusers names, validated against expected_tensors() up front.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "vae/wan_vae.h"

namespace lq::vae {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // Opens `path` (see WanVae::load), determines the configuration and checks every tensor's name and
  // shape against it; throws lq::Error naming the file and tensor on the first problem.
  static std::unique_ptr<WeightSource> open(const std::string& path, WanVaeConfig& config);
  // The tensor named (diffusers naming) as f32, row-major in its PyTorch shape.
  virtual std::vector<float> read(const std::string& name) const = 0;
  // Releases the mapped pages of a tensor that has been consumed.
  virtual void release(const std::string& name) const = 0;
  virtual const std::string& path() const = 0;
};

// Parses a diffusers AutoencoderKLWan config.json (Wan2.2 layout required: is_residual, patch 2).
WanVaeConfig parse_diffusers_config(const std::string& config_json_path);

}  // namespace lq::vae
