// Synthetic Wan2.2 VAEs: the exact tensor names and shapes of a configuration (diffusers layout:
// config.json + diffusion_pytorch_model.safetensors), deterministic random weights, written by
// streaming. Random weights make noise, not pictures: such a VAE only exercises the plumbing and
// measures speed and memory.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "io/safetensors.h"
#include "vae/wan_vae.h"

namespace lq::vae {

// The reduced configuration used by tests: Wan2.2's structure (z_dim 48, residual blocks, temporal
// down-sampling in the last two stages) with widths 4 / 4.
WanVaeConfig tiny_config();

// Weights: normal / sqrt(fan in) for filters, 1 + 0.1 N for RMS gains, 0.1 N for biases (the decoder's
// output filter scaled by 1/4 so pixels stay mostly inside [-1, 1]); element i of tensor k depends only
// on (seed, k, i). Writes config.json and diffusion_pytorch_model.safetensors into `dir` (created; an
// existing VAE there is an error unless `force`). Returns the bytes of the weights file.
uint64_t write_synthetic_vae(const WanVaeConfig& c, const std::string& dir, uint64_t seed, io::DType dtype, bool force,
                             const std::function<void(uint64_t done, uint64_t total)>& progress = {});

}  // namespace lq::vae
