#include "model/spec.h"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "io/error.h"
#include "io/safetensors.h"

namespace lq::model {

namespace {

// Sizes a tensor dimension can take, resolved against a ModelConfig.
enum class Dim { Hidden, QWidth /* heads*head_dim */, KVWidth /* kv_heads*head_dim */, Inter, HeadDim };

int64_t resolve(Dim d, const ModelConfig& c) {
  switch (d) {
    case Dim::Hidden: return c.hidden_size;
    case Dim::QWidth: return int64_t(c.num_heads) * c.head_dim;
    case Dim::KVWidth: return int64_t(c.num_kv_heads) * c.head_dim;
    case Dim::Inter: return c.intermediate_size;
    case Dim::HeadDim: return c.head_dim;
  }
  return 0;
}

// One row per linear kind: its name inside a decoder layer on each path and its [out, in] shape.
// Attention twins suffix the leaf (`q_proj_moe_gen`); the MLP twin suffixes the module (`mlp_moe_gen`).
struct LinearKindRow {
  LinearKind kind;
  const char* short_name;
  const char* und;
  const char* gen;
  Dim out, in;
  bool bias;
};
constexpr LinearKindRow kLinearKinds[kNumLinearKinds] = {
    {LinearKind::Q, "q_proj", "self_attn.q_proj", "self_attn.q_proj_moe_gen", Dim::QWidth, Dim::Hidden, true},
    {LinearKind::K, "k_proj", "self_attn.k_proj", "self_attn.k_proj_moe_gen", Dim::KVWidth, Dim::Hidden, true},
    {LinearKind::V, "v_proj", "self_attn.v_proj", "self_attn.v_proj_moe_gen", Dim::KVWidth, Dim::Hidden, true},
    {LinearKind::O, "o_proj", "self_attn.o_proj", "self_attn.o_proj_moe_gen", Dim::Hidden, Dim::QWidth, false},
    {LinearKind::Gate, "gate_proj", "mlp.gate_proj", "mlp_moe_gen.gate_proj", Dim::Inter, Dim::Hidden, false},
    {LinearKind::Up, "up_proj", "mlp.up_proj", "mlp_moe_gen.up_proj", Dim::Inter, Dim::Hidden, false},
    {LinearKind::Down, "down_proj", "mlp.down_proj", "mlp_moe_gen.down_proj", Dim::Hidden, Dim::Inter, false},
};

// Per-layer norms, same idea. `qk` marks the optional q/k norms.
enum class NormField { Input, Post, Q, K };
struct NormRow {
  NormField field;
  const char* und;
  const char* gen;
  Dim size;
  bool qk;
};
constexpr NormRow kLayerNorms[] = {
    {NormField::Input, "input_layernorm", "input_layernorm_moe_gen", Dim::Hidden, false},
    {NormField::Q, "self_attn.q_norm", "self_attn.q_norm_moe_gen", Dim::HeadDim, true},
    {NormField::K, "self_attn.k_norm", "self_attn.k_norm_moe_gen", Dim::HeadDim, true},
    {NormField::Post, "post_attention_layernorm", "post_attention_layernorm_moe_gen", Dim::Hidden, false},
};

// How a checkpoint spells the shared parts of its names.
struct Naming {
  std::string prefix;  // "language_model." (Lance) or "" (HF Qwen2)
  bool qk_norm = true;
  bool lm_head = true;
};

Naming default_naming(const ModelConfig& c, Arch arch) {
  if (arch == Arch::LanceMoT) return {"language_model.", true, true};
  return {"", false, !c.tie_word_embeddings};
}

std::string layer_prefix(const Naming& n, int layer) {
  return n.prefix + "model.layers." + std::to_string(layer) + ".";
}

std::string& norm_slot(PathLayerSpec& p, NormField f) {
  switch (f) {
    case NormField::Input: return p.input_layernorm;
    case NormField::Post: return p.post_attention_layernorm;
    case NormField::Q: return p.q_norm;
    case NormField::K: return p.k_norm;
  }
  return p.input_layernorm;
}

// Builds one path of one layer, appending its tensors (in canonical order) to `tensors`.
PathLayerSpec make_path_layer(const ModelConfig& c, const Naming& n, int layer, Path path,
                              std::vector<TensorSpec>& tensors) {
  const bool gen = path == Path::Gen;
  const std::string lp = layer_prefix(n, layer);
  PathLayerSpec p;
  for (const auto& row : kLayerNorms) {
    if (row.qk && !n.qk_norm) continue;
    norm_slot(p, row.field) = lp + (gen ? row.gen : row.und) + ".weight";
  }
  for (const auto& row : kLinearKinds) {
    LinearSpec& l = p.linears[size_t(row.kind)];
    l.name = lp + (gen ? row.gen : row.und);
    l.path = path;
    l.kind = row.kind;
    l.layer = layer;
    l.out = resolve(row.out, c);
    l.in = resolve(row.in, c);
    l.has_bias = row.bias;
  }
  // Canonical order: input norm, q/k/v (+bias), q/k norms, o, post norm, MLP.
  auto add_linear = [&](LinearKind k) {
    const LinearSpec& l = p.linear(k);
    tensors.push_back({l.weight_name(), {l.out, l.in}, TensorRole::LinearWeight});
    if (l.has_bias) tensors.push_back({l.bias_name(), {l.out}, TensorRole::LinearBias});
  };
  tensors.push_back({p.input_layernorm, {c.hidden_size}, TensorRole::LayerNorm});
  for (auto k : {LinearKind::Q, LinearKind::K, LinearKind::V}) add_linear(k);
  if (n.qk_norm) {
    tensors.push_back({p.q_norm, {c.head_dim}, TensorRole::QKNorm});
    tensors.push_back({p.k_norm, {c.head_dim}, TensorRole::QKNorm});
  }
  add_linear(LinearKind::O);
  tensors.push_back({p.post_attention_layernorm, {c.hidden_size}, TensorRole::LayerNorm});
  for (auto k : {LinearKind::Gate, LinearKind::Up, LinearKind::Down}) add_linear(k);
  return p;
}

FusionPair make_fusion(FusionKind kind, const PathLayerSpec& p, std::vector<std::string> prev,
                       std::initializer_list<LinearKind> targets, int64_t num_scales) {
  FusionPair f;
  f.kind = kind;
  f.path = p.linear(LinearKind::Q).path;
  f.layer = p.linear(LinearKind::Q).layer;
  f.prev_tensors = std::move(prev);
  for (auto k : targets) {
    f.targets.push_back(p.linear(k).name);
    f.target_kinds.push_back(k);
  }
  f.num_scales = num_scales;
  f.target_in = p.linear(*targets.begin()).in;
  return f;
}

// The four exact folds of one path of one layer.
void add_fusions(const ModelConfig& c, const PathLayerSpec& p, bool two_paths, std::vector<FusionPair>& out) {
  const LinearSpec& v = p.linear(LinearKind::V);
  const LinearSpec& up = p.linear(LinearKind::Up);
  out.push_back(make_fusion(FusionKind::NormToLinears, p, {p.input_layernorm},
                            {LinearKind::Q, LinearKind::K, LinearKind::V}, c.hidden_size));
  FusionPair vo = make_fusion(FusionKind::VToO, p, {v.weight_name(), v.bias_name()}, {LinearKind::O}, v.out);
  vo.heads_per_group = c.num_heads / c.num_kv_heads;
  vo.head_dim = c.head_dim;
  vo.tied_across_paths = two_paths;
  out.push_back(std::move(vo));
  out.push_back(make_fusion(FusionKind::NormToLinears, p, {p.post_attention_layernorm},
                            {LinearKind::Gate, LinearKind::Up}, c.hidden_size));
  out.push_back(make_fusion(FusionKind::UpToDown, p, {up.weight_name()}, {LinearKind::Down}, up.out));
}

void add_globals_front(const ModelConfig& c, const Naming& n, std::vector<TensorSpec>& t) {
  t.push_back({n.prefix + "model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, TensorRole::Embedding});
}

void add_globals_back(const ModelConfig& c, const Naming& n, Arch arch, std::vector<TensorSpec>& t) {
  const int64_t h = c.hidden_size;
  t.push_back({n.prefix + "model.norm.weight", {h}, TensorRole::FinalNorm});
  if (arch == Arch::LanceMoT) t.push_back({n.prefix + "model.norm_moe_gen.weight", {h}, TensorRole::FinalNorm});
  if (n.lm_head) t.push_back({n.prefix + "lm_head.weight", {c.vocab_size, h}, TensorRole::LmHead});
  if (arch != Arch::LanceMoT) return;
  // Lance connectors: sinusoid(freq_dim) -> Linear -> SiLU -> Linear; latent <-> hidden projections.
  t.push_back({"time_embedder.mlp.0.weight", {h, c.time_embed_freq_dim}, TensorRole::TimeEmbedder});
  t.push_back({"time_embedder.mlp.0.bias", {h}, TensorRole::TimeEmbedder});
  t.push_back({"time_embedder.mlp.2.weight", {h, h}, TensorRole::TimeEmbedder});
  t.push_back({"time_embedder.mlp.2.bias", {h}, TensorRole::TimeEmbedder});
  t.push_back({"vae2llm.weight", {h, c.latent_channels}, TensorRole::Connector});
  t.push_back({"vae2llm.bias", {h}, TensorRole::Connector});
  t.push_back({"llm2vae.weight", {c.latent_channels, h}, TensorRole::Connector});
  t.push_back({"llm2vae.bias", {c.latent_channels}, TensorRole::Connector});
  t.push_back({"latent_pos_embed.pos_embed", {c.latent_pos_embed_rows, h}, TensorRole::LatentPosEmbed});
}

void check_config(const ModelConfig& c) {
  if (c.hidden_size <= 0 || c.num_layers <= 0 || c.num_heads <= 0 || c.num_kv_heads <= 0 || c.head_dim <= 0 ||
      c.intermediate_size <= 0 || c.vocab_size <= 0)
    fail(c.source.empty() ? "model config" : c.source, "dimensions must be positive");
  if (c.num_heads % c.num_kv_heads)
    fail(c.source.empty() ? "model config" : c.source, "num_attention_heads is not a multiple of num_key_value_heads");
}

ModelSpec make_spec(const ModelConfig& c, Arch arch, const Naming& n) {
  check_config(c);
  ModelSpec s;
  s.arch = arch;
  s.config = c;
  add_globals_front(c, n, s.tensors);
  const int paths = s.num_paths();
  for (int layer = 0; layer < c.num_layers; ++layer) {
    LayerSpec l;
    l.index = layer;
    for (int p = 0; p < paths; ++p) l.paths.push_back(make_path_layer(c, n, layer, Path(p), s.tensors));
    for (const auto& p : l.paths) {
      for (const auto& lin : p.linears) s.linears.push_back(lin);
      add_fusions(c, p, paths == 2, s.fusions);
    }
    s.layers.push_back(std::move(l));
  }
  add_globals_back(c, n, arch, s.tensors);
  for (const auto& t : s.tensors)
    if (t.role != TensorRole::LinearWeight && t.role != TensorRole::LinearBias) s.kept.push_back(t);
  return s;
}

bool is_lance_global(const std::string& name) {
  for (const char* p : {"time_embedder.", "vae2llm.", "llm2vae.", "latent_pos_embed."})
    if (name.rfind(p, 0) == 0) return true;
  return false;
}

Arch detect_arch(const std::vector<std::string>& names) {
  for (const auto& n : names)
    if (n.find("_moe_gen") != std::string::npos || is_lance_global(n)) return Arch::LanceMoT;
  return Arch::Qwen2;
}

// A plain Qwen2 checkpoint may use HF names (`model.*`) or Lance's (`language_model.model.*`), with or
// without q/k norms, and may omit a tied lm_head: read which from the tensors present.
Naming detect_naming(const ModelConfig& c, Arch arch, const io::TensorStore& store) {
  Naming n = default_naming(c, arch);
  if (arch == Arch::LanceMoT) return n;
  if (!store.has("model.embed_tokens.weight") && store.has("language_model.model.embed_tokens.weight"))
    n.prefix = "language_model.";
  n.qk_norm = store.has(layer_prefix(n, 0) + "self_attn.q_norm.weight");
  n.lm_head = !c.tie_word_embeddings || store.has(n.prefix + "lm_head.weight");
  return n;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ',';
    r += std::to_string(s[i]);
  }
  return r + "]";
}

// Compares the store against the expected tensors; collects every problem, throws once.
void validate(ModelSpec& spec, const io::TensorStore& store) {
  std::vector<std::string> missing, misshaped, unexpected;
  std::set<std::string> expected;
  for (const auto& t : spec.tensors) {
    expected.insert(t.name);
    if (!store.has(t.name)) {
      missing.push_back(t.name + " " + shape_str(t.shape));
    } else if (store.info(t.name).shape != t.shape) {
      misshaped.push_back(t.name + " is " + shape_str(store.info(t.name).shape) + ", expected " + shape_str(t.shape));
    }
  }
  for (const auto& name : store.names()) {
    if (expected.count(name)) continue;
    if (spec.arch == Arch::LanceMoT && name.rfind("vit_model.", 0) == 0) {
      TensorSpec t{name, store.info(name).shape, TensorRole::Vit};
      spec.tensors.push_back(t);
      spec.kept.push_back(t);
      spec.has_vit = true;
      continue;
    }
    unexpected.push_back(name + " " + shape_str(store.info(name).shape));
  }
  if (missing.empty() && misshaped.empty() && unexpected.empty()) return;
  std::ostringstream msg;
  msg << "checkpoint does not match the " << arch_name(spec.arch) << " layout implied by "
      << (spec.config.source.empty() ? "the config" : spec.config.source) << ": " << missing.size() << " missing, "
      << unexpected.size() << " unexpected, " << misshaped.size() << " mis-shaped tensor(s)";
  // The first few of each kind and a count of the rest: a checkpoint of another layout must not
  // produce hundreds of lines.
  constexpr size_t kShown = 6;
  auto list = [&](const char* what, const std::vector<std::string>& v) {
    for (size_t i = 0; i < v.size() && i < kShown; ++i) msg << "\n  " << what << ": " << v[i];
    if (v.size() > kShown) msg << "\n  ... and " << v.size() - kShown << " more " << what;
  };
  list("missing", missing);
  list("unexpected", unexpected);
  list("mis-shaped", misshaped);
  fail(store.path(), msg.str());
}

}  // namespace

const char* arch_name(Arch a) { return a == Arch::LanceMoT ? "lance-mot" : "qwen2"; }
const char* path_name(Path p) { return p == Path::Und ? "und" : "gen"; }
const char* linear_kind_name(LinearKind k) { return kLinearKinds[size_t(k)].short_name; }

const char* tensor_role_name(TensorRole r) {
  switch (r) {
    case TensorRole::LinearWeight: return "linear_weight";
    case TensorRole::LinearBias: return "linear_bias";
    case TensorRole::LayerNorm: return "layer_norm";
    case TensorRole::QKNorm: return "qk_norm";
    case TensorRole::Embedding: return "embedding";
    case TensorRole::LmHead: return "lm_head";
    case TensorRole::FinalNorm: return "final_norm";
    case TensorRole::TimeEmbedder: return "time_embedder";
    case TensorRole::Connector: return "connector";
    case TensorRole::LatentPosEmbed: return "latent_pos_embed";
    case TensorRole::Vit: return "vit";
  }
  return "?";
}

const char* fusion_kind_name(FusionKind k) {
  switch (k) {
    case FusionKind::NormToLinears: return "norm->linears";
    case FusionKind::VToO: return "v->o";
    case FusionKind::UpToDown: return "up->down";
  }
  return "?";
}

int64_t TensorSpec::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

const PathLayerSpec& LayerSpec::path(Path p) const {
  if (!has(p)) fail("layer " + std::to_string(index), std::string("has no ") + path_name(p) + " path");
  return paths[size_t(p)];
}

int64_t FusionPair::scale_index(int64_t c) const {
  if (kind != FusionKind::VToO) return c;
  const int64_t head = c / head_dim, d = c % head_dim;
  return (head / heads_per_group) * head_dim + d;
}

const FusionPair* ModelSpec::tied_partner(const FusionPair& f) const {
  if (!f.tied_across_paths) return nullptr;
  for (const auto& g : fusions)
    if (g.layer == f.layer && g.kind == f.kind && g.path != f.path) return &g;
  return nullptr;
}

int64_t ModelSpec::target_weights() const {
  int64_t n = 0;
  for (const auto& l : linears) n += l.numel();
  return n;
}

int ModelSpec::num_targets(Path p) const {
  return int(std::count_if(linears.begin(), linears.end(), [&](const LinearSpec& l) { return l.path == p; }));
}

const LinearSpec* ModelSpec::find_linear(const std::string& base_name) const {
  for (const auto& l : linears)
    if (l.name == base_name) return &l;
  return nullptr;
}

ModelSpec expected_spec(const ModelConfig& config, Arch arch) {
  return make_spec(config, arch, default_naming(config, arch));
}

int count_layers(const std::vector<std::string>& names) {
  int layers = 0;
  for (const auto& n : names) {
    if (n.rfind("vit_model.", 0) == 0) continue;  // the ViT's own blocks are not decoder layers
    const size_t pos = n.find("model.layers.");
    if (pos == std::string::npos) continue;
    size_t i = pos + 13, digits = 0;
    int64_t v = 0;
    while (i < n.size() && n[i] >= '0' && n[i] <= '9' && digits < 9) v = v * 10 + (n[i++] - '0'), ++digits;
    if (digits == 0 || i >= n.size() || n[i] != '.') continue;
    layers = std::max<int>(layers, int(v) + 1);
  }
  return layers;
}

void check_layer_count(const ModelConfig& config, const std::vector<std::string>& names, const std::string& where) {
  const int found = count_layers(names);
  if (found != config.num_layers)
    fail(where, (config.source.empty() ? std::string("the config") : config.source) + " says num_hidden_layers = " +
                    std::to_string(config.num_layers) + " but the tensors hold " + std::to_string(found) + " decoder layer(s)");
}

ModelSpec build_spec(const ModelConfig& config, const io::TensorStore& store) {
  check_layer_count(config, store.names(), store.path());  // before anything is sized by the config
  const Arch arch = detect_arch(store.names());
  ModelSpec spec = make_spec(config, arch, detect_naming(config, arch, store));
  validate(spec, store);
  return spec;
}

}  // namespace lq::model
