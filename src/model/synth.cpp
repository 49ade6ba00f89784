#include "model/synth.h"

#include <sys/statvfs.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>

#include "io/error.h"
#include "model/synth_tokenizer.h"
#include "num/formats.h"

namespace lq::model {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

// ---------------------------------------------------------------------------------------------
// Weight recipe (deterministic from the seed; every value depends only on (seed, tensor name,
// element index), so any chunking or threading gives the same bytes).
//
//   z                      : approx. standard normal, Irwin-Hall(4) of 16-bit uniforms (|z| <= 3.46)
//   linear weight [out,in] : z * col_scale[in] / sqrt(in); o_proj and down_proj (the residual writers)
//                            further * 1/sqrt(2 * num_layers) so the residual stream stays O(1) deep.
//                            col_scale = 1, except ~1/64 of input columns (hash-chosen per tensor)
//                            with 3..8: heavy-tailed input columns.
//   q/k/v bias             : 0.05 z
//   input/post layernorm   : 1 + 0.1 z, except the path's outlier channels (max(1, hidden/256)
//                            channels, chosen from (seed, path) and shared by every layer of the path,
//                            like the "massive activation" dims of real LLMs): 10..50.
//   final norms, q/k norms : 1 + 0.1 z
//   embed_tokens           : 0.02 z;   lm_head: z / sqrt(hidden)
//   time_embedder, vae2llm, llm2vae: weights z / sqrt(in), biases 0.02 z
//   latent_pos_embed       : the real fixed 3-D sin-cos table (arch doc 5.2), computed in float64:
//                            row idx = f*S*S + r*S + c (S = max_latent_size), axis widths
//                            d_t = d_h = floor(D/3) rounded down to even, d_w = D - 2 d_t, each axis
//                            [sin(p w_k), cos(p w_k)], w_k = 10000^(-k/(d/2)). Matches lance-mini's table.
// ---------------------------------------------------------------------------------------------

uint64_t synth_hash(uint64_t key, uint64_t index) {
  // splitmix64 at position `index` of the stream seeded by `key`.
  uint64_t z = key + (index + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

float synth_normal(uint64_t key, uint64_t index) {
  const uint64_t h = synth_hash(key, index);
  const uint32_t sum = uint32_t(h & 0xFFFF) + uint32_t((h >> 16) & 0xFFFF) + uint32_t((h >> 32) & 0xFFFF) +
                       uint32_t(h >> 48);
  // Sum of 4 U(0,1): mean 2, variance 4/12.
  constexpr float kScale = 1.7320508f / 65536.0f;  // sqrt(3) / 2^16
  return (float(sum) - 2.0f * 65535.5f) * kScale;
}

namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}
float unit_uniform(uint64_t h) { return float(h >> 40) / float(1ull << 24); }

bool is_gen_tensor(const std::string& name) { return name.find("_moe_gen") != std::string::npos; }

// The outlier channels of one path's layer norms: value per channel, 0 for ordinary channels.
std::vector<float> norm_outlier_channels(int64_t hidden, uint64_t seed, bool gen) {
  std::vector<float> v(size_t(hidden), 0.0f);
  const uint64_t key = synth_hash(seed ^ 0x6e6f726d6f75746cull, gen ? 2 : 1);
  const int64_t count = std::max<int64_t>(1, hidden / 256);
  for (int64_t i = 0, placed = 0; placed < count; ++i) {
    const int64_t ch = int64_t(synth_hash(key, uint64_t(2 * i)) % uint64_t(hidden));
    if (v[size_t(ch)] != 0) continue;
    v[size_t(ch)] = 10.0f + 40.0f * unit_uniform(synth_hash(key, uint64_t(2 * i + 1)));
    ++placed;
  }
  return v;
}

std::vector<float> heavy_column_scales(int64_t in, uint64_t key) {
  std::vector<float> s(size_t(in), 1.0f);
  const uint64_t ckey = synth_hash(key, 0xC01u);
  for (int64_t c = 0; c < in; ++c) {
    const uint64_t h = synth_hash(ckey, uint64_t(c));
    if ((h & 63) == 0) s[size_t(c)] = 3.0f + 5.0f * unit_uniform(h);
  }
  return s;
}

}  // namespace

TensorSynth::TensorSynth(const TensorSpec& t, const ModelConfig& c, uint64_t seed) : tensor_(t) {
  key_ = synth_hash(seed * 0xD1B54A32D192ED03ull, fnv1a(t.name));
  cols_ = t.shape.size() >= 2 ? t.shape.back() : 1;
  const float inv_sqrt_in = 1.0f / std::sqrt(float(cols_));
  switch (t.role) {
    case TensorRole::LinearWeight: {
      std_ = inv_sqrt_in;
      const bool residual_writer = t.name.find("o_proj") != std::string::npos || t.name.find("down_proj") != std::string::npos;
      if (residual_writer) std_ /= std::sqrt(2.0f * float(c.num_layers));
      col_scale_ = heavy_column_scales(cols_, key_);
      break;
    }
    case TensorRole::LinearBias: std_ = 0.05f; break;
    case TensorRole::LayerNorm:
      kind_ = Kind::NormWeight;
      mean_ = 1.0f, std_ = 0.1f;
      channel_set_ = norm_outlier_channels(t.shape[0], seed, is_gen_tensor(t.name));
      break;
    case TensorRole::FinalNorm:
    case TensorRole::QKNorm: mean_ = 1.0f, std_ = 0.1f; break;
    case TensorRole::Embedding: std_ = 0.02f; break;
    case TensorRole::LmHead: std_ = inv_sqrt_in; break;
    case TensorRole::TimeEmbedder:
    case TensorRole::Connector:
    case TensorRole::Vit: std_ = t.shape.size() >= 2 ? inv_sqrt_in : 0.02f; break;
    case TensorRole::LatentPosEmbed:
      kind_ = Kind::PosTable;
      pos_grid_ = c.max_latent_size;
      break;
  }
}

void TensorSynth::fill(int64_t begin, int64_t end, float* out) const {
  if (kind_ == Kind::PosTable) return fill_pos_table(begin, end, out);
  for (int64_t i = begin; i < end; ++i) {
    float v = mean_ + std_ * synth_normal(key_, uint64_t(i));
    if (!col_scale_.empty()) v *= col_scale_[size_t(i % cols_)];
    if (!channel_set_.empty() && channel_set_[size_t(i)] != 0) v = channel_set_[size_t(i)];
    out[i - begin] = v;
  }
}

void TensorSynth::fill_pos_table(int64_t begin, int64_t end, float* out) const {
  const int64_t D = cols_, S = pos_grid_;
  const int64_t d_t = (D / 3) & ~int64_t(1), d_h = d_t, d_w = D - 2 * d_t;
  auto axis = [](double pos, int64_t k, int64_t d) {  // element k of one axis' [sin | cos] part
    const int64_t half = d / 2;
    const double w = std::pow(10000.0, -double(k % half) / double(half));
    return k < half ? std::sin(pos * w) : std::cos(pos * w);
  };
  for (int64_t i = begin; i < end; ++i) {
    const int64_t row = i / D, k = i % D;
    const double f = double(row / (S * S)), r = double((row / S) % S), c = double(row % S);
    double v;
    if (k < d_t) v = axis(f, k, d_t);
    else if (k < d_t + d_h) v = axis(r, k - d_t, d_h);
    else v = axis(c, k - d_t - d_h, d_w);
    out[i - begin] = float(v);
  }
}

// ---------------------------------------------------------------------------------------------
// Presets

namespace {

ModelConfig make_config(int layers, int hidden, int heads, int kv_heads, int inter, int vocab,
                        std::array<int, 3> mrope, int max_latent_frames) {
  ModelConfig c;
  c.source = "synth preset";
  c.num_layers = layers;
  c.hidden_size = hidden;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.intermediate_size = inter;
  c.vocab_size = vocab;
  c.max_position_embeddings = 32768;
  c.mrope_section = mrope;
  c.max_latent_frames = max_latent_frames;
  c.latent_pos_embed_rows = c.max_latent_size * c.max_latent_size;
  return c;
}

}  // namespace

const std::vector<SynthPreset>& synth_presets() {
  static const std::vector<SynthPreset> presets = {
      {"lance-3b", "Lance_3B shapes: 36 layers, hidden 2048, 16/2 heads, intermediate 11008, vocab 151936 (24.7 GB as F32)",
       make_config(36, 2048, 16, 2, 11008, 151936, {16, 24, 24}, 31), {1, 48, 48}},
      {"small", "8 layers, hidden 512, 8/2 heads, intermediate 1536 (about 0.2 GB as F32)",
       make_config(8, 512, 8, 2, 1536, 0, {8, 12, 12}, 1), {1, 8, 8}},
      {"tiny", "2 layers, hidden 128, 4/2 heads, intermediate 384 (a few MB)",
       make_config(2, 128, 4, 2, 384, 0, {4, 6, 6}, 1), {1, 8, 8}},
  };
  return presets;
}

const SynthPreset& find_synth_preset(const std::string& name) {
  std::string known;
  for (const auto& p : synth_presets()) {
    if (p.name == name) return p;
    known += (known.empty() ? "" : ", ") + p.name;
  }
  fail("--preset", "unknown preset '" + name + "' (known: " + known + ")");
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace {

// Files synth writes; with --force, stale ones from an earlier run are removed first so that a
// directory never mixes two tokenizers.
const char* const kOwnedFiles[] = {"model.safetensors", "model.safetensors.index.json", "llm_config.json",
                                   "lance_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                                   "merges.txt"};
constexpr int kGeneratedMerges = 249;  // 256 bytes + 249 merges + 7 specials = 512 ids

void prepare_out_dir(const SynthOptions& o) {
  if (o.out_dir.empty()) fail("--out", "an output directory is required");
  const fs::path d(o.out_dir);
  if (fs::exists(d) && !fs::is_directory(d)) fail(o.out_dir, "exists and is not a directory");
  if (fs::exists(d) && !fs::is_empty(d)) {
    if (!o.force) fail(o.out_dir, "output directory is not empty (use --force to replace its model files)");
    for (const char* f : kOwnedFiles) fs::remove(d / f);
  }
  fs::create_directories(d);
}

void check_free_space(const std::string& dir, uint64_t need) {
  struct statvfs s;
  if (::statvfs(dir.c_str(), &s) != 0) return;
  const uint64_t avail = uint64_t(s.f_bavail) * s.f_frsize;
  if (avail < need + (64ull << 20))
    fail(dir, "not enough disk space: need " + std::to_string(need >> 20) + " MiB, " + std::to_string(avail >> 20) +
                  " MiB available");
}

int round_up(int v, int m) { return (v + m - 1) / m * m; }

json llm_config_json(const ModelConfig& c, const std::map<std::string, int>& ids, io::DType dtype) {
  auto id = [&](const char* s) { return ids.count(s) ? json(ids.at(s)) : json(nullptr); };
  return {{"architectures", {"Qwen2ForCausalLM"}},
          {"model_type", "qwen2"},
          {"hidden_size", c.hidden_size},
          {"intermediate_size", c.intermediate_size},
          {"num_attention_heads", c.num_heads},
          {"num_key_value_heads", c.num_kv_heads},
          {"num_hidden_layers", c.num_layers},
          {"vocab_size", c.vocab_size},
          {"rope_theta", c.rope_theta},
          {"rms_norm_eps", c.rms_norm_eps},
          {"max_position_embeddings", c.max_position_embeddings},
          {"tie_word_embeddings", false},
          {"rope_scaling", {{"type", "mrope"}, {"mrope_section", c.mrope_section}}},
          {"hidden_act", "silu"},
          {"attention_dropout", 0.0},
          {"initializer_range", 0.02},
          {"use_sliding_window", false},
          {"use_cache", true},
          {"torch_dtype", dtype == io::DType::BF16 ? "bfloat16" : "float32"},
          {"bos_token_id", id("<|endoftext|>")},
          {"eos_token_id", id("<|im_end|>")},
          {"vision_start_token_id", id("<|vision_start|>")},
          {"vision_end_token_id", id("<|vision_end|>")},
          {"image_token_id", id("<|image_pad|>")},
          {"video_token_id", id("<|video_pad|>")}};
}

json lance_config_json(const ModelConfig& c, const SynthPreset& p, const std::map<std::string, int>& ids) {
  json special = json::object();
  for (const auto& s : kLanceSpecialTokens)
    if (ids.count(s)) special[s] = ids.at(s);
  const auto& g = p.t2i_latent_grid;
  return {{"layer_module", "Qwen2MoTDecoderLayer"},
          {"qk_norm", true},
          {"qk_norm_und", true},
          {"qk_norm_gen", true},
          {"apply_qwen_2_5_vl_pos_emb", true},
          {"latent_channels", c.latent_channels},
          {"latent_patch_size", {1, 1, 1}},
          {"max_latent_size", c.max_latent_size},
          {"max_num_latent_frames", c.max_latent_frames},
          {"latent_pos_embed_rows", c.latent_pos_embed_rows},
          {"t2i_latent_grid_thw", g},
          {"rope_grid_thw_for_latents", {g[0], 2 * g[1], 2 * g[2]}},
          {"spatial_merge_size", 2},
          {"tokens_per_second", 2},
          {"time_embed_freq_dim", c.time_embed_freq_dim},
          {"timestep_shift", 3.5},
          {"num_timesteps", 30},
          {"cfg_text_scale", 4.0},
          {"cfg", 4.0},
          {"cfg_interval", {0.4, 1.0}},
          {"cfg_renorm_type", "global"},
          {"cfg_renorm_min", 0.0},
          {"len_tokenizer", c.len_tokenizer},
          {"special_token_ids", special},
          {"t2i_system_instruction",
           "Describe the image by detailing the color, quantity, text, shape, size, texture, spatial "
           "relationships of the objects and background:"},
          {"synthetic", true}};
}

// Streams every tensor of `spec` into one safetensors file, generating the next chunk on a worker
// thread while the current one is written (memory: two chunks of kChunkElems).
uint64_t write_weights(const ModelSpec& spec, const SynthOptions& o, const std::string& path) {
  constexpr int64_t kChunkElems = int64_t(1) << 20;  // 4 MiB of f32
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"producer", "lance-quant synth"},
                                             {"preset", o.preset}, {"seed", std::to_string(o.seed)}};
  io::SafetensorsWriter w(path, meta);
  uint64_t total = 0;
  for (const auto& t : spec.tensors) {
    w.declare(t.name, o.dtype, t.shape);
    total += uint64_t(t.numel()) * io::dtype_size(o.dtype);
  }
  check_free_space(fs::path(path).parent_path().string(), total);

  // Chunks are generated strictly in order (chunk i+1 starts after chunk i is done), so one cached
  // TensorSynth suffices; it is only touched by the generating call of the moment.
  struct Chunk {
    size_t tensor;
    int64_t begin, end;
  };
  std::vector<Chunk> chunks;
  for (size_t t = 0; t < spec.tensors.size(); ++t)
    for (int64_t b = 0, n = spec.tensors[t].numel(); b < n; b += kChunkElems) chunks.push_back({t, b, std::min(n, b + kChunkElems)});
  std::unique_ptr<TensorSynth> gen;
  std::vector<float> buf[2] = {std::vector<float>(size_t(kChunkElems)), std::vector<float>(size_t(kChunkElems))};
  std::vector<uint16_t> half(o.dtype == io::DType::BF16 ? size_t(kChunkElems) : 0);
  auto generate = [&](size_t i) {
    const Chunk& ch = chunks[i];
    if (!gen || gen->tensor().name != spec.tensors[ch.tensor].name)
      gen = std::make_unique<TensorSynth>(spec.tensors[ch.tensor], spec.config, o.seed);
    gen->fill(ch.begin, ch.end, buf[i % 2].data());
  };
  uint64_t done = 0;
  if (!chunks.empty()) generate(0);
  for (size_t i = 0; i < chunks.size(); ++i) {
    std::future<void> next;
    if (i + 1 < chunks.size()) next = std::async(std::launch::async, generate, i + 1);
    const size_t n = size_t(chunks[i].end - chunks[i].begin);
    if (o.dtype == io::DType::BF16) {
      num::f32_to_bf16(buf[i % 2].data(), half.data(), n);
      w.write(half.data(), n * 2);
    } else {
      w.write(buf[i % 2].data(), n * 4);
    }
    done += n * io::dtype_size(o.dtype);
    if (o.progress) o.progress(done, total);
    if (next.valid()) next.get();
  }
  w.finish();
  return fs::file_size(path);
}

}  // namespace

SynthResult synthesize(const SynthOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  if (o.dtype != io::DType::F32 && o.dtype != io::DType::BF16) fail("--dtype", "synth writes f32 or bf16");
  const SynthPreset& preset = find_synth_preset(o.preset);
  prepare_out_dir(o);
  const fs::path out(o.out_dir);

  SynthResult r;
  const TokenizerFiles tok = o.tokenizer_dir.empty() ? write_small_bpe(o.out_dir, kGeneratedMerges)
                                                     : copy_tokenizer(o.tokenizer_dir, o.out_dir);
  ModelConfig c = preset.config;
  if (o.layers < 0) fail("--layers", "must be positive");
  if (o.layers > 0) c.num_layers = o.layers;
  if (c.vocab_size == 0) c.vocab_size = round_up(tok.size, 64);
  if (tok.size > c.vocab_size)
    fail(o.tokenizer_dir, "tokenizer has " + std::to_string(tok.size) + " ids, more than preset '" + preset.name +
                              "' vocab_size " + std::to_string(c.vocab_size));
  c.len_tokenizer = tok.size;
  r.files = tok.files;

  write_file_atomic((out / "llm_config.json").string(), llm_config_json(c, tok.special_ids, o.dtype).dump(2) + "\n");
  write_file_atomic((out / "lance_config.json").string(), lance_config_json(c, preset, tok.special_ids).dump(2) + "\n");
  r.files.push_back("llm_config.json");
  r.files.push_back("lance_config.json");

  const ModelSpec spec = expected_spec(c, Arch::LanceMoT);
  r.safetensors_bytes = write_weights(spec, o, (out / "model.safetensors").string());
  r.files.push_back("model.safetensors");
  r.num_tensors = int(spec.tensors.size());
  r.config = c;
  for (const auto& f : r.files) r.total_bytes += fs::file_size(out / f);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace lq::model
