#include "forward/t2i.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "io/error.h"

namespace lq::fwd {

void check_latent_grid(const LatentGrid& g, const model::ModelConfig& c) {
  const std::string grid = std::to_string(g.t) + "x" + std::to_string(g.h) + "x" + std::to_string(g.w);
  if (g.t < 1 || g.h < 1 || g.w < 1) fail("latent grid", grid + ": every dimension must be >= 1");
  if (g.h >= c.max_latent_size || g.w >= c.max_latent_size)
    fail("latent grid", grid + ": h and w must be < " + std::to_string(c.max_latent_size) + " (max_latent_size)");
  if (g.t > c.max_latent_frames)
    fail("latent grid", grid + ": t must be <= " + std::to_string(c.max_latent_frames) + " (max_num_latent_frames)");
}

std::vector<Position3> noise_block_positions(int32_t start, const LatentGrid& g) {
  std::vector<Position3> p;
  p.reserve(size_t(g.tokens() + 2));
  p.push_back({start, start, start});
  const int32_t b = start + 1;
  for (int f = 0; f < g.t; ++f)
    for (int r = 0; r < g.h; ++r)
      for (int c = 0; c < g.w; ++c) p.push_back({b + 2 * f, b + r, b + c});
  const int32_t end = b + std::max({2 * (g.t - 1), g.h - 1, g.w - 1}) + 1;
  p.push_back({end, end, end});
  return p;
}

namespace {

void append_text(T2iBranch& b, const std::vector<int32_t>& ids, int32_t start) {
  b.prefix_ids.insert(b.prefix_ids.end(), ids.begin(), ids.end());
  const auto pos = text_positions(int64_t(ids.size()), start);
  b.prefix_positions.insert(b.prefix_positions.end(), pos.begin(), pos.end());
  b.prefix_splits.push_back({int64_t(ids.size()), SplitMode::Causal});
}

}  // namespace

T2iPrompt build_t2i_prompt(const std::vector<int32_t>& s1, const std::vector<int32_t>& s2,
                           const std::vector<int32_t>& s3, int32_t vision_start, int32_t vision_end,
                           const LatentGrid& grid, bool consistent_uncond) {
  if (s1.empty() || s2.empty() || s3.empty()) fail("t2i prompt", "system, caption and assistant splits must be non-empty");
  T2iPrompt p;
  p.grid = grid;
  p.vision_start = vision_start;
  p.vision_end = vision_end;
  const int32_t n1 = int32_t(s1.size()), n2 = int32_t(s2.size()), n3 = int32_t(s3.size());
  append_text(p.cond, s1, 0);
  append_text(p.cond, s2, n1);
  append_text(p.cond, s3, n1 + n2);
  p.cond.noise_positions = noise_block_positions(n1 + n2 + n3, grid);
  append_text(p.uncond, s1, 0);
  append_text(p.uncond, s3, consistent_uncond ? n1 : n1 + n2);
  p.uncond.noise_positions = noise_block_positions(n1 + n3, grid);
  return p;
}

Chunk noise_chunk(const Engine& e, const T2iBranch& b, int32_t vision_start, int32_t vision_end, const LatentGrid& g,
                  const float* x, double tau) {
  const int64_t K = g.tokens(), H = e.config().hidden_size;
  Chunk c;
  c.embeddings.resize(size_t((K + 2) * H));
  e.embed_tokens(&vision_start, 1, c.embeddings.data());
  const std::vector<float> lat = e.latent_embeddings(x, g.thw(), tau);
  std::copy(lat.begin(), lat.end(), c.embeddings.begin() + H);
  e.embed_tokens(&vision_end, 1, c.embeddings.data() + (K + 1) * H);
  c.paths.assign(size_t(K + 2), Path::Gen);
  c.paths.front() = c.paths.back() = Path::Und;  // the markers are text tokens
  c.positions = b.noise_positions;
  c.splits = {{K + 2, SplitMode::Noise}};
  return c;
}

Chunk full_branch_chunk(const Engine& e, const T2iBranch& b, int32_t vision_start, int32_t vision_end,
                        const LatentGrid& g, const float* x, double tau) {
  Chunk c = text_chunk(e, b.prefix_ids, b.prefix_positions, b.prefix_splits);
  const Chunk n = noise_chunk(e, b, vision_start, vision_end, g, x, tau);
  c.embeddings.insert(c.embeddings.end(), n.embeddings.begin(), n.embeddings.end());
  c.paths.insert(c.paths.end(), n.paths.begin(), n.paths.end());
  c.positions.insert(c.positions.end(), n.positions.begin(), n.positions.end());
  c.splits.insert(c.splits.end(), n.splits.begin(), n.splits.end());
  return c;
}

std::vector<double> shifted_taus(int steps, double shift) {
  if (steps < 1) fail("sampler", "steps must be >= 1");
  std::vector<double> t(size_t(steps + 1));
  for (int i = 0; i <= steps; ++i) {
    const double lin = 1.0 - double(i) / steps;
    t[i] = shift * lin / (1.0 + (shift - 1.0) * lin);
  }
  return t;
}

T2iSampler::T2iSampler(const Engine& e, T2iPrompt prompt) : e_(e), prompt_(std::move(prompt)) {
  check_latent_grid(prompt_.grid, e.config());
  for (auto [branch, cache] : {std::pair{&prompt_.cond, &cond_cache_}, std::pair{&prompt_.uncond, &uncond_cache_}}) {
    const Chunk c = text_chunk(e, branch->prefix_ids, branch->prefix_positions, branch->prefix_splits);
    e.forward(c, cache, CacheWrite::Append);
  }
}

T2iSampler::T2iSampler(const Engine& e, T2iPrompt prompt, const Chunk& cond_prefix, const Chunk& uncond_prefix)
    : e_(e), prompt_(std::move(prompt)) {
  check_latent_grid(prompt_.grid, e.config());
  e.forward(cond_prefix, &cond_cache_, CacheWrite::Append);
  e.forward(uncond_prefix, &uncond_cache_, CacheWrite::Append);
}

std::vector<float> T2iSampler::velocity(bool cond, const float* x, double tau) {
  const T2iBranch& b = cond ? prompt_.cond : prompt_.uncond;
  const Chunk c = noise_chunk(e_, b, prompt_.vision_start, prompt_.vision_end, prompt_.grid, x, tau);
  const std::vector<float> normed = e_.forward(c, cond ? &cond_cache_ : &uncond_cache_, CacheWrite::No);
  return e_.velocity(normed.data() + e_.config().hidden_size, prompt_.grid.tokens());
}

namespace {
double l2(const std::vector<float>& v) {
  double s = 0;
  for (float f : v) s += double(f) * f;
  return std::sqrt(s);
}
}  // namespace

std::vector<float> cfg_combine(const std::vector<float>& vc, const std::vector<float>& vu, double scale) {
  std::vector<float> v(vc.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = vu[i] + float(scale) * (vc[i] - vu[i]);
  const double ratio = std::clamp(l2(vc) / (l2(v) + 1e-8), 0.0, 1.0);
  for (float& f : v) f = float(f * ratio);
  return v;
}

std::vector<float> T2iSampler::sample(const std::vector<float>& noise, const SamplerOptions& o,
                                      std::vector<float>* trajectory) {
  const int64_t n = prompt_.grid.tokens() * e_.config().latent_channels;
  if (int64_t(noise.size()) != n)
    fail("sampler", "noise has " + std::to_string(noise.size()) + " values, expected " + std::to_string(n));
  const std::vector<double> taus = shifted_taus(o.steps, o.shift);
  std::vector<float> x = noise;
  if (trajectory) trajectory->assign(x.begin(), x.end());
  for (int i = 0; i < o.steps; ++i) {
    const double tau = taus[i];
    if (o.on_step) o.on_step(i, tau);
    std::vector<float> v = velocity(true, x.data(), tau);
    if (o.cfg_scale != 1.0 && tau > o.cfg_min && tau <= o.cfg_max)
      v = cfg_combine(v, velocity(false, x.data(), tau), o.cfg_scale);
    const float dt = float(taus[i] - taus[i + 1]);
    for (int64_t j = 0; j < n; ++j) x[j] -= v[j] * dt;
    if (trajectory) trajectory->insert(trajectory->end(), x.begin(), x.end());
  }
  return x;
}

std::vector<float> normal_noise(uint64_t seed, int64_t n) {
  uint64_t state = seed;
  auto next = [&state] {  // SplitMix64
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  auto uniform = [&next] { return (double(next() >> 11) + 0.5) * 0x1.0p-53; };  // (0, 1)
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i += 2) {
    const double r = std::sqrt(-2.0 * std::log(uniform())), a = 2.0 * M_PI * uniform();
    out[i] = float(r * std::cos(a));
    if (i + 1 < n) out[i + 1] = float(r * std::sin(a));
  }
  return out;
}

}  // namespace lq::fwd
