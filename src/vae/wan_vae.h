// The Wan2.2 VAE (Lance's image/video autoencoder), native: 2x2 pixel patchify, causal 3-D convolutions
// run chunk by chunk in time with a per-convolution feature cache (the previous two input frames),
// residual down/up blocks with average/duplicate shortcuts, a single-head attention in each middle
// block, per-channel latent normalisation, output clamped to [-1, 1]. 16x spatial and 4x temporal
// compression: T = 4 (t - 1) + 1 frames <-> t latent frames.
//
// Numbers: f32 throughout; equal to diffusers' AutoencoderKLWan (Wan2.2 configuration) within 1e-4
// relative on a reduced random-weight model (tests/vae/wan_vae_test.cpp, golden by
// tools/gen_wan_vae_golden.py). Memory: weights of the part in use (decoder 2.2 GB, encoder 0.6 GB at
// full size, built on first use) plus one time chunk: the chunk's activations and two cached frames
// per causal convolution; decoded frames are handed to a sink chunk by chunk.
// Layouts are channels-last: latents [t, h, w, z], pixels [T, H, W, 3].
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/conv.h"

namespace lq::vae {

struct WanVaeConfig {
  int z_dim = 48;
  int base_dim = 160;          // encoder width
  int decoder_base_dim = 256;  // decoder width
  std::vector<int> dim_mult{1, 2, 4, 4};
  int num_res_blocks = 2;
  std::vector<bool> temporal_downsample{false, true, true};
  int patch_size = 2;
  std::vector<float> latents_mean, latents_std;  // z_dim each
  int spatial_ratio() const;                    // patch * 2^(stages - 1) = 16
  int temporal_ratio() const;                   // 2^(temporal downsamples) = 4
};

// Wan2.2's configuration with its 48 latent means / stds (Wan's vae2_2.py, diffusers' Wan2.2 config).
WanVaeConfig wan22_config();

// Every weight tensor of a configuration: diffusers AutoencoderKLWan names with their shapes.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<TensorSpec> expected_tensors(const WanVaeConfig& c);
// diffusers name -> Wan's original WanVAE_ state-dict name (Wan2.2_VAE.pth), e.g.
// "decoder.up_blocks.1.resnets.2.conv1.weight" -> "decoder.upsamples.1.upsamples.2.residual.2.weight".
std::string original_name(const std::string& diffusers_name, int num_res_blocks = 2);

struct Encoded {
  int t = 0, h = 0, w = 0, channels = 0;
  std::vector<float> mu;      // normalised: (mu - mean) / std, [t, h, w, z]
  std::vector<float> logvar;  // as the encoder produces it (not normalised), [t, h, w, z]
};

// Lance's conditioning sample (its WanVideoVAE.vae_encode): mu + exp(logvar / 2) * eps, with the
// normalised mu and the raw logvar exactly as Lance adds them; eps [t h w z] standard normal.
std::vector<float> reparameterize(const Encoded& e, const float* eps);

// Receives decoded frames: `frames` frames of [height, width, 3] in [-1, 1], in order.
using FrameSink = std::function<void(const float* rgb, int frames, int height, int width)>;
// Called after each time chunk (done, total).
using ChunkProgress = std::function<void(int done, int total)>;

// Decoded pixels in [-1, 1] to 8-bit as Lance saves them: clip to [-1, 1], * 0.5 + 0.5, * 255, round
// half to even (torch.round), in f32.
std::vector<uint8_t> to_rgb8(const float* pixels, size_t n);

class WanVae {
 public:
  // `path`: a diffusers directory (config.json + diffusion_pytorch_model.safetensors), a .safetensors
  // file in diffusers naming (config.json beside it, else Wan2.2's configuration), Wan's original
  // Wan2.2_VAE.pth (torch.save zip; Wan2.2 configuration inferred and checked), or a directory holding
  // Wan2.2_VAE.pth. Every tensor is checked by name and shape (nothing missing, nothing unexpected)
  // before any weight is read; errors name the file and tensor.
  static WanVae load(const std::string& path, kernels::ConvBackend backend = kernels::ConvBackend::Auto);
  WanVae(WanVae&&) noexcept;
  WanVae& operator=(WanVae&&) noexcept;
  ~WanVae();

  const WanVaeConfig& config() const;
  const std::string& source() const;

  // Normalised latents [t, h, w, z] -> frames [4 (t - 1) + 1, ratio h, ratio w, 3] in [-1, 1] (clamped
  // unless `clamp` is false), delivered to `sink` one time chunk at a time.
  void decode(const float* latents, int t, int h, int w, const FrameSink& sink, bool clamp = true,
              const ChunkProgress& progress = {}) const;
  // The same, collected: [T, H, W, 3].
  std::vector<float> decode(const float* latents, int t, int h, int w, bool clamp = true) const;

  // Pixels [T, H, W, 3] in [-1, 1] (T = 4k + 1; H, W multiples of spatial_ratio()) -> latent
  // distribution [t = k + 1, H / 16, W / 16, z].
  Encoded encode(const float* rgb, int frames, int height, int width, const ChunkProgress& progress = {}) const;

  // Bytes of weights currently built (the decoder and/or encoder, whichever have been used).
  uint64_t resident_weight_bytes() const;

  struct Impl;

 private:
  explicit WanVae(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lq::vae
