// Synthetic Lance-structured checkpoints: exact tensor names and shapes (from expected_spec), weights
// random but deterministic from a seed, written by streaming (bounded memory for any size).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/spec.h"

namespace lq::model {

struct SynthPreset {
  std::string name;
  std::string summary;
  ModelConfig config;  // vocab_size 0 = rounded up from the tokenizer's size to a multiple of 64
  std::array<int, 3> t2i_latent_grid{1, 8, 8};  // written to lance_config.json
};
const std::vector<SynthPreset>& synth_presets();
const SynthPreset& find_synth_preset(const std::string& name);  // throws listing the known names

struct SynthOptions {
  std::string preset = "tiny";
  std::string out_dir;
  io::DType dtype = io::DType::F32;  // F32 or BF16
  uint64_t seed = 0;
  std::string tokenizer_dir;  // copy this tokenizer; empty = generate a small byte-level BPE
  bool force = false;         // allow a non-empty out_dir (our files in it are replaced)
  int layers = 0;             // 0 = the preset's; fewer keep every shape (quick memory / speed proxies)
  std::function<void(uint64_t bytes_done, uint64_t bytes_total)> progress;  // optional
};

struct SynthResult {
  ModelConfig config;
  std::vector<std::string> files;  // written, relative to out_dir
  int num_tensors = 0;
  uint64_t safetensors_bytes = 0;  // size of model.safetensors
  uint64_t total_bytes = 0;        // all files
  double seconds = 0;
};

SynthResult synthesize(const SynthOptions& options);

// The weight recipe of one tensor (see the comment block in synth.cpp). Any element range can be
// generated independently and gives the same values, whatever the chunking or thread count.
class TensorSynth {
 public:
  TensorSynth(const TensorSpec& tensor, const ModelConfig& config, uint64_t seed);
  // Fills out[0 .. end-begin) with the flat (row-major) elements [begin, end).
  void fill(int64_t begin, int64_t end, float* out) const;
  const TensorSpec& tensor() const { return tensor_; }

 private:
  enum class Kind { Gaussian, NormWeight, PosTable };
  void fill_pos_table(int64_t begin, int64_t end, float* out) const;
  TensorSpec tensor_;
  Kind kind_ = Kind::Gaussian;
  uint64_t key_ = 0;
  float mean_ = 0, std_ = 1;
  int64_t cols_ = 1;
  std::vector<float> col_scale_;   // per input column (linear weights): heavy-tailed columns
  std::vector<float> channel_set_; // per channel override (norm outlier channels), 0 = none
  int pos_grid_ = 64;              // latent table: positions per spatial axis
};

// Counter-based normal-ish variate: Irwin-Hall sum of four 16-bit uniforms from one splitmix64 hash
// of (key, index), rescaled to unit variance (support +-3.46). Exposed for tests.
float synth_normal(uint64_t key, uint64_t index);
uint64_t synth_hash(uint64_t key, uint64_t index);

}  // namespace lq::model
