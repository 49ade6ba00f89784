// Native forward pass of the Lance LLM backbone: a hard-routed Mixture-of-Transformers decoder with
// an understanding ("und") and a generation ("gen", `_moe_gen`) weight set per layer, run over ONE
// packed sequence (see ../shared/docs/lance-architecture.md section 3).
//
// Pieces:
//   * LinearId / LinearWeights / ActivationObserver: the single interface every target linear goes
//     through. Later stages plug in here:
//       - calibration: Engine::set_observer(obs) -> obs->observe(id, x, n, in) sees the input rows
//         of each (layer, path, kind) linear before it runs (only the rows routed to that path;
//         q, k and v are observed separately although they share one input; every forward call,
//         so each sampler step's noise chunk is seen too, the cached prefix once);
//       - quantized weights: Engine::replace_linear(id, std::make_unique<MyInt4Linear>(...)) swaps
//         a dense linear for any implementation of LinearWeights::apply (its own kernel).
//   * Chunk: the rows to compute (input embeddings, per-row path, 3-D positions, split list).
//   * KvCache: K/V (after RoPE) of already computed prefix rows plus their split descriptors.
//   * Engine: weights + forward(chunk, cache, mode) + the heads (lm_head / llm2vae) and the gen
//     input embeddings (vae2llm + TimeEmb + 3-D sin-cos latent position table).
// Memory: the engine keeps the checkpoint's memory map open; weights whose source dtype equals the
// requested storage (F32 -> f32, BF16 -> bf16) are used in place (zero copy, page cache only),
// others are converted once into owned buffers. Norms and the small connectors are always f32.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/linear.h"
#include "model/config.h"
#include "model/spec.h"

namespace lq::io {
class TensorStore;
}

namespace lq::fwd {

// ---- identity of a linear -------------------------------------------------------------------

// Path and kind are the model map's (model/spec.h), so a LinearId means the same in every stage.
using Path = model::Path;              // Und = 0, Gen = 1
using LinearKind = model::LinearKind;  // Q, K, V, O, Gate, Up, Down
inline constexpr int kNumPaths = 2;
using model::kNumLinearKinds;

struct LinearId {
  int layer = 0;
  Path path = Path::Und;
  LinearKind kind = LinearKind::Q;
  bool operator==(const LinearId&) const = default;
};

// Checkpoint module name without ".weight", e.g. "language_model.model.layers.3.self_attn.q_proj_moe_gen"
// (Lance naming; the same string model::ModelSpec lists as LinearSpec::name).
std::string linear_module_name(const LinearId& id);

// ---- the linear interface -------------------------------------------------------------------

// y[n, out] = x[n, in] W^T (+ bias). Implementations must be safe to call concurrently from
// different threads on different data (apply is const) and may thread internally.
class LinearWeights {
 public:
  virtual ~LinearWeights() = default;
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
  virtual void apply(const float* x, int64_t n, float* y) const = 0;
  // Bytes of weight data read per full application (for bandwidth reports).
  virtual uint64_t weight_bytes() const = 0;
};

// A dense matrix, f32 or bf16, either owned or borrowed from a memory map (zero copy), plus an
// optional f32 bias. Runs through kernels::linear.
class DenseLinear final : public LinearWeights {
 public:
  DenseLinear(kernels::DenseMatrix w, std::vector<uint8_t> owned_storage, std::vector<float> bias);
  int64_t in_features() const override { return w_.cols; }
  int64_t out_features() const override { return w_.rows; }
  void apply(const float* x, int64_t n, float* y) const override;
  uint64_t weight_bytes() const override;
  const kernels::DenseMatrix& matrix() const { return w_; }
  const std::vector<float>& bias() const { return bias_; }
  // Row r of the weight as f32 (used for the embedding lookup).
  void row_f32(int64_t r, float* out) const;

 private:
  kernels::DenseMatrix w_;
  std::vector<uint8_t> storage_;  // empty when borrowed from the memory map
  std::vector<float> bias_;
};

// Sees the input rows of every target linear just before it is applied (calibration capture).
// Called from the engine's calling thread only, never concurrently.
class ActivationObserver {
 public:
  virtual ~ActivationObserver() = default;
  // x: [n, in_features] row-major; only the rows routed to id.path.
  virtual void observe(const LinearId& id, const float* x, int64_t n, int64_t in_features) = 0;
};

// Rows per block of the decoder MLP (default 256; raised to kernels::kGemmMinTokens and above
// kernels::q4_int8_max_tokens(), so the kernels take the path they take unblocked): bounds its
// [rows, intermediate] buffers; results are bit-identical for any value (tests change it). Not for
// use while a forward runs.
void set_mlp_block_rows(int64_t rows);

// ---- sequences ------------------------------------------------------------------------------

// Attention mode of a split (Lance's split_modes): causal text, bidirectional full block (ViT or
// clean VAE), or noise block (bidirectional, invisible to every row outside it).
enum class SplitMode : int32_t { Causal = 0, Full = 1, Noise = 2 };
struct Split {
  int64_t len = 0;
  SplitMode mode = SplitMode::Causal;
};

using Position3 = std::array<int32_t, 3>;  // (t, h, w) M-RoPE position

// Rows to run through the decoder. All vectors have rows() entries; the splits cover the rows.
struct Chunk {
  std::vector<float> embeddings;   // [L, hidden] input rows (token embeddings / latent embeddings)
  std::vector<Path> paths;         // routing of each row
  std::vector<Position3> positions;
  std::vector<Split> splits;
  int64_t rows() const { return static_cast<int64_t>(paths.size()); }
};

// K/V after RoPE of computed prefix rows, per layer, [rows, kv_heads * head_dim], and the splits
// those rows belong to. Noise splits are never appended (the sampler recomputes them every step).
class KvCache {
 public:
  int64_t rows() const { return rows_; }
  const std::vector<Split>& splits() const { return splits_; }
  void clear();

 private:
  friend class Engine;
  std::vector<std::vector<float>> k_, v_;
  std::vector<Split> splits_;
  int64_t rows_ = 0;
};

enum class CacheWrite { No, Append };

// ---- the engine -----------------------------------------------------------------------------

enum class WeightStorage { F32, BF16 };

// Supplies a target linear itself (quantized checkpoints), or returns nullptr to load "<name>.weight".
using LinearFactory = std::function<std::unique_ptr<LinearWeights>(const model::LinearSpec&)>;

// How the lm_head runs (LoadOptions::head).
//   Stored: as the checkpoint holds it, in `storage` (quantized checkpoints keep it in bf16, as
//           AutoAWQ and compressed-tensors do).
//   Int4:   quantized at load time to asymmetric INT4 g64 by round-to-nearest (bf16 scales) and run
//           by the fused 4-bit kernel: the head is the largest single matrix (vocab x hidden, 0.62 GB
//           in bf16 at Lance's size) and decoding reads it whole for every token. An opt-in
//           trade of a little accuracy for speed, like llama.cpp's quantized output tensor.
//   Int8:   quantized at load time to symmetric INT8 g64 by round-to-nearest (bf16 scales; 8.25 bits
//           per weight) and run by the fused 8-bit kernel (kernels/q8.h): half the bytes of bf16, far
//           less error than Int4 (llama.cpp keeps its output tensor at Q6_K / Q8_0 for that reason).
enum class HeadFormat { Stored, Int4, Int8 };
HeadFormat parse_head_format(const std::string& text);  // "stored" | "bf16" (= stored) | "int4" | "int8"

struct LoadOptions {
  WeightStorage storage = WeightStorage::F32;
  int num_layers = -1;  // load only the first N layers (benchmarks); -1 = all
  // Set by fwd::load_quantized (forward/quant_linear.h), which validates the checkpoint itself: with
  // a factory the model map is the one the config implies and the store is `weights_file`.
  LinearFactory linear_factory;
  std::string weights_file;
  // Streaming: forward() releases each layer's mapped pages as soon as that layer has run (they leave
  // this process's resident set; the page cache keeps them while memory allows), so a forward over a
  // checkpoint larger than RAM holds about one layer of borrowed weights. A later read faults them back.
  bool release_layer_pages = false;
  HeadFormat head = HeadFormat::Stored;
};

class Engine {
 public:
  // Loads every tensor the forward needs from a model directory. With f32 storage and an F32
  // source the weights are used in place from the memory map (no copy).
  static Engine load(const std::string& model_dir, const LoadOptions& opts = {});
  Engine(Engine&&) noexcept;
  Engine& operator=(Engine&&) noexcept;
  ~Engine();

  const model::ModelConfig& config() const;
  // The validated model map of the checkpoint (names, shapes, fusion pairs of every target).
  const model::ModelSpec& spec() const;
  const model::LinearSpec& linear_spec(const LinearId& id) const;  // its checkpoint name, shape
  int num_layers() const;  // layers actually loaded
  WeightStorage storage() const;

  // The one interface all 14 x layers target linears go through.
  const LinearWeights& linear(const LinearId& id) const;
  void replace_linear(const LinearId& id, std::unique_ptr<LinearWeights> w);
  void set_observer(ActivationObserver* obs);  // nullptr disables

  // Inputs.
  void embed_tokens(const int32_t* ids, int64_t n, float* out) const;  // out [n, hidden]
  std::vector<float> time_embedding(double tau) const;                 // [hidden]
  // x: [t*h*w, latent_channels] raster (f, r, c) order; returns [t*h*w, hidden].
  std::vector<float> latent_embeddings(const float* x, std::array<int, 3> grid_thw, double tau) const;

  // Runs the decoder over `chunk`, attending to the rows in `cache` (may be null) then to itself
  // under the split mask. Returns the routed final norm of every row, [L, hidden]. With
  // CacheWrite::Append the chunk's K/V and splits are appended to `cache`. `layer_states`, when
  // given, receives the residual stream [num_layers + 1, L, hidden] (index 0 = input).
  std::vector<float> forward(const Chunk& chunk, KvCache* cache, CacheWrite write,
                             std::vector<float>* layer_states = nullptr) const;

  // Runs decoder layer `layer` alone over the residual rows x [L, hidden] of `chunk` (updated in place),
  // without a cache: the chunk's paths, positions and splits are used, its embeddings ignored. The same
  // code path as forward() (layer-by-layer quantization feeds each layer's output to the next).
  // `attn_out`, when given, receives the attention block's output (o_proj's, before the residual add).
  void forward_layer(int layer, const Chunk& chunk, float* x, std::vector<float>* attn_out = nullptr) const;
  // Only the attention block of `layer` on the residual rows x (not modified): o_proj's output into
  // `attn_out` [L, hidden], skipping the MLP (AWQ's q,k,v search evaluates this ~20 times per layer).
  void attention_output(int layer, const Chunk& chunk, const float* x, std::vector<float>& attn_out) const;

  // Releases the memory-map pages of layer `layer`'s tensors (streaming quantization never reads a
  // finished layer again; a later read faults the pages back in).
  void drop_layer_pages(int layer) const;

  // Heads on final-normed rows: lm_head [n, vocab_size] and llm2vae [n, latent_channels].
  std::vector<float> logits(const float* normed, int64_t n) const;
  std::vector<float> velocity(const float* normed, int64_t n) const;

  // Weight bytes read by one pass over every layer's linears (decode bandwidth estimate).
  uint64_t layer_weight_bytes() const;

 struct Impl;  // opaque: defined in forward.cpp

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  void run_layer_part(int layer, const Chunk& chunk, float* x, std::vector<float>* attn_out, bool attention_only) const;
  std::unique_ptr<Impl> impl_;
};

// Builds a chunk of token rows (all und) with the given positions and splits.
Chunk text_chunk(const Engine& e, const std::vector<int32_t>& ids, const std::vector<Position3>& pos,
                 const std::vector<Split>& splits);
// Positions start, start+1, ... on all three axes (plain text).
std::vector<Position3> text_positions(int64_t n, int32_t start = 0);

}  // namespace lq::fwd
