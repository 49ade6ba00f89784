#include "export/export.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "calib/calibrate.h"
#include "calib/stats.h"
#include "export/ggml_gptq.h"
#include "export/ggml_search.h"
#include "export/gguf.h"
#include "export/type_mix.h"
#include "io/progress.h"
#include "formats/checkpoint.h"
#include "io/error.h"
#include "io/model_files.h"
#include "io/output.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/spec.h"
#include "num/formats.h"
#include "tokenizer/tokenizer_files.h"

namespace lq::exporter {

namespace fs = std::filesystem;
using model::LinearKind;
using model::Path;

ExportTarget parse_export_target(const std::string& name, const std::string& where) {
  if (name == "gguf") return ExportTarget::Gguf;
  if (name == "mlx") return ExportTarget::Mlx;
  if (name == "hf") return ExportTarget::Hf;
  fail(where, "unknown export target '" + name + "' (expected gguf, mlx or hf)");
}

namespace {

// ---- the source: a dense checkpoint or a quantized one, read by Lance tensor name ----------
class Source {
 public:
  Source(const std::string& model_dir, const std::string& base_dir) {
    const std::string meta_dir = has_config(model_dir) || base_dir.empty() ? model_dir : base_dir;
    config_ = model::load_config(meta_dir);
    tokenizer_dir_ = meta_dir;
    if (fs::exists(fs::path(model_dir) / "model.safetensors") ||
        fs::exists(fs::path(model_dir) / "model.safetensors.index.json")) {
      bool quantized = false;
      try {
        formats::detect_format(model_dir);
        quantized = true;
      } catch (const Error&) {
      }
      if (!quantized) {
        store_ = std::make_unique<io::TensorStore>(model_dir);
        spec_ = model::build_spec(config_, *store_);
        return;
      }
    }
    ckpt_ = std::make_unique<formats::CheckpointReader>(model_dir);
    std::vector<std::string> names;
    for (const auto& t : ckpt_->file().tensors()) names.push_back(t.name);
    model::check_layer_count(config_, names, model_dir);  // before the config sizes anything
    const auto plain = ckpt_->plain_names();
    const bool lance = std::any_of(plain.begin(), plain.end(),
                                   [](const std::string& n) { return n.find("_moe_gen") != std::string::npos; });
    spec_ = model::expected_spec(config_, lance ? model::Arch::LanceMoT : model::Arch::Qwen2);
  }

  const model::ModelConfig& config() const { return config_; }
  const model::ModelSpec& spec() const { return spec_; }
  // The ViT the checkpoint carries (vit_model.*): its tensor count and how many of its linears are stored
  // quantized (quantize --vit). The exports carry the und text decoder only; the caller says so.
  std::pair<int, int> vit_tensors() const {
    int tensors = 0, quantized = 0;  // the ViT's tensors (a quantized linear's weight and bias count as two), quantized linears
    if (store_) {
      for (const auto& n : store_->names()) tensors += n.rfind("vit_model.", 0) == 0;
    } else {
      for (const auto& n : ckpt_->plain_names()) tensors += n.rfind("vit_model.", 0) == 0;
      for (const auto& d : ckpt_->quantized_linears())
        if (d.base.rfind("vit_model.", 0) == 0) ++quantized, tensors += 1 + d.has_bias;  // weight (+ bias) as the ViT names them
    }
    return {tensors, quantized};
  }
  const std::string& tokenizer_dir() const { return tokenizer_dir_; }
  bool quantized() const { return ckpt_ != nullptr; }

  // A quantized linear's canonical tensor, when the source stores `base` quantized.
  std::optional<quant::QTensor> quantized_linear(const std::string& base) const {
    if (!ckpt_ || !ckpt_->is_quantized(base)) return std::nullopt;
    return ckpt_->read_quantized(base);
  }

  std::vector<float> read(const std::string& name) const {
    if (store_) return store_->read_f32(name);
    for (const char* suffix : {".weight", ".bias"}) {
      const std::string s = suffix;
      if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
        const std::string base = name.substr(0, name.size() - s.size());
        if (ckpt_->is_quantized(base)) {
          if (s == ".weight") return ckpt_->read_quantized(base).dequantize();
          auto b = ckpt_->read_bias(base);
          if (!b) fail(name, "quantized linear has no bias in the checkpoint");
          return *b;
        }
      }
    }
    return ckpt_->read_plain(name);
  }

 private:
  static bool has_config(const std::string& dir) {
    return fs::exists(fs::path(dir) / "llm_config.json") || fs::exists(fs::path(dir) / "config.json");
  }
  model::ModelConfig config_;
  model::ModelSpec spec_;
  std::string tokenizer_dir_;
  std::unique_ptr<io::TensorStore> store_;
  std::unique_ptr<formats::CheckpointReader> ckpt_;
};

// ---- the und path as a list of (exported name, source tensor, kind) -------------------------
enum class TensorKind { Embedding, LmHead, Norm, LinearWeight, LinearBias };

struct UndTensor {
  std::string gguf_name, hf_name;  // names in the two naming schemes
  std::string source;              // Lance / HF source tensor name
  std::string linear_base;         // for LinearWeight: the source module (quantized lookups)
  std::vector<int64_t> shape;
  TensorKind kind;
};

struct LinearNames {
  const char* gguf;
  const char* hf;
};
// Indexed by LinearKind (q, k, v, o, gate, up, down).
constexpr LinearNames kLinearNames[model::kNumLinearKinds] = {
    {"attn_q", "self_attn.q_proj"}, {"attn_k", "self_attn.k_proj"}, {"attn_v", "self_attn.v_proj"},
    {"attn_output", "self_attn.o_proj"}, {"ffn_gate", "mlp.gate_proj"}, {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"}};

const model::TensorSpec* find_role(const model::ModelSpec& spec, model::TensorRole role) {
  for (const auto& t : spec.tensors)
    if (t.role == role && t.name.find("_moe_gen") == std::string::npos) return &t;
  return nullptr;
}

bool has_qk_norm(const model::ModelSpec& spec) {
  return !spec.layers.empty() && !spec.layers[0].path(Path::Und).q_norm.empty();
}

std::vector<UndTensor> und_tensors(const model::ModelSpec& spec) {
  const auto& c = spec.config;
  std::vector<UndTensor> out;
  const auto* embed = find_role(spec, model::TensorRole::Embedding);
  const auto* norm = find_role(spec, model::TensorRole::FinalNorm);
  const auto* head = find_role(spec, model::TensorRole::LmHead);
  if (!embed || !norm) fail("export", "the model map has no embedding / final norm");
  out.push_back({"token_embd.weight", "model.embed_tokens.weight", embed->name, "", embed->shape, TensorKind::Embedding});
  for (const auto& layer : spec.layers) {
    const auto& p = layer.path(Path::Und);
    const std::string g = "blk." + std::to_string(layer.index) + ".";
    const std::string h = "model.layers." + std::to_string(layer.index) + ".";
    const std::vector<int64_t> hidden = {c.hidden_size}, head_dim = {c.head_dim};
    out.push_back({g + "attn_norm.weight", h + "input_layernorm.weight", p.input_layernorm, "", hidden, TensorKind::Norm});
    for (LinearKind k : model::kAllLinearKinds) {
      const auto& lin = p.linear(k);
      const LinearNames& n = kLinearNames[size_t(k)];
      out.push_back({g + n.gguf + ".weight", h + n.hf + ".weight", lin.weight_name(), lin.name, {lin.out, lin.in},
                     TensorKind::LinearWeight});
      if (lin.has_bias)
        out.push_back({g + n.gguf + ".bias", h + n.hf + ".bias", lin.bias_name(), lin.name, {lin.out}, TensorKind::LinearBias});
      if (k == LinearKind::V && !p.q_norm.empty()) {  // after q/k/v, as llama.cpp lists them
        out.push_back({g + "attn_q_norm.weight", h + "self_attn.q_norm.weight", p.q_norm, "", head_dim, TensorKind::Norm});
        out.push_back({g + "attn_k_norm.weight", h + "self_attn.k_norm.weight", p.k_norm, "", head_dim, TensorKind::Norm});
      }
    }
    out.push_back({g + "ffn_norm.weight", h + "post_attention_layernorm.weight", p.post_attention_layernorm, "", hidden,
                   TensorKind::Norm});
  }
  out.push_back({"output_norm.weight", "model.norm.weight", norm->name, "", norm->shape, TensorKind::Norm});
  // A tied model has no lm_head: export the embedding under the head's name (the exported
  // architectures all accept a separate head, so nothing depends on tying support).
  const auto& head_src = head ? *head : *embed;
  out.push_back({"output.weight", "lm_head.weight", head_src.name, "", head_src.shape, TensorKind::LmHead});
  return out;
}

void write_json(const fs::path& path, const nlohmann::ordered_json& j) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp);
    if (!f) fail(tmp.string(), "cannot create");
    f << j.dump(2) << "\n";
    if (!f) fail(tmp.string(), "write failed");
  }
  fs::rename(tmp, path);
}

std::vector<std::string> copy_tokenizer_files(const std::string& from, const fs::path& to) {
  std::vector<std::string> copied;
  for (const char* f : {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"}) {
    const std::string src = io::model_file(from, f);  // the symlink rule (io/model_files.h)
    if (src.empty()) continue;
    fs::copy_file(fs::canonical(src), to / f, fs::copy_options::overwrite_existing);
    copied.push_back(f);
  }
  return copied;
}

// ---- GGUF ------------------------------------------------------------------------------------
// llama.cpp token types (llama_token_type / gguf.TokenType).
enum TokenType : int32_t { kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5 };

void set_tokenizer_metadata(GgufWriter& w, const Source& src) {
  const tok::TokenizerSpec t = tok::read_tokenizer_files(src.tokenizer_dir());
  const int vocab = src.config().vocab_size;
  std::vector<std::string> tokens;
  tokens.resize(size_t(vocab));
  std::vector<int32_t> types(size_t(vocab), kUnused);
  std::vector<bool> seen(size_t(vocab), false);
  auto place = [&](int32_t id, const std::string& s, int32_t type) {
    if (id < 0 || id >= vocab) fail(src.tokenizer_dir(), "token id " + std::to_string(id) + " outside the vocabulary of " + std::to_string(vocab));
    tokens[size_t(id)] = s;
    types[size_t(id)] = type;
    seen[size_t(id)] = true;
  };
  for (const auto& [s, id] : t.vocab) place(id, s, kNormal);
  int32_t eos = -1, pad = -1;
  for (const auto& a : t.added) {
    place(a.id, a.content, a.special ? kControl : kUserDefined);
    if (a.content == "<|im_end|>") eos = a.id;
    if (a.content == "<|endoftext|>") pad = a.id;
  }
  // Rows past len(tokenizer) are padding in the embedding; llama.cpp needs one token per row.
  for (int i = 0; i < vocab; ++i)
    if (!seen[size_t(i)]) tokens[size_t(i)] = "[PAD" + std::to_string(i) + "]";
  std::vector<std::string> merges;
  merges.reserve(t.merges.size());
  for (const auto& [a, b] : t.merges) merges.push_back(a + " " + b);
  w.set("tokenizer.ggml.model", std::string("gpt2"));
  w.set("tokenizer.ggml.pre", std::string("qwen2"));
  w.set("tokenizer.ggml.tokens", std::move(tokens));
  w.set("tokenizer.ggml.token_type", std::move(types));
  w.set("tokenizer.ggml.merges", std::move(merges));
  if (eos >= 0) w.set("tokenizer.ggml.eos_token_id", uint32_t(eos));
  if (pad >= 0) {
    w.set("tokenizer.ggml.padding_token_id", uint32_t(pad));
    w.set("tokenizer.ggml.bos_token_id", uint32_t(pad));  // never added: add_bos_token is false
  }
  w.set("tokenizer.ggml.add_bos_token", false);
}

TensorCategory category_of(const UndTensor& t) {
  switch (t.kind) {
    case TensorKind::Embedding: return TensorCategory::TokenEmbd;
    case TensorKind::LmHead: return TensorCategory::Output;
    case TensorKind::LinearWeight: break;
    default: return TensorCategory::Other;
  }
  const auto has = [&](const char* s) { return t.gguf_name.find(s) != std::string::npos; };
  if (has(".attn_q.")) return TensorCategory::AttnQ;
  if (has(".attn_k.")) return TensorCategory::AttnK;
  if (has(".attn_v.")) return TensorCategory::AttnV;
  if (has(".attn_output.")) return TensorCategory::AttnOutput;
  if (has(".ffn_gate.")) return TensorCategory::FfnGate;
  if (has(".ffn_up.")) return TensorCategory::FfnUp;
  if (has(".ffn_down.")) return TensorCategory::FfnDown;
  return TensorCategory::Other;
}

int layer_of(const std::string& gguf_name) {
  if (gguf_name.rfind("blk.", 0) != 0) return -1;
  return std::stoi(gguf_name.substr(4));
}

// Per-column importance of every und linear: the calibration mean of x^2 (llama.cpp's imatrix holds
// the same quantity), and with `hessians` each linear's X^T X (calibrate --hessian). Throws naming the
// linear when the statistics lack one or disagree in width.
std::map<std::string, std::vector<float>> load_importance(const std::string& stats_path, const std::string& model_dir,
                                                          const std::vector<UndTensor>& tensors,
                                                          std::map<std::string, std::vector<double>>* hessians = nullptr) {
  calib::StatsFile stats = calib::StatsFile::load(stats_path);
  const std::string fp = calib::model_fingerprint(model_dir);
  if (!stats.model_fingerprint.empty() && stats.model_fingerprint != fp)
    fail(stats_path, "statistics were gathered on another model (fingerprint " + stats.model_fingerprint + ", " +
                         model_dir + " has " + fp + ")");
  std::map<std::string, std::vector<float>> out;
  for (const auto& t : tensors) {
    if (t.kind != TensorKind::LinearWeight) continue;
    const auto it = stats.linears.find(t.linear_base);
    if (it == stats.linears.end() || it->second.all.count == 0)
      fail(stats_path, "no calibration rows for " + t.linear_base + " (calibrate the und path, e.g. --calib text:FILE)");
    if (it->second.all.width() != t.shape.back())
      fail(stats_path, t.linear_base + ": statistics of width " + std::to_string(it->second.all.width()) +
                           " for a linear with " + std::to_string(t.shape.back()) + " inputs");
    out[t.gguf_name] = it->second.all.mean_sq();
    if (hessians) {
      if (it->second.xtx.empty())
        fail(stats_path, "no X^T X for " + t.linear_base + ": --gptq needs statistics from `calibrate --hessian`");
      (*hessians)[t.gguf_name] = std::move(it->second.xtx);
    }
  }
  return out;
}

// A quantized linear whose grid a ggml block type holds exactly: INT4 symmetric group 32 -> Q4_0,
// INT4 asymmetric group 32 -> Q4_1 (m = -scale * zero must be an f16 value), INT8 symmetric group 32
// -> Q8_0; scales must be f16 values. Returns the blocks, or nothing when some group does not fit.
std::optional<std::vector<uint8_t>> exact_blocks(const quant::QTensor& q, GgmlType type) {
  if (q.group != 32 || !quant::scheme_is_integer(q.scheme)) return std::nullopt;
  const bool f16_ok = std::all_of(q.scales.begin(), q.scales.end(), [](float s) { return search::f16_round(s) == s; });
  if (!f16_ok) return std::nullopt;
  const int64_t groups = q.out * q.groups_per_row();
  std::vector<uint8_t> out(size_t(groups) * ggml_traits(type).block_bytes);
  auto f16 = [](uint8_t* p, float v) {
    const uint16_t h = num::f32_to_f16(v);
    std::memcpy(p, &h, 2);
  };
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* c = q.codes.data() + g * 32;  // groups are consecutive along rows
    const float s = q.scales[size_t(g)];
    uint8_t* b = out.data() + size_t(g) * ggml_traits(type).block_bytes;
    if (type == GgmlType::Q4_0 && q.scheme == quant::Scheme::Int4Sym) {
      f16(b, s);
      for (int i = 0; i < 16; ++i) b[2 + i] = uint8_t(c[i] | (c[i + 16] << 4));
    } else if (type == GgmlType::Q4_1 && q.scheme == quant::Scheme::Int4Asym) {
      const float m = -s * float(q.zeros[size_t(g)]);
      if (search::f16_round(m) != m) return std::nullopt;
      f16(b, s);
      f16(b + 2, m);
      for (int i = 0; i < 16; ++i) b[4 + i] = uint8_t(c[i] | (c[i + 16] << 4));
    } else if (type == GgmlType::Q8_0 && q.scheme == quant::Scheme::Int8Sym) {
      f16(b, s);
      for (int i = 0; i < 32; ++i) b[2 + i] = uint8_t(int8_t(int(c[i]) - 128));
    } else {
      return std::nullopt;
    }
  }
  return out;
}

ExportResult export_gguf(const Source& src, const ExportOptions& o, const std::string& model_dir) {
  const FileType ft = parse_file_type(o.type.empty() ? "f16" : o.type, "export --type");
  const GgmlType embed_dense = ft.base == GgmlType::F32 ? GgmlType::F32 : GgmlType::F16;
  const auto& c = src.config();
  const bool qk = has_qk_norm(src.spec());
  const std::string arch = qk ? "qwen3" : "qwen2";
  const auto tensors = und_tensors(src.spec());

  // Statistics first (bad input fails before any work).
  std::map<std::string, std::vector<float>> importance;
  std::map<std::string, std::vector<double>> hessians;
  if (o.gptq && o.stats_path.empty())
    fail("export --gptq", "needs --stats with X^T X (`lance-quant calibrate MODEL --calib ... --hessian`)");
  if (o.gptq && !(o.gptq_damp > 0.0)) fail("export --gptq-damp", "must be > 0");
  if (!o.stats_path.empty()) {
    if (!src.quantized()) importance = load_importance(o.stats_path, model_dir, tensors, o.gptq ? &hessians : nullptr);
    else if (o.original_dir.empty())
      fail("export --stats", "statistics describe a dense model; give them with --original DIR for a quantized MODEL");
    else load_importance(o.stats_path, o.original_dir, tensors, o.gptq ? &hessians : nullptr);  // checked now
  }

  MixContext ctx;
  ctx.n_layer = c.num_layers;
  ctx.n_head = c.num_heads;
  ctx.n_head_kv = c.num_kv_heads;
  ctx.has_importance = !importance.empty();
  ctx.pure = o.pure;
  std::vector<MixTensor> mix;
  for (const auto& t : tensors) mix.push_back({t.gguf_name, category_of(t), layer_of(t.gguf_name), t.shape.back()});
  std::vector<GgmlType> types = choose_types(ft, mix, ctx);
  // The embedding is read by row lookup: llama.cpp quantizes it to the file type; dense files keep it
  // f16 (f32 in an f32 file).
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].kind == TensorKind::Embedding && (types[i] == GgmlType::F32 || types[i] == GgmlType::F16))
      types[i] = embed_dense;

  ExportResult res;
  res.architecture = arch;
  res.files = {"model.gguf"};
  res.tensors = int(tensors.size());
  res.from_quantized = src.quantized();
  res.file_type = ft.name;

  // A quantized source: its stored codes go in unchanged where a ggml type holds its grid exactly.
  std::vector<std::optional<std::vector<uint8_t>>> exact(tensors.size());
  if (src.quantized()) {
    bool all_exact = true;
    std::string first_misfit;
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (tensors[i].kind != TensorKind::LinearWeight) continue;
      const auto q = src.quantized_linear(tensors[i].linear_base);
      if (!q) continue;
      exact[i] = exact_blocks(*q, types[i]);
      if (!exact[i] && all_exact) {
        all_exact = false;
        first_misfit = tensors[i].source + " (" + quant::scheme_name(q->scheme) + " g" + std::to_string(q->group) +
                       " as " + ggml_type_name(types[i]) + ")";
      }
    }
    const bool lossy_type = types.size() && std::any_of(types.begin(), types.end(), [](GgmlType t) {
                              return t != GgmlType::F32 && t != GgmlType::F16 && t != GgmlType::Q8_0;
                            });
    if (all_exact) {
      res.note = "every quantized linear copied exactly (its grid is the " + ft.name + " layout)";
    } else if (!o.original_dir.empty()) {
      // Re-quantize from the dense original with its statistics: the quantized grid does not fit.
      ExportOptions again = o;
      again.original_dir.clear();
      again.base_dir.clear();
      ExportResult r = export_gguf(Source(o.original_dir, ""), again, o.original_dir);  // into the same OUT
      r.note = "re-quantized from the original " + o.original_dir + (o.stats_path.empty() ? "" : " with " + o.stats_path) +
               ": " + first_misfit + " has no exact ggml layout";
      return r;
    } else if (lossy_type) {
      fail("export --type " + o.type, "the stored grid of " + first_misfit +
                                          " is not exactly representable (only group-32 INT4/INT8 with f16 scales, and "
                                          "for Q4_1 f16 offsets -scale*zero, map exactly), and re-rounding 4-bit codes into "
                                          "another 4-bit grid compounds both errors: pass --original DIR (the dense model, "
                                          "with its --stats) to quantize the original, or export --type f16 / q8_0");
    } else {
      res.note = "quantized linears dequantized into " + ft.name;
      for (auto& e : exact) e.reset();
    }
  }

  const fs::path out = fs::path(o.out_dir) / "model.gguf";
  GgufWriter w(out.string());
  w.set("general.architecture", arch);
  w.set("general.name", o.name.empty() ? fs::path(o.out_dir).filename().string() : o.name);
  w.set("general.file_type", ft.llama_ftype);
  w.set("general.quantization_version", uint32_t(2));
  auto key = [&](const std::string& k) { return arch + "." + k; };
  w.set(key("context_length"), uint32_t(c.max_position_embeddings > 0 ? c.max_position_embeddings : 32768));
  w.set(key("embedding_length"), uint32_t(c.hidden_size));
  w.set(key("block_count"), uint32_t(c.num_layers));
  w.set(key("feed_forward_length"), uint32_t(c.intermediate_size));
  w.set(key("attention.head_count"), uint32_t(c.num_heads));
  w.set(key("attention.head_count_kv"), uint32_t(c.num_kv_heads));
  w.set(key("attention.key_length"), uint32_t(c.head_dim));
  w.set(key("attention.value_length"), uint32_t(c.head_dim));
  w.set(key("rope.freq_base"), float(c.rope_theta));
  w.set(key("attention.layer_norm_rms_epsilon"), float(c.rms_norm_eps));
  set_tokenizer_metadata(w, src);

  for (size_t i = 0; i < tensors.size(); ++i) w.declare(tensors[i].gguf_name, tensors[i].shape, types[i]);
  io::Progress progress("export gguf", double(tensors.size()), "tensors");
  uint64_t lin_bytes = 0, all_bytes = 0;
  int64_t lin_elems = 0, all_elems = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    const auto imp = importance.find(t.gguf_name);
    const float* imp_ptr = imp != importance.end() ? imp->second.data() : nullptr;
    const auto hes = hessians.find(t.gguf_name);
    const bool gptq = !exact[i] && hes != hessians.end() && ggml_traits(types[i]).n_codes > 0;
    if (exact[i]) {
      w.write_raw(t.gguf_name, exact[i]->data(), exact[i]->size());
    } else if (gptq) {
      const GptqFactor f = gptq_factor(hes->second, t.shape.back(), o.gptq_damp, o.stats_path + ": " + t.linear_base);
      w.write_tensor(t.gguf_name, src.read(t.source).data(), imp_ptr, &f);
    } else {
      w.write_tensor(t.gguf_name, src.read(t.source).data(), imp_ptr);
    }
    ExportedTensor e;
    e.name = t.gguf_name;
    e.type = ggml_type_name(types[i]);
    e.elements = 1;
    for (int64_t d : t.shape) e.elements *= d;
    e.bytes = w.tensor_bytes(t.gguf_name);
    e.layer_linear = t.kind == TensorKind::LinearWeight;
    e.importance = imp_ptr != nullptr && types[i] != GgmlType::F32 && types[i] != GgmlType::F16;
    e.exact = bool(exact[i]);
    e.gptq = gptq;
    all_bytes += e.bytes;
    all_elems += e.elements;
    if (e.layer_linear) {
      lin_bytes += e.bytes;
      lin_elems += e.elements;
    }
    res.tensor_report.push_back(std::move(e));
    progress.update(double(i + 1));
  }
  w.finish();
  res.linear_bpw = lin_elems ? 8.0 * double(lin_bytes) / double(lin_elems) : 0.0;
  res.file_bpw = all_elems ? 8.0 * double(all_bytes) / double(all_elems) : 0.0;
  return res;
}

// ---- safetensors targets (mlx, hf) -----------------------------------------------------------
io::DType dense_dtype(const ExportOptions& o) {
  if (o.type.empty() || o.type == "f32") return io::DType::F32;
  if (o.type == "f16") return io::DType::F16;
  fail("export --type", "mlx/hf exports take f32 or f16 for dense tensors, not '" + o.type + "'");
}

void write_dense(io::SafetensorsWriter& w, const std::vector<float>& v, io::DType dt) {
  if (dt == io::DType::F32) {
    w.write(v.data(), v.size() * 4);
    return;
  }
  std::vector<uint16_t> h(v.size());
  num::f32_to_f16(v.data(), h.data(), v.size());
  w.write(h.data(), h.size() * 2);
}

// MLX affine packing: codes of one row, `bits` wide, packed into u32 words from the lowest bits up.
std::vector<uint32_t> mlx_pack(const quant::QTensor& q) {
  const int bits = quant::scheme_bits(q.scheme);
  const int per_word = 32 / bits;
  std::vector<uint32_t> packed(size_t(q.numel() / per_word), 0);
  for (int64_t i = 0; i < q.numel(); ++i)
    packed[size_t(i / per_word)] |= uint32_t(q.codes[size_t(i)]) << (bits * (i % per_word));
  return packed;
}

struct MlxQuant {
  int bits = 0;
  int64_t group = 0;
};

nlohmann::ordered_json glm4_dense_config(const model::ModelConfig& c, const std::optional<MlxQuant>& q) {
  nlohmann::ordered_json j = {
      {"model_type", "glm4_moe"}, {"architectures", {"Glm4MoeForCausalLM"}},
      {"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size}, {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_layers}, {"num_attention_heads", c.num_heads},
      {"num_key_value_heads", c.num_kv_heads}, {"head_dim", c.head_dim},
      {"max_position_embeddings", c.max_position_embeddings > 0 ? c.max_position_embeddings : 32768},
      {"rms_norm_eps", c.rms_norm_eps}, {"rope_theta", c.rope_theta}, {"rope_scaling", nullptr},
      {"partial_rotary_factor", 1.0}, {"attention_bias", true}, {"use_qk_norm", true},
      {"tie_word_embeddings", false},
      // Every layer dense: the MoE fields are required by the config class but never used.
      {"first_k_dense_replace", c.num_layers}, {"moe_intermediate_size", c.intermediate_size},
      {"n_routed_experts", 1}, {"num_experts_per_tok", 1}, {"n_shared_experts", 1}, {"n_group", 1},
      {"topk_group", 1}, {"routed_scaling_factor", 1.0}, {"norm_topk_prob", true}};
  if (q) j["quantization"] = {{"group_size", q->group}, {"bits", q->bits}};
  return j;
}

nlohmann::ordered_json qwen3_hf_config(const model::ModelConfig& c, bool qk) {
  return {{"model_type", qk ? "qwen3" : "qwen2"}, {"architectures", {qk ? "Qwen3ForCausalLM" : "Qwen2ForCausalLM"}},
          {"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size}, {"intermediate_size", c.intermediate_size},
          {"num_hidden_layers", c.num_layers}, {"num_attention_heads", c.num_heads},
          {"num_key_value_heads", c.num_kv_heads}, {"head_dim", c.head_dim},
          {"max_position_embeddings", c.max_position_embeddings > 0 ? c.max_position_embeddings : 32768},
          {"rms_norm_eps", c.rms_norm_eps}, {"rope_theta", c.rope_theta}, {"attention_bias", true},
          {"hidden_act", "silu"}, {"tie_word_embeddings", false}, {"torch_dtype", "float32"}};
}

ExportResult export_safetensors(const Source& src, const ExportOptions& o) {
  const bool mlx = o.target == ExportTarget::Mlx;
  const io::DType dt = dense_dtype(o);
  const auto tensors = und_tensors(src.spec());
  if (mlx && !has_qk_norm(src.spec()))
    fail("export --to mlx", "the source has no q/k norms: export it with mlx-lm's qwen2 instead");

  // Quantized linears stay quantized in MLX (affine); everything is dense in HF.
  std::vector<std::optional<quant::QTensor>> quantized(tensors.size());
  std::optional<MlxQuant> mq;
  if (mlx && src.quantized()) {
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (tensors[i].kind != TensorKind::LinearWeight) continue;
      quantized[i] = src.quantized_linear(tensors[i].linear_base);
      if (!quantized[i]) continue;
      const auto& q = *quantized[i];
      if (!quant::scheme_is_integer(q.scheme))
        fail(tensors[i].source, std::string("scheme ") + quant::scheme_name(q.scheme) +
                                    " has no MLX affine equivalent; export a dense model with --to hf instead");
      const MlxQuant this_q{quant::scheme_bits(q.scheme), q.group};
      if (this_q.group != 32 && this_q.group != 64 && this_q.group != 128)
        fail(tensors[i].source, "group size " + std::to_string(q.group) + " is not one MLX supports (32, 64, 128)");
      if (mq && (mq->bits != this_q.bits || mq->group != this_q.group))
        fail(tensors[i].source, "mixed bit widths / group sizes cannot be described by one MLX quantization entry");
      mq = this_q;
    }
  }

  const fs::path out = fs::path(o.out_dir) / "model.safetensors";
  io::SafetensorsWriter w(out.string(), {{"format", mlx ? "mlx" : "pt"}});
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    if (!quantized[i]) {
      w.declare(t.hf_name, dt, t.shape);
      continue;
    }
    const auto& q = *quantized[i];
    const std::string base = t.hf_name.substr(0, t.hf_name.size() - std::string(".weight").size());
    w.declare(base + ".weight", io::DType::U32, {q.out, q.in * quant::scheme_bits(q.scheme) / 32});
    w.declare(base + ".scales", io::DType::F32, {q.out, q.groups_per_row()});
    w.declare(base + ".biases", io::DType::F32, {q.out, q.groups_per_row()});
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!quantized[i]) {
      write_dense(w, src.read(tensors[i].source), dt);
      continue;
    }
    const auto& q = *quantized[i];
    const auto packed = mlx_pack(q);
    w.write(packed.data(), packed.size() * 4);
    w.write(q.scales.data(), q.scales.size() * 4);
    // (code - zero) * scale == scale * code + (-scale * zero), exactly: scale is a bf16/f16/f32
    // value and zero an integer < 256, so the product and the sum are exact in f32.
    std::vector<float> biases(q.scales.size());
    for (size_t g = 0; g < biases.size(); ++g) {
      const int zero = quant::fixed_zero(q.scheme) >= 0 ? quant::fixed_zero(q.scheme) : q.zeros[g];
      biases[g] = -q.scales[g] * float(zero);
    }
    w.write(biases.data(), biases.size() * 4);
  }
  w.finish();

  const auto& c = src.config();
  write_json(fs::path(o.out_dir) / "config.json", mlx ? glm4_dense_config(c, mq) : qwen3_hf_config(c, has_qk_norm(src.spec())));
  ExportResult r;
  r.architecture = mlx ? "glm4_moe" : (has_qk_norm(src.spec()) ? "qwen3" : "qwen2");
  r.files = {"model.safetensors", "config.json"};
  r.tensors = int(tensors.size());
  r.from_quantized = src.quantized();
  for (auto& f : copy_tokenizer_files(src.tokenizer_dir(), o.out_dir)) r.files.push_back(f);
  return r;
}

}  // namespace

ImportResult import_gguf_und(const std::string& gguf_path, const std::string& base_dir, const std::string& final_out,
                             bool force) {
  if (final_out.empty()) fail("import", "--out DIR is required");
  io::require_file(gguf_path, "GGUF file");
  io::require_directory(base_dir, "--base directory");
  io::check_output_dir(final_out, force, {gguf_path, base_dir}, "import --out");
  const Source src(base_dir, "");
  if (src.quantized()) fail(base_dir, "BASE must be a dense checkpoint");
  const GgufFile g(gguf_path);
  const auto& c = src.config();
  const auto arch_it = g.metadata().find("general.architecture");
  if (arch_it == g.metadata().end()) fail(gguf_path, "no general.architecture");
  const std::string arch = std::get<std::string>(arch_it->second);
  const auto block_count = g.metadata().find(arch + ".block_count");
  if (block_count == g.metadata().end() || std::get<uint32_t>(block_count->second) != uint32_t(c.num_layers))
    fail(gguf_path, "block count differs from " + base_dir + "'s " + std::to_string(c.num_layers) + " layers");

  // Which source tensor each GGUF tensor replaces (a tied model exports its embedding as the head too).
  std::map<std::string, std::string> replace;  // source name -> gguf name
  ImportResult res;
  uint64_t lin_bytes = 0, all_bytes = 0;
  int64_t lin_elems = 0, all_elems = 0;
  for (const auto& t : und_tensors(src.spec())) {
    const GgufTensorInfo* info = nullptr;
    for (const auto& gi : g.tensors())
      if (gi.name == t.gguf_name) info = &gi;
    if (!info) fail(gguf_path, "has no tensor " + t.gguf_name + " (for " + t.source + ")");
    if (info->shape != t.shape)
      fail(gguf_path, t.gguf_name + " has another shape than " + base_dir + "'s " + t.source);
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    all_bytes += info->nbytes;
    all_elems += n;
    if (t.kind == TensorKind::LinearWeight) {
      lin_bytes += info->nbytes;
      lin_elems += n;
    }
    ++res.types[ggml_type_name(info->type)];
    if (replace.count(t.source)) continue;  // tied head: the embedding already maps there
    replace[t.source] = t.gguf_name;
  }

  io::PartialOutputDir dir(final_out, "import");  // renamed into place when complete
  const std::string out_dir = dir.path().string();
  const io::TensorStore store(base_dir);
  io::SafetensorsWriter w((fs::path(out_dir) / "model.safetensors").string(), {{"format", "pt"}});
  const auto names = store.names();
  for (const auto& n : names) w.declare(n, io::DType::F32, store.info(n).shape);
  io::Progress progress("import gguf", double(names.size()), "tensors");
  for (size_t i = 0; i < names.size(); ++i) {
    const auto it = replace.find(names[i]);
    const std::vector<float> v = it != replace.end() ? g.read_f32(it->second) : store.read_f32(names[i]);
    w.write(v.data(), v.size() * 4);
    if (it != replace.end()) ++res.replaced;
    progress.update(double(i + 1));
  }
  w.finish();
  // BASE's configs and tokenizer come along, by name and under the symlink rule (io/model_files.h), so OUT
  // is a complete model.
  for (const char* name : {"config.json", "llm_config.json", "lance_config.json", "generation_config.json",
                           "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                           "vocab.json", "merges.txt"}) {
    const std::string from = io::model_file(base_dir, name);
    if (!from.empty()) fs::copy_file(fs::canonical(from), fs::path(out_dir) / name);
  }
  dir.commit(nlohmann::json{{"source", gguf_path}, {"base", base_dir}}.dump());
  res.linear_bpw = lin_elems ? 8.0 * double(lin_bytes) / double(lin_elems) : 0.0;
  res.file_bpw = all_elems ? 8.0 * double(all_bytes) / double(all_elems) : 0.0;
  return res;
}

ExportResult export_und(const std::string& model_dir, const ExportOptions& options) {
  if (options.out_dir.empty()) fail("export", "--out DIR is required");
  // Everything the user chose is checked before anything is read or created.
  if (options.target == ExportTarget::Gguf) parse_file_type(options.type.empty() ? "f16" : options.type, "export --type");
  else dense_dtype(options);
  io::require_directory(model_dir, "model directory");
  if (!options.base_dir.empty()) io::require_directory(options.base_dir, "--base directory");
  if (!options.original_dir.empty()) io::require_directory(options.original_dir, "--original directory");
  if (!options.stats_path.empty()) io::require_file(options.stats_path, "--stats file");
  io::check_output_dir(options.out_dir, options.force,
                       {model_dir, options.base_dir, options.original_dir, options.stats_path}, "export --out");
  const Source src(model_dir, options.base_dir);
  io::PartialOutputDir dir(options.out_dir, "export");  // renamed into place when complete
  ExportOptions o = options;
  o.out_dir = dir.path().string();
  if (o.name.empty()) o.name = dir.final_path().filename().string();
  ExportResult r;
  if (o.target == ExportTarget::Gguf) {
    r = export_gguf(src, o, model_dir);
  } else {
    if (!o.stats_path.empty() || !o.original_dir.empty() || o.pure)
      fail("export", "--stats, --original and --pure apply to --to gguf");
    r = export_safetensors(src, o);
  }
  // Never a silent drop: a ViT in the source (dense, or 4-bit from quantize --vit) is not part of these
  // text-decoder architectures, and the result says so.
  if (const auto [vt, vq] = src.vit_tensors(); vt > 0) {
    r.vit_not_exported = "the ViT (vit_model.*: " + std::to_string(vt) + " tensors" +
                         (vq ? ", " + std::to_string(vq) + " of its linears 4-bit" : std::string()) +
                         ") is not exported: " + r.architecture + " carries the und text decoder only (image / video "
                         "understanding runs in lance-quant run --task x2t)";
    r.note += (r.note.empty() ? "" : "; ") + r.vit_not_exported;
  }
  dir.commit(nlohmann::json{{"source", model_dir}, {"architecture", r.architecture}}.dump());
  return r;
}

}  // namespace lq::exporter
