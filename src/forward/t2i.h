// Text-to-image on the backbone: Lance's t2i sequence layout with get_rope_index positions, the
// cond / uncond branches of the KV-cache sampler, and the rectified-flow Euler sampler with CFG.
//
// Sequence (cond): s1 = <|im_start|>system\n{INSTR}<|im_end|>\n<|im_start|>user\n, s2 = caption,
// s3 = <|im_end|>\n<|im_start|>assistant\n (causal splits, cached once), then the noise split
// <|vision_start|> + K latents + <|vision_end|>, recomputed at every step and never cached.
// The uncond branch drops s2 but keeps the conditional positions of its prefix (Lance's KV path);
// its noise block takes positions from get_rope_index over the caption-free sequence.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <vector>

#include "forward/forward.h"

namespace lq::fwd {

struct LatentGrid {
  int t = 1, h = 1, w = 1;
  int64_t tokens() const { return int64_t(t) * h * w; }
  std::array<int, 3> thw() const { return {t, h, w}; }
};

// Lance's limits on a latent grid: h, w < max_latent_size, t <= max_latent_frames (throws lq::Error).
void check_latent_grid(const LatentGrid& g, const model::ModelConfig& c);

// One sampler branch: the cached causal prefix and the positions of the noise block.
struct T2iBranch {
  std::vector<int32_t> prefix_ids;
  std::vector<Position3> prefix_positions;
  std::vector<Split> prefix_splits;
  std::vector<Position3> noise_positions;  // <|vision_start|>, K latents (raster f, r, c), <|vision_end|>
};

struct T2iPrompt {
  T2iBranch cond, uncond;
  LatentGrid grid;
  int32_t vision_start = 0, vision_end = 0;
};

// get_rope_index positions of a noise block whose <|vision_start|> sits at position `start`:
// latents at (b + 2f, b + r, b + c) with b = start + 1, <|vision_end|> at max + 1.
std::vector<Position3> noise_block_positions(int32_t start, const LatentGrid& g);

// Builds both branches from the token ids of the three causal splits.
// `consistent_uncond`: uncond prefix positions from the caption-free sequence (training-style)
// instead of Lance's inference behaviour (conditional positions kept).
T2iPrompt build_t2i_prompt(const std::vector<int32_t>& s1, const std::vector<int32_t>& s2,
                           const std::vector<int32_t>& s3, int32_t vision_start, int32_t vision_end,
                           const LatentGrid& grid, bool consistent_uncond = false);

// The noise chunk of a branch for latents x [K, latent_channels] at flow time tau.
Chunk noise_chunk(const Engine& e, const T2iBranch& b, int32_t vision_start, int32_t vision_end,
                  const LatentGrid& g, const float* x, double tau);
// Prefix + noise block as one sequence (no cache); the latent rows start at prefix_ids.size() + 1.
Chunk full_branch_chunk(const Engine& e, const T2iBranch& b, int32_t vision_start, int32_t vision_end,
                        const LatentGrid& g, const float* x, double tau);

struct SamplerOptions {
  int steps = 30;
  double shift = 3.5;
  double cfg_scale = 4.0;
  double cfg_min = 0.4, cfg_max = 1.0;  // CFG while cfg_min < tau' <= cfg_max
  // Called before each step's velocity evaluations (calibration tags activations with tau').
  std::function<void(int step, double tau)> on_step;
};

// tau'_i for i = 0..steps: linspace(1, 0, steps + 1) shifted by s tau / (1 + (s - 1) tau).
std::vector<double> shifted_taus(int steps, double shift);

// Holds the prefilled prefix caches of both branches; evaluates velocities and runs the sampler.
class T2iSampler {
 public:
  T2iSampler(const Engine& e, T2iPrompt prompt);
  // Conditioned generation (editing, forward/gen_sequence.h): each branch's prefix rows are given
  // (clean VAE condition rows on the gen path included) instead of the prompt's text prefix.
  T2iSampler(const Engine& e, T2iPrompt prompt, const Chunk& cond_prefix, const Chunk& uncond_prefix);
  // Velocity [K, latent_channels] of the cond (true) or uncond (false) branch.
  std::vector<float> velocity(bool cond, const float* x, double tau);
  // Runs the Euler sampler from `noise` [K, latent_channels]; returns the final latents.
  // `trajectory`, when given, receives steps + 1 snapshots (noise, then after each step).
  std::vector<float> sample(const std::vector<float>& noise, const SamplerOptions& o,
                            std::vector<float>* trajectory = nullptr);
  const T2iPrompt& prompt() const { return prompt_; }

 private:
  const Engine& e_;
  T2iPrompt prompt_;
  KvCache cond_cache_, uncond_cache_;
};

// CFG combination with Lance's global renorm: v = vu + s (vc - vu), v *= clamp(|vc| / (|v| + 1e-8), 0, 1).
std::vector<float> cfg_combine(const std::vector<float>& vc, const std::vector<float>& vu, double scale);

// Standard normal samples from a seed (SplitMix64 + Box-Muller; deterministic on every platform).
std::vector<float> normal_noise(uint64_t seed, int64_t n);

}  // namespace lq::fwd
