// The model map: which tensors a checkpoint must hold, which linears are quantization targets, how
// AWQ-style input scales fold into the op before each target, and what stays high precision.
//
// Two architectures are recognised:
//   * Lance MoT: every decoder layer has an understanding ("und") set of weights and a generation
//     twin ("gen", `_moe_gen`), plus the Lance globals (time_embedder, vae2llm, llm2vae,
//     latent_pos_embed, norm_moe_gen). `vit_model.*` tensors (Lance_3B_Video) are allowed and kept.
//   * plain Qwen2: one path, no gen twins, no Lance globals (HF names `model.*`, or Lance-style
//     `language_model.model.*`; q/k norms optional, lm_head optional when tied).
//
// All names come from one table of linear kinds (kLinearKinds in spec.cpp) and one of per-layer
// norms; nothing is spelled out per layer or per path in code.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace lq::io {
class TensorStore;
}

namespace lq::model {

enum class Arch { LanceMoT, Qwen2 };
enum class Path { Und = 0, Gen = 1 };
enum class LinearKind { Q = 0, K, V, O, Gate, Up, Down };
inline constexpr int kNumLinearKinds = 7;
inline constexpr std::array<LinearKind, kNumLinearKinds> kAllLinearKinds = {
    LinearKind::Q, LinearKind::K, LinearKind::V, LinearKind::O, LinearKind::Gate, LinearKind::Up, LinearKind::Down};

const char* arch_name(Arch a);          // "lance-mot", "qwen2"
const char* path_name(Path p);          // "und", "gen"
const char* linear_kind_name(LinearKind k);  // "q_proj", ..., "down_proj"

// What a tensor is for. Everything except LinearWeight stays high precision.
enum class TensorRole {
  LinearWeight, LinearBias, LayerNorm, QKNorm, Embedding, LmHead, FinalNorm,
  TimeEmbedder, Connector /* vae2llm, llm2vae */, LatentPosEmbed, Vit
};
const char* tensor_role_name(TensorRole r);

struct TensorSpec {
  std::string name;            // full tensor name, e.g. "...q_proj.weight"
  std::vector<int64_t> shape;
  TensorRole role;
  int64_t numel() const;
};

// One quantization target.
struct LinearSpec {
  std::string name;  // base name without ".weight", e.g. "language_model.model.layers.3.mlp_moe_gen.up_proj"
  Path path = Path::Und;
  LinearKind kind = LinearKind::Q;
  int layer = 0;
  int64_t out = 0, in = 0;
  bool has_bias = false;
  std::string weight_name() const { return name + ".weight"; }
  std::string bias_name() const { return has_bias ? name + ".bias" : std::string(); }
  int64_t numel() const { return out * in; }
};

// One path's tensors in one decoder layer (full tensor names, including ".weight").
struct PathLayerSpec {
  std::string input_layernorm, post_attention_layernorm;
  std::string q_norm, k_norm;  // empty when the checkpoint has no qk-norm (plain Qwen2)
  std::array<LinearSpec, kNumLinearKinds> linears;  // indexed by LinearKind
  const LinearSpec& linear(LinearKind k) const { return linears[size_t(k)]; }
};

struct LayerSpec {
  int index = 0;
  std::vector<PathLayerSpec> paths;  // indexed by Path: [und] or [und, gen]
  bool has(Path p) const { return size_t(p) < paths.size(); }
  const PathLayerSpec& path(Path p) const;  // throws when the path is absent
};

// An exact scale fold: the targets' input channel c is multiplied by s[scale_index(c)] and the
// previous op's output channel j is divided by s[j] (norm weight, or rows + bias of a linear).
enum class FusionKind { NormToLinears, VToO, UpToDown };
const char* fusion_kind_name(FusionKind k);

struct FusionPair {
  FusionKind kind = FusionKind::NormToLinears;
  Path path = Path::Und;
  int layer = 0;
  // Tensors that absorb 1/s: the norm's weight, or the linear's weight rows (and its bias).
  std::vector<std::string> prev_tensors;
  std::vector<std::string> targets;  // base names (LinearSpec::name) whose input columns absorb s
  std::vector<LinearKind> target_kinds;
  int64_t num_scales = 0;  // length of s (the previous op's output width)
  int64_t target_in = 0;   // input width of the targets
  // GQA structure (VToO only): o_proj input channel c = h*head_dim + d of query head h uses the scale
  // of value channel (h / heads_per_group)*head_dim + d, i.e. each KV head's scales are shared by its
  // heads_per_group = num_heads/num_kv_heads query heads. 1 / 0 for the other kinds (identity map).
  int heads_per_group = 1;
  int head_dim = 0;
  // VToO of a two-path (MoT) layer: the shared attention mixes the V rows of BOTH paths into every
  // query's output (gen queries read the und prefix; the noise block's und marker rows read gen
  // latents), so o_proj of either path sees values from both v_projs. The fold is exact only with
  // one s for both paths: v and v_moe_gen rows divided by s, o and o_moe_gen columns multiplied by s.
  // Searches treat the pair and its ModelSpec::tied_partner as one.
  bool tied_across_paths = false;
  int64_t scale_index(int64_t target_channel) const;
};

struct ModelSpec {
  Arch arch = Arch::LanceMoT;
  ModelConfig config;
  std::vector<LayerSpec> layers;
  std::vector<LinearSpec> linears;  // every target: layer-major, und before gen, then LinearKind order
  std::vector<FusionPair> fusions;  // per layer and path: input norm, v->o, post norm, up->down
  std::vector<TensorSpec> tensors;  // every tensor, canonical order (what synth writes, then any ViT)
  std::vector<TensorSpec> kept;     // tensors that stay high precision (all but target weights/biases)
  bool has_vit = false;

  int num_paths() const { return arch == Arch::LanceMoT ? 2 : 1; }
  // The other path's pair of a tied fold (same layer and kind), or nullptr.
  const FusionPair* tied_partner(const FusionPair& f) const;
  int64_t target_weights() const;   // sum of out*in over the targets
  int num_targets(Path p) const;
  const LinearSpec* find_linear(const std::string& base_name) const;  // nullptr when absent
};

// The spec a config implies, without looking at any tensors (synth uses it to know what to write).
// Lance names for LanceMoT; HF Qwen2 names (`model.*`, no qk-norm, lm_head unless tied) for Qwen2.
ModelSpec expected_spec(const ModelConfig& config, Arch arch);

// Decoder layers present in tensor names (1 + the largest N of "model.layers.N."; ViT blocks excluded).
int count_layers(const std::vector<std::string>& names);
// Refuses a config whose num_hidden_layers differs from the layers the tensors hold (run before any
// per-layer structure is sized by the config, so 1e9 layers is an error, not an allocation).
void check_layer_count(const ModelConfig& config, const std::vector<std::string>& names, const std::string& where);

// Recognises the architecture of `store` and validates it strictly against `config`: every expected
// tensor present with the shape the config implies and nothing unexpected (`vit_model.*` allowed for
// Lance and listed as kept). Throws ONE lq::Error counting everything missing, unexpected or mis-shaped
// and naming the first few of each.
ModelSpec build_spec(const ModelConfig& config, const io::TensorStore& store);

}  // namespace lq::model
