// Activation statistics of the target linears' inputs, accumulated per input channel:
// sum |x|, sum x^2, max |x| and the row count, optionally per tau bucket (generation path) and the
// second-moment matrix X^T X. Sums are float64 so that merging shards is associative to ~1e-15.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lq::calib {

// Tau buckets for generation-path statistics: bucket b covers [b/B, (b+1)/B) of the shifted flow time.
constexpr int kTauBuckets = 10;
int tau_bucket(float tau);

struct ChannelStats {
  int64_t count = 0;
  std::vector<double> sum_abs, sum_sq;
  std::vector<float> max_abs;

  explicit ChannelStats(int64_t width = 0);
  int64_t width() const { return int64_t(sum_abs.size()); }
  void add_rows(const float* x, int64_t rows, int64_t width);
  void merge(const ChannelStats& other);
  std::vector<float> mean_abs() const;
  std::vector<float> mean_sq() const;
};

struct LinearStats {
  ChannelStats all;
  std::vector<ChannelStats> by_tau;   // kTauBuckets entries for gen linears that saw latents; else empty
  std::vector<double> xtx;            // width x width, row-major; empty unless --hessian
  void add_rows(const float* x, int64_t rows, int64_t width, float tau /* <0: not a latent row */, bool hessian);
  void merge(const LinearStats& other);
};

// All statistics of one calibration run (or a merge of several), keyed by target linear base name
// (e.g. "language_model.model.layers.0.self_attn.q_proj_moe_gen").
struct StatsFile {
  std::string model_fingerprint;          // hash of config + tensor names and shapes
  std::vector<std::string> data_sources;  // one entry per input: "kind:sha-like digest:name", sorted
  std::map<std::string, LinearStats> linears;
  std::map<std::string, std::string> extra_metadata;

  void save(const std::string& path) const;  // safetensors, atomic
  static StatsFile load(const std::string& path);
  // Token-weighted, associative merge. Throws naming both files if the model fingerprints differ.
  void merge(const StatsFile& other, const std::string& other_name);
};

// Stable 64-bit FNV-1a digest, hex encoded.
std::string digest_hex(const std::string& bytes);

}  // namespace lq::calib
