#include "forward/forward.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <utility>

#include "forward/attention.h"
#include "forward/quant_linear.h"
#include "forward/vec_math.h"
#include "kernels/linear.h"
#include "kernels/q4.h"
#include "kernels/parallel.h"
#include "io/error.h"
#include "io/safetensors.h"
#include "num/formats.h"
#include "quant/quantizer.h"

namespace lq::fwd {

std::string linear_module_name(const LinearId& id) {
  const std::string layer = "language_model.model.layers." + std::to_string(id.layer) + ".";
  const bool gen = id.path == Path::Gen;
  const char* kind = model::linear_kind_name(id.kind);
  if (id.kind <= LinearKind::O) return layer + "self_attn." + kind + (gen ? "_moe_gen" : "");  // leaf suffix
  return layer + (gen ? "mlp_moe_gen." : "mlp.") + kind;                                        // module suffix
}

// ---- dense linear ---------------------------------------------------------------------------

DenseLinear::DenseLinear(kernels::DenseMatrix w, std::vector<uint8_t> owned_storage, std::vector<float> bias)
    : w_(w), storage_(std::move(owned_storage)), bias_(std::move(bias)) {
  if (!storage_.empty()) w_.data = storage_.data();
  if (!bias_.empty() && static_cast<int64_t>(bias_.size()) != w_.rows)
    fail("DenseLinear", "bias has " + std::to_string(bias_.size()) + " entries, weight has " +
                            std::to_string(w_.rows) + " rows");
}

void DenseLinear::apply(const float* x, int64_t n, float* y) const {
  kernels::linear(x, n, w_, bias_.empty() ? nullptr : bias_.data(), y);
}

uint64_t DenseLinear::weight_bytes() const {
  const uint64_t elem = w_.type == kernels::WeightType::F32 ? 4 : 2;
  return elem * uint64_t(w_.rows) * uint64_t(w_.cols) + 4 * bias_.size();
}

void DenseLinear::row_f32(int64_t r, float* out) const {
  if (r < 0 || r >= w_.rows) fail("DenseLinear::row_f32", "row " + std::to_string(r) + " out of range");
  if (w_.type == kernels::WeightType::F32)
    std::memcpy(out, static_cast<const float*>(w_.data) + r * w_.cols, sizeof(float) * w_.cols);
  else
    num::bf16_to_f32(static_cast<const uint16_t*>(w_.data) + r * w_.cols, out, size_t(w_.cols));
}

// ---- cache ----------------------------------------------------------------------------------

void KvCache::clear() {
  k_.clear();
  v_.clear();
  splits_.clear();
  rows_ = 0;
}

// ---- loading --------------------------------------------------------------------------------

namespace {

struct LayerWeights {
  // Indexed by Path.
  std::array<std::vector<float>, kNumPaths> in_norm, post_norm, q_norm, k_norm;
  std::array<std::array<std::unique_ptr<LinearWeights>, kNumLinearKinds>, kNumPaths> linears;
};

bool aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

// A 2-D weight (+ optional bias) in the requested storage. Borrowed from the memory map when the
// source dtype already is the storage dtype (zero copy), converted into owned memory otherwise.
std::unique_ptr<DenseLinear> load_dense(const io::TensorStore& st, const std::string& weight,
                                        const std::string& bias, WeightStorage storage) {
  const io::TensorInfo& t = st.info(weight);
  if (t.shape.size() != 2) fail(weight, "expected a 2-D weight");
  kernels::DenseMatrix m;
  m.rows = t.shape[0];
  m.cols = t.shape[1];
  m.type = storage == WeightStorage::F32 ? kernels::WeightType::F32 : kernels::WeightType::BF16;
  std::vector<uint8_t> owned;
  const io::DType want = storage == WeightStorage::F32 ? io::DType::F32 : io::DType::BF16;
  const size_t elem = storage == WeightStorage::F32 ? 4 : 2;
  const uint8_t* mapped = st.file_of(weight).bytes(t).data();
  if (t.dtype == want && aligned(mapped, elem)) {
    m.data = mapped;
  } else {
    owned.resize(size_t(m.rows * m.cols) * elem);
    if (storage == WeightStorage::F32)
      st.read_rows_f32(weight, 0, m.rows, reinterpret_cast<float*>(owned.data()));
    else
      st.read_rows_bf16(weight, 0, m.rows, reinterpret_cast<uint16_t*>(owned.data()));
  }
  std::vector<float> b;
  if (!bias.empty()) b = st.read_f32(bias);
  return std::make_unique<DenseLinear>(m, std::move(owned), std::move(b));
}

std::vector<float> load_vector(const io::TensorStore& st, const std::string& name, int64_t expect) {
  std::vector<float> v = st.read_f32(name);
  if (static_cast<int64_t>(v.size()) != expect)
    fail(name, "has " + std::to_string(v.size()) + " values, expected " + std::to_string(expect));
  return v;
}

// HeadFormat::Int4 / Int8: the head read and quantized a block of rows at a time (the f32 copy of a
// 151936 x 2048 head would be 1.2 GB), each block's mapped pages released after it is read.
std::unique_ptr<LinearWeights> load_head_quantized(const io::TensorStore& st, const std::string& name, HeadFormat format) {
  const io::TensorInfo& info = st.info(name);
  if (info.shape.size() != 2) fail(name, "lm_head must be 2-D");
  const int64_t rows = info.shape[0], cols = info.shape[1];
  quant::QuantParams p;
  p.scheme = format == HeadFormat::Int8 ? quant::Scheme::Int8Sym : quant::Scheme::Int4Asym;
  p.group = 64;
  const char* flag = format == HeadFormat::Int8 ? " (--head int8)" : " (--head int4)";
  if (cols % p.group != 0) fail(name, "hidden size " + std::to_string(cols) + " is not a multiple of 64" + flag);
  quant::QTensor q = quant::QTensor::integer(p.scheme, rows, cols, p.group, p.scale_dtype);
  constexpr int64_t kBlockRows = 4096;
  std::vector<float> block;
  for (int64_t r0 = 0; r0 < rows; r0 += kBlockRows) {
    const int64_t r1 = std::min(rows, r0 + kBlockRows);
    block.resize(size_t((r1 - r0) * cols));
    st.read_rows_f32(name, r0, r1, block.data());
    st.drop_rows(name, r0, r1, /*evict_cache=*/false);
    const quant::QTensor b = quant::quantize(block.data(), r1 - r0, cols, p);
    std::copy(b.codes.begin(), b.codes.end(), q.codes.begin() + r0 * cols);
    std::copy(b.scales.begin(), b.scales.end(), q.scales.begin() + r0 * (cols / p.group));
    std::copy(b.zeros.begin(), b.zeros.end(), q.zeros.begin() + r0 * (cols / p.group));
  }
  return make_quant_linear(q, {}, name);
}

}  // namespace

HeadFormat parse_head_format(const std::string& text) {
  if (text == "stored" || text == "bf16") return HeadFormat::Stored;
  if (text == "int4") return HeadFormat::Int4;
  if (text == "int8") return HeadFormat::Int8;
  fail("--head", "expected stored (or bf16), int8 or int4, got '" + text + "'");
}

struct Engine::Impl {
  std::unique_ptr<io::TensorStore> store;  // first: borrowed weights point into its maps
  model::ModelConfig cfg;
  model::ModelSpec spec;
  WeightStorage storage = WeightStorage::F32;
  int layers_loaded = 0;
  std::vector<LayerWeights> layers;
  std::unique_ptr<DenseLinear> embed, time0, time2, vae2llm, llm2vae;
  std::unique_ptr<LinearWeights> lm_head;  // DenseLinear, or a QuantLinear with LoadOptions::head = Int4
  std::array<std::vector<float>, kNumPaths> final_norm;
  std::vector<double> inv_freq;        // [head_dim / 2]
  std::vector<int> rope_axis;          // [head_dim / 2]: 0 = t, 1 = h, 2 = w
  ActivationObserver* observer = nullptr;
  bool release_layer_pages = false;  // LoadOptions::release_layer_pages

  int hidden() const { return cfg.hidden_size; }
  int q_dim() const { return cfg.num_heads * cfg.head_dim; }
  int kv_dim() const { return cfg.num_kv_heads * cfg.head_dim; }
};

namespace {

void check_linear_shape(const LinearWeights& w, int64_t out, int64_t in, const std::string& name) {
  if (w.out_features() != out || w.in_features() != in)
    fail(name, "shape [" + std::to_string(w.out_features()) + ", " + std::to_string(w.in_features()) +
                   "], expected [" + std::to_string(out) + ", " + std::to_string(in) + "]");
}

void load_layer(Engine::Impl& m, int l, const LinearFactory& factory) {
  const io::TensorStore& st = *m.store;
  const auto& c = m.cfg;
  LayerWeights& lw = m.layers[l];
  for (Path p : {Path::Und, Path::Gen}) {
    const int pi = static_cast<int>(p);
    const model::PathLayerSpec& names = m.spec.layers[l].path(p);
    lw.in_norm[pi] = load_vector(st, names.input_layernorm, c.hidden_size);
    lw.post_norm[pi] = load_vector(st, names.post_attention_layernorm, c.hidden_size);
    lw.q_norm[pi] = load_vector(st, names.q_norm, c.head_dim);
    lw.k_norm[pi] = load_vector(st, names.k_norm, c.head_dim);
    for (model::LinearKind k : model::kAllLinearKinds) {
      const model::LinearSpec& ls = names.linear(k);
      std::unique_ptr<LinearWeights> w = factory ? factory(ls) : nullptr;
      if (!w) w = load_dense(st, ls.weight_name(), ls.bias_name(), m.storage);
      check_linear_shape(*w, ls.out, ls.in, ls.weight_name());
      lw.linears[pi][static_cast<int>(k)] = std::move(w);
    }
  }
}

// inv_freq[j] = theta^(-2j/head_dim); axis of each frequency from mrope_section (t, h, w).
void init_rope(Engine::Impl& m) {
  const int half = m.cfg.head_dim / 2;
  m.inv_freq.resize(half);
  m.rope_axis.assign(half, 0);
  for (int j = 0; j < half; ++j) m.inv_freq[j] = std::pow(m.cfg.rope_theta, -2.0 * j / m.cfg.head_dim);
  const auto& s = m.cfg.mrope_section;
  if (s[0] + s[1] + s[2] == 0) return;  // plain 1-D RoPE: axis t for every frequency
  if (s[0] + s[1] + s[2] != half)
    fail(m.cfg.source, "mrope_section sums to " + std::to_string(s[0] + s[1] + s[2]) + ", expected head_dim/2 = " +
                           std::to_string(half));
  for (int j = 0; j < half; ++j) m.rope_axis[j] = j < s[0] ? 0 : j < s[0] + s[1] ? 1 : 2;
}

}  // namespace

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;
Engine::~Engine() = default;

Engine Engine::load(const std::string& model_dir, const LoadOptions& opts) {
  if (!opts.linear_factory && is_quantized_checkpoint(model_dir)) return load_quantized(model_dir, opts);
  auto m = std::make_unique<Impl>();
  m->cfg = model::load_config(model_dir);
  m->store = std::make_unique<io::TensorStore>(opts.weights_file.empty() ? model_dir : opts.weights_file);
  // Strict validation: every expected tensor with its shape, nothing missing or unexpected
  // (quantized checkpoints: load_quantized validates them against the same expected map).
  m->spec = opts.linear_factory ? model::expected_spec(m->cfg, model::Arch::LanceMoT)
                                : model::build_spec(m->cfg, *m->store);
  if (m->spec.arch != model::Arch::LanceMoT)
    fail(model_dir, std::string("the forward runs Lance MoT checkpoints; this one is ") + model::arch_name(m->spec.arch));
  m->storage = opts.storage;
  m->release_layer_pages = opts.release_layer_pages;
  const auto& c = m->cfg;
  if (c.num_heads % c.num_kv_heads != 0)
    fail(c.source, "num_attention_heads must be a multiple of num_key_value_heads");
  m->layers_loaded = opts.num_layers < 0 ? c.num_layers : std::min(opts.num_layers, c.num_layers);
  m->layers.resize(m->layers_loaded);
  for (int l = 0; l < m->layers_loaded; ++l) load_layer(*m, l, opts.linear_factory);

  const io::TensorStore& st = *m->store;
  m->embed = load_dense(st, "language_model.model.embed_tokens.weight", "", opts.storage);
  check_linear_shape(*m->embed, c.vocab_size, c.hidden_size, "language_model.model.embed_tokens.weight");
  m->lm_head = opts.head != HeadFormat::Stored ? load_head_quantized(st, "language_model.lm_head.weight", opts.head)
                                                : load_dense(st, "language_model.lm_head.weight", "", opts.storage);
  check_linear_shape(*m->lm_head, c.vocab_size, c.hidden_size, "language_model.lm_head.weight");
  m->final_norm[0] = load_vector(st, "language_model.model.norm.weight", c.hidden_size);
  m->final_norm[1] = load_vector(st, "language_model.model.norm_moe_gen.weight", c.hidden_size);
  // The small connectors stay f32 whatever the storage (they are never quantized).
  m->time0 = load_dense(st, "time_embedder.mlp.0.weight", "time_embedder.mlp.0.bias", WeightStorage::F32);
  check_linear_shape(*m->time0, c.hidden_size, c.time_embed_freq_dim, "time_embedder.mlp.0.weight");
  m->time2 = load_dense(st, "time_embedder.mlp.2.weight", "time_embedder.mlp.2.bias", WeightStorage::F32);
  check_linear_shape(*m->time2, c.hidden_size, c.hidden_size, "time_embedder.mlp.2.weight");
  m->vae2llm = load_dense(st, "vae2llm.weight", "vae2llm.bias", WeightStorage::F32);
  check_linear_shape(*m->vae2llm, c.hidden_size, c.latent_channels, "vae2llm.weight");
  m->llm2vae = load_dense(st, "llm2vae.weight", "llm2vae.bias", WeightStorage::F32);
  check_linear_shape(*m->llm2vae, c.latent_channels, c.hidden_size, "llm2vae.weight");
  init_rope(*m);
  return Engine(std::move(m));
}

const model::ModelConfig& Engine::config() const { return impl_->cfg; }
const model::ModelSpec& Engine::spec() const { return impl_->spec; }
const model::LinearSpec& Engine::linear_spec(const LinearId& id) const {
  linear(id);  // range check
  return impl_->spec.layers[id.layer].path(id.path).linear(id.kind);
}
int Engine::num_layers() const { return impl_->layers_loaded; }
WeightStorage Engine::storage() const { return impl_->storage; }

const LinearWeights& Engine::linear(const LinearId& id) const {
  if (id.layer < 0 || id.layer >= impl_->layers_loaded) fail("Engine::linear", "layer " + std::to_string(id.layer) + " not loaded");
  return *impl_->layers[id.layer].linears[static_cast<int>(id.path)][static_cast<int>(id.kind)];
}

void Engine::replace_linear(const LinearId& id, std::unique_ptr<LinearWeights> w) {
  const LinearWeights& old = linear(id);
  check_linear_shape(*w, old.out_features(), old.in_features(), linear_spec(id).name);
  impl_->layers[id.layer].linears[static_cast<int>(id.path)][static_cast<int>(id.kind)] = std::move(w);
}

void Engine::set_observer(ActivationObserver* obs) { impl_->observer = obs; }

namespace {

// Releases the mapped pages of every tensor of `layer`; evict_cache also advises the page cache away.
void release_pages(const Engine::Impl& m, int layer, bool evict_cache) {
  for (const auto& path : m.spec.layers.at(size_t(layer)).paths) {
    for (const std::string* n : {&path.input_layernorm, &path.post_attention_layernorm, &path.q_norm, &path.k_norm})
      if (!n->empty()) m.store->drop(*n, evict_cache);
    for (const auto& ls : path.linears) {
      m.store->drop(ls.weight_name(), evict_cache);
      if (ls.has_bias) m.store->drop(ls.bias_name(), evict_cache);
    }
  }
}

}  // namespace

void Engine::drop_layer_pages(int layer) const { release_pages(*impl_, layer, true); }

namespace {

// Starts reading the linears of `layer` that the chunk's rows will use in the background
// (streaming: overlaps the disk with the current layer's compute).
void prefetch_pages(const Engine::Impl& m, int layer, const Chunk& chunk) {
  for (const auto& path : m.spec.layers.at(size_t(layer)).paths) {
    const Path p = path.linear(LinearKind::Q).path;
    if (std::find(chunk.paths.begin(), chunk.paths.end(), p) == chunk.paths.end()) continue;
    for (const auto& ls : path.linears) m.store->prefetch(ls.weight_name());
  }
}

}  // namespace

uint64_t Engine::layer_weight_bytes() const {
  uint64_t total = 0;
  for (const auto& lw : impl_->layers)
    for (const auto& path : lw.linears)
      for (const auto& w : path) total += w->weight_bytes();
  return total;
}

// ---- inputs ---------------------------------------------------------------------------------

void Engine::embed_tokens(const int32_t* ids, int64_t n, float* out) const {
  const int64_t h = impl_->hidden();
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= impl_->cfg.vocab_size)
      fail("embed_tokens", "token id " + std::to_string(ids[i]) + " outside the vocabulary (" +
                               std::to_string(impl_->cfg.vocab_size) + ")");
    impl_->embed->row_f32(ids[i], out + i * h);
  }
}

std::vector<float> Engine::time_embedding(double tau) const {
  // phi(tau) = [cos(tau f_k), sin(tau f_k)], f_k = exp(-ln(10000) k / half): cos first.
  const int dim = impl_->cfg.time_embed_freq_dim, half = dim / 2;
  std::vector<float> phi(dim);
  for (int k = 0; k < half; ++k) {
    const double f = std::exp(-std::log(10000.0) * k / half);
    phi[k] = float(std::cos(tau * f));
    phi[half + k] = float(std::sin(tau * f));
  }
  std::vector<float> hid(impl_->hidden()), out(impl_->hidden());
  impl_->time0->apply(phi.data(), 1, hid.data());
  for (float& v : hid) v = v / (1.0f + std::exp(-v));
  impl_->time2->apply(hid.data(), 1, out.data());
  return out;
}

namespace {

// One axis of the 3-D sin-cos table: [sin(p w_k) for k < D/2, cos(p w_k) for k < D/2],
// w_k = 10000^(-k/(D/2)), in float64 like Lance's numpy table.
void sincos_axis(double p, int dim, float* out) {
  const int half = dim / 2;
  for (int k = 0; k < half; ++k) {
    const double w = 1.0 / std::pow(10000.0, double(k) / half);
    out[k] = float(std::sin(p * w));
    out[half + k] = float(std::cos(p * w));
  }
}

}  // namespace

std::vector<float> Engine::latent_embeddings(const float* x, std::array<int, 3> grid, double tau) const {
  const auto& c = impl_->cfg;
  const int h = c.hidden_size;
  const auto [gt, gh, gw] = grid;
  if (gt < 1 || gh < 1 || gw < 1 || gt > c.max_latent_frames || gh > c.max_latent_size || gw > c.max_latent_size)
    fail("latent_embeddings", "latent grid " + std::to_string(gt) + "x" + std::to_string(gh) + "x" +
                                  std::to_string(gw) + " outside the position table (" +
                                  std::to_string(c.max_latent_frames) + " x " + std::to_string(c.max_latent_size) +
                                  " x " + std::to_string(c.max_latent_size) + ")");
  const int64_t n = int64_t(gt) * gh * gw;
  std::vector<float> out(size_t(n * h));
  impl_->vae2llm->apply(x, n, out.data());
  const std::vector<float> te = time_embedding(tau);
  // Axis widths: t and h get (hidden / 3) rounded down to even, w gets the rest.
  const int d_th = (h / 3) & ~1, d_w = h - 2 * d_th;
  std::vector<float> pe(h);
  for (int f = 0; f < gt; ++f)
    for (int r = 0; r < gh; ++r)
      for (int col = 0; col < gw; ++col) {
        sincos_axis(f, d_th, pe.data());
        sincos_axis(r, d_th, pe.data() + d_th);
        sincos_axis(col, d_w, pe.data() + 2 * d_th);
        float* row = out.data() + ((int64_t(f) * gh + r) * gw + col) * h;
        for (int i = 0; i < h; ++i) row[i] += te[i] + pe[i];
      }
  return out;
}

// ---- the decoder ----------------------------------------------------------------------------

namespace {

// Rows of the chunk grouped by path; `all` set when every row takes that path (no gather needed).
struct Routing {
  std::array<std::vector<int64_t>, kNumPaths> rows;
  int64_t total = 0;
  bool whole(int p) const { return int64_t(rows[p].size()) == total; }
};

Routing route(const Chunk& c) {
  Routing r;
  r.total = c.rows();
  for (int64_t i = 0; i < r.total; ++i) r.rows[static_cast<int>(c.paths[i])].push_back(i);
  return r;
}

// y = x W^T for each path's rows through that path's LinearWeights, observer first.
void routed_linear(const Engine::Impl& m, int layer, LinearKind kind, const Routing& rt, const float* x,
                   int64_t in_dim, float* y, int64_t out_dim) {
  for (int p = 0; p < kNumPaths; ++p) {
    const auto& rows = rt.rows[p];
    if (rows.empty()) continue;
    const LinearId id{layer, static_cast<Path>(p), kind};
    const LinearWeights& w = *m.layers[layer].linears[p][static_cast<int>(kind)];
    const int64_t n = int64_t(rows.size());
    if (rt.whole(p)) {
      if (m.observer) m.observer->observe(id, x, n, in_dim);
      w.apply(x, n, y);
      continue;
    }
    std::vector<float> xin(size_t(n * in_dim)), yout(size_t(n * out_dim));
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(&xin[i * in_dim], x + rows[i] * in_dim, sizeof(float) * in_dim);
    if (m.observer) m.observer->observe(id, xin.data(), n, in_dim);
    w.apply(xin.data(), n, yout.data());
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(y + rows[i] * out_dim, &yout[i * out_dim], sizeof(float) * out_dim);
  }
}

// Per-row RMSNorm with the row's path weights; `groups` vectors of `dim` per row (q/k heads).
// x / sqrt(mean(x^2) + eps) * w with the reduction in double (vec_math.h), threaded over vectors.
void routed_rms_norm(const Chunk& c, const std::array<std::vector<float>, kNumPaths>& w, const float* x,
                     int64_t groups, int64_t dim, double eps, float* y) {
  std::vector<const float*> weights(size_t(c.rows() * groups));
  for (int64_t i = 0; i < c.rows(); ++i)
    for (int64_t g = 0; g < groups; ++g) weights[size_t(i * groups + g)] = w[static_cast<int>(c.paths[i])].data();
  rms_norm_rows(x, c.rows() * groups, dim, eps, weights.data(), y);
}

// cos / sin of every row's rotation angles (position of the frequency's axis x inv_freq, in double),
// [rows][head_dim / 2]; computed once per forward and shared by the layers.
void rope_tables(const Engine::Impl& m, const Chunk& c, std::vector<float>& cs, std::vector<float>& sn) {
  const int half = m.cfg.head_dim / 2;
  cs.resize(size_t(c.rows() * half));
  sn.resize(cs.size());
  kernels::parallel_for(c.rows(), 64, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i)
      for (int j = 0; j < half; ++j) {
        const double a = double(c.positions[i][m.rope_axis[j]]) * m.inv_freq[j];
        cs[size_t(i * half + j)] = float(std::cos(a));
        sn[size_t(i * half + j)] = float(std::sin(a));
      }
  });
}

// Half-split rotation x' = x cos + rotate_half(x) sin, angles from the row's 3-D position.
void apply_rope(const Engine::Impl& m, const Chunk& c, float* x, int64_t heads, std::vector<float>& cs,
                std::vector<float>& sn) {
  if (cs.empty()) rope_tables(m, c, cs, sn);
  rope_rotate(x, c.rows(), heads, m.cfg.head_dim / 2, cs.data(), sn.data());
}

void check_chunk(const Engine::Impl& m, const Chunk& c) {
  const int64_t L = c.rows();
  if (L == 0) fail("forward", "empty chunk");
  if (int64_t(c.embeddings.size()) != L * m.hidden() || int64_t(c.positions.size()) != L)
    fail("forward", "chunk embeddings/positions do not match its " + std::to_string(L) + " rows");
  int64_t covered = 0;
  for (const Split& s : c.splits) {
    if (s.len <= 0) fail("forward", "split of non-positive length");
    covered += s.len;
  }
  if (covered != L) fail("forward", "splits cover " + std::to_string(covered) + " rows, chunk has " + std::to_string(L));
  for (const Position3& p : c.positions)
    for (int32_t v : p)
      if (v < 0 || v >= m.cfg.max_position_embeddings)
        fail("forward", "position " + std::to_string(v) + " outside [0, max_position_embeddings = " +
                            std::to_string(m.cfg.max_position_embeddings) + ")");
}

}  // namespace

namespace {

// The MLP runs over blocks of a path's rows: g_mlp_rows each, the remainder joined to the last block,
// so its [rows, intermediate] buffers stay bounded for long sequences (a 48x48 t2i chunk, an x2t
// prompt) and every block of a path with more rows than one block holds at least that many rows. The
// kernels pick their algorithm by row count (kernels/linear.h: GEMM from kGemmMinTokens rows; q4.h:
// W4A16 GEMM above q4_int8_max_tokens()) and each row's result in the GEMM paths does not depend on
// the other rows, so with blocks above both thresholds the blocked MLP equals the unblocked one bit for bit.
std::atomic<int64_t> g_mlp_rows{256};

int64_t mlp_block_rows() {
  return std::max({g_mlp_rows.load(), kernels::kGemmMinTokens, kernels::q4_int8_max_tokens() + 1});
}
int64_t mlp_rows_max(int64_t L) { return std::min(L, 2 * mlp_block_rows() - 1); }

// Work buffers of one decoder layer over L rows (reused across layers). The attention output goes into
// h (free once q, k, v are projected) and o_proj's output into q (free after the attention) when the
// widths allow (q_dim == hidden, as in Lance): two L x hidden buffers fewer for long sequences.
struct LayerScratch {
  std::vector<float> h, q, k, v, o, tmp, gate, up, mlp_in, mlp_out, k_all, v_all, rope_cos, rope_sin;
  LayerScratch(int64_t L, int64_t H, int64_t QD, int64_t KD, int64_t I)
      : h(L * H), q(L * QD), k(L * KD), v(L * KD), o(QD <= H ? 0 : L * QD), tmp(H <= QD ? 0 : L * H),
        gate(mlp_rows_max(L) * I), up(mlp_rows_max(L) * I), mlp_in(mlp_rows_max(L) * H), mlp_out(mlp_rows_max(L) * H) {}
  float* attention_out() { return o.empty() ? h.data() : o.data(); }  // [L, q_dim]
  float* o_proj_out() { return tmp.empty() ? q.data() : tmp.data(); }  // [L, hidden]
};

// x += down(silu(gate(h)) * up(h)) per path, over row blocks (g_mlp_rows); the observer sees each
// linear's rows of a path in order, block by block.
void routed_mlp(const Engine::Impl& m, int layer, const Routing& rt, const float* h, float* x, LayerScratch& s) {
  const int64_t H = m.hidden(), I = m.cfg.intermediate_size;
  for (int p = 0; p < kNumPaths; ++p) {
    const auto& rows = rt.rows[p];
    const int64_t n = int64_t(rows.size());
    if (n == 0) continue;
    const auto& lin = m.layers[layer].linears[p];
    const LinearId gid{layer, static_cast<Path>(p), LinearKind::Gate}, uid{layer, static_cast<Path>(p), LinearKind::Up},
        did{layer, static_cast<Path>(p), LinearKind::Down};
    const bool whole = rt.whole(p);  // rows 0 .. L-1: read in place
    const int64_t B = mlp_block_rows(), blocks = std::max<int64_t>(1, n / B);
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t r0 = b * B, r1 = b + 1 == blocks ? n : r0 + B, k = r1 - r0;
      const float* in = h + r0 * H;
      if (!whole) {
        for (int64_t i = 0; i < k; ++i) std::memcpy(&s.mlp_in[size_t(i * H)], h + rows[size_t(r0 + i)] * H, sizeof(float) * size_t(H));
        in = s.mlp_in.data();
      }
      if (m.observer) m.observer->observe(gid, in, k, H);
      lin[static_cast<int>(LinearKind::Gate)]->apply(in, k, s.gate.data());
      if (m.observer) m.observer->observe(uid, in, k, H);
      lin[static_cast<int>(LinearKind::Up)]->apply(in, k, s.up.data());
      silu_mul(s.gate.data(), s.up.data(), k * I);
      if (m.observer) m.observer->observe(did, s.gate.data(), k, I);
      lin[static_cast<int>(LinearKind::Down)]->apply(s.gate.data(), k, s.mlp_out.data());
      for (int64_t i = 0; i < k; ++i) {
        float* xr = x + (whole ? r0 + i : rows[size_t(r0 + i)]) * H;
        const float* yr = &s.mlp_out[size_t(i * H)];
        for (int64_t c = 0; c < H; ++c) xr[c] += yr[c];
      }
    }
  }
}

// One decoder layer over the residual rows x [L, hidden] (updated in place): the single code path of
// Engine::forward and Engine::forward_layer. `attn_out`, when given, receives o_proj's output.
void run_layer(const Engine::Impl& m, int l, const Chunk& chunk, const Routing& rt, const AttentionLayout& layout,
               std::vector<float>* cache_k, std::vector<float>* cache_v, CacheWrite write, int64_t prefix, float* x,
               LayerScratch& s, float* attn_out, bool attention_only = false) {
  const auto& c = m.cfg;
  const int64_t L = chunk.rows(), H = m.hidden(), QD = m.q_dim(), KD = m.kv_dim();
  const AttentionShape shape{c.num_heads, c.num_kv_heads, c.head_dim};
  const LayerWeights& lw = m.layers[l];
  routed_rms_norm(chunk, lw.in_norm, x, 1, H, c.rms_norm_eps, s.h.data());
  routed_linear(m, l, LinearKind::Q, rt, s.h.data(), H, s.q.data(), QD);
  routed_linear(m, l, LinearKind::K, rt, s.h.data(), H, s.k.data(), KD);
  routed_linear(m, l, LinearKind::V, rt, s.h.data(), H, s.v.data(), KD);
  routed_rms_norm(chunk, lw.q_norm, s.q.data(), c.num_heads, c.head_dim, c.rms_norm_eps, s.q.data());
  routed_rms_norm(chunk, lw.k_norm, s.k.data(), c.num_kv_heads, c.head_dim, c.rms_norm_eps, s.k.data());
  apply_rope(m, chunk, s.q.data(), c.num_heads, s.rope_cos, s.rope_sin);
  apply_rope(m, chunk, s.k.data(), c.num_kv_heads, s.rope_cos, s.rope_sin);

  // Keys/values over [cache rows, chunk rows].
  const float *keys = s.k.data(), *vals = s.v.data();
  if (cache_k && write == CacheWrite::Append) {
    cache_k->insert(cache_k->end(), s.k.begin(), s.k.end());
    cache_v->insert(cache_v->end(), s.v.begin(), s.v.end());
    keys = cache_k->data();
    vals = cache_v->data();
  } else if (prefix > 0) {
    s.k_all.assign(cache_k->begin(), cache_k->end());
    s.k_all.insert(s.k_all.end(), s.k.begin(), s.k.end());
    s.v_all.assign(cache_v->begin(), cache_v->end());
    s.v_all.insert(s.v_all.end(), s.v.begin(), s.v.end());
    keys = s.k_all.data();
    vals = s.v_all.data();
  }
  float* const att = s.attention_out();
  attention(shape, layout, s.q.data(), keys, vals, att);

  float* const proj = s.o_proj_out();
  routed_linear(m, l, LinearKind::O, rt, att, QD, proj, H);
  if (attn_out) std::copy(proj, proj + L * H, attn_out);
  if (attention_only) return;
  for (int64_t i = 0; i < L * H; ++i) x[i] += proj[i];
  routed_rms_norm(chunk, lw.post_norm, x, 1, H, c.rms_norm_eps, s.h.data());
  routed_mlp(m, l, rt, s.h.data(), x, s);
}

}  // namespace

namespace {

// Index of the first NaN / Inf in [v, v + n), or -1. A pass over the hidden states costs n reads per
// layer against n x hidden multiply-adds of the layer itself.
int64_t first_non_finite(const float* v, int64_t n) {
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) ok &= std::isfinite(v[i]);
  if (ok) return -1;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) return i;
  return -1;
}

// The first of `names` (tensors of the store) holding a NaN / Inf, or "".
std::string first_non_finite_tensor(const Engine::Impl& m, const std::vector<std::string>& names) {
  for (const auto& n : names) {
    if (n.empty() || !m.store->has(n)) continue;
    const std::vector<float> v = m.store->read_f32(n);
    if (first_non_finite(v.data(), int64_t(v.size())) >= 0) return n;
  }
  return "";
}

std::vector<std::string> layer_tensor_names(const Engine::Impl& m, int layer) {
  std::vector<std::string> names;
  for (const auto& path : m.spec.layers.at(size_t(layer)).paths) {
    for (const std::string* n : {&path.input_layernorm, &path.q_norm, &path.k_norm, &path.post_attention_layernorm})
      names.push_back(*n);
    for (const auto& ls : path.linears) {
      names.push_back(ls.weight_name());
      if (ls.has_bias) names.push_back(ls.bias_name());
    }
  }
  return names;
}

// Non-finite values are an error, never an output: names where they first appear and, when one of
// the weights there is itself non-finite, that tensor (a corrupt checkpoint); otherwise the values
// overflowed (config values such as rms_norm_eps / rope_theta, or the input).
[[noreturn]] void non_finite_error(const Engine::Impl& m, const std::string& stage, const std::vector<std::string>& suspects) {
  const std::string bad = first_non_finite_tensor(m, suspects);
  fail(m.cfg.source.empty() ? "forward" : m.cfg.source,
       "non-finite values (NaN / Inf) first appear " + stage +
           (bad.empty() ? std::string("; no weight there is non-finite: the values overflowed")
                        : "; the weight " + bad + " holds NaN / Inf (corrupt checkpoint)"));
}

std::string rows_of_path(const Chunk& c, int64_t first_bad_row) {
  return first_bad_row >= 0 && first_bad_row < c.rows() ? std::string(model::path_name(c.paths[size_t(first_bad_row)])) + " row " +
                                                               std::to_string(first_bad_row)
                                                         : "";
}

}  // namespace

std::vector<float> Engine::forward(const Chunk& chunk, KvCache* cache, CacheWrite write,
                                   std::vector<float>* layer_states) const {
  const Impl& m = *impl_;
  const auto& c = m.cfg;
  check_chunk(m, chunk);
  if (write == CacheWrite::Append && !cache) fail("forward", "CacheWrite::Append needs a cache");
  const int64_t L = chunk.rows(), H = m.hidden(), QD = m.q_dim(), KD = m.kv_dim(), I = c.intermediate_size;
  const int64_t prefix = cache ? cache->rows_ : 0;
  if (cache && cache->k_.empty()) {
    cache->k_.resize(m.layers_loaded);
    cache->v_.resize(m.layers_loaded);
  }

  // Key splits: the cached ones, then the chunk's.
  std::vector<Split> key_splits = cache ? cache->splits_ : std::vector<Split>{};
  key_splits.insert(key_splits.end(), chunk.splits.begin(), chunk.splits.end());
  const AttentionLayout layout = make_attention_layout(key_splits, prefix, L);

  const Routing rt = route(chunk);
  std::vector<float> x = chunk.embeddings;
  if (const int64_t bad = first_non_finite(x.data(), int64_t(x.size())); bad >= 0)
    non_finite_error(m, "in the input embeddings (" + rows_of_path(chunk, bad / H) + ")",
                     {"language_model.model.embed_tokens.weight", "vae2llm.weight", "vae2llm.bias", "time_embedder.mlp.0.weight",
                      "time_embedder.mlp.2.weight", "latent_pos_embed.pos_embed"});
  if (layer_states) {
    layer_states->assign(size_t((m.layers_loaded + 1) * L * H), 0.0f);
    std::copy(x.begin(), x.end(), layer_states->begin());
  }
  LayerScratch scratch(L, H, QD, KD, I);
  for (int l = 0; l < m.layers_loaded; ++l) {
    if (m.release_layer_pages && l + 1 < m.layers_loaded) prefetch_pages(m, l + 1, chunk);
    run_layer(m, l, chunk, rt, layout, cache ? &cache->k_[l] : nullptr, cache ? &cache->v_[l] : nullptr, write, prefix,
              x.data(), scratch, nullptr);
    if (const int64_t bad = first_non_finite(x.data(), L * H); bad >= 0)
      non_finite_error(m, "in the output of decoder layer " + std::to_string(l) + " (" + rows_of_path(chunk, bad / H) + ")",
                       layer_tensor_names(m, l));
    if (m.release_layer_pages) release_pages(m, l, false);  // the next pass faults them back in
    if (layer_states) std::copy(x.begin(), x.end(), layer_states->begin() + (l + 1) * L * H);
  }
  if (cache && write == CacheWrite::Append) {
    cache->splits_.insert(cache->splits_.end(), chunk.splits.begin(), chunk.splits.end());
    cache->rows_ += L;
  }
  std::vector<float> h(L * H);
  routed_rms_norm(chunk, m.final_norm, x.data(), 1, H, c.rms_norm_eps, h.data());
  if (const int64_t bad = first_non_finite(h.data(), L * H); bad >= 0)
    non_finite_error(m, "after the final norm (" + rows_of_path(chunk, bad / H) + ")",
                     {"language_model.model.norm.weight", "language_model.model.norm_moe_gen.weight"});
  return h;
}

void set_mlp_block_rows(int64_t rows) {
  if (rows < 1) fail("set_mlp_block_rows", std::to_string(rows) + " rows");
  g_mlp_rows = rows;
}

void Engine::forward_layer(int layer, const Chunk& chunk, float* x, std::vector<float>* attn_out) const {
  run_layer_part(layer, chunk, x, attn_out, false);
}

void Engine::attention_output(int layer, const Chunk& chunk, const float* x, std::vector<float>& attn_out) const {
  // run_layer returns before it touches x when attention_only is set.
  run_layer_part(layer, chunk, const_cast<float*>(x), &attn_out, true);
}

void Engine::run_layer_part(int layer, const Chunk& chunk, float* x, std::vector<float>* attn_out, bool attention_only) const {
  const Impl& m = *impl_;
  if (layer < 0 || layer >= m.layers_loaded) fail("forward_layer", "layer " + std::to_string(layer) + " not loaded");
  Chunk shape_only;  // check_chunk's row/split/position checks without the embeddings
  shape_only.paths = chunk.paths;
  shape_only.positions = chunk.positions;
  shape_only.splits = chunk.splits;
  shape_only.embeddings.resize(size_t(chunk.rows() * m.hidden()));
  check_chunk(m, shape_only);
  const int64_t L = chunk.rows();
  const AttentionLayout layout = make_attention_layout(chunk.splits, 0, L);
  const Routing rt = route(chunk);
  LayerScratch scratch(L, m.hidden(), m.q_dim(), m.kv_dim(), m.cfg.intermediate_size);
  if (attn_out) attn_out->assign(size_t(L * m.hidden()), 0.0f);
  run_layer(m, layer, chunk, rt, layout, nullptr, nullptr, CacheWrite::No, 0, x, scratch, attn_out ? attn_out->data() : nullptr,
            attention_only);
}

std::vector<float> Engine::logits(const float* normed, int64_t n) const {
  std::vector<float> out(size_t(n * impl_->cfg.vocab_size));
  impl_->lm_head->apply(normed, n, out.data());
  if (first_non_finite(out.data(), int64_t(out.size())) >= 0)
    non_finite_error(*impl_, "in the logits (lm_head output)", {"language_model.lm_head.weight"});
  return out;
}

std::vector<float> Engine::velocity(const float* normed, int64_t n) const {
  std::vector<float> out(size_t(n * impl_->cfg.latent_channels));
  impl_->llm2vae->apply(normed, n, out.data());
  if (first_non_finite(out.data(), int64_t(out.size())) >= 0)
    non_finite_error(*impl_, "in the velocity (llm2vae output)", {"llm2vae.weight", "llm2vae.bias"});
  return out;
}

// ---- chunk helpers --------------------------------------------------------------------------

std::vector<Position3> text_positions(int64_t n, int32_t start) {
  std::vector<Position3> p(n);
  for (int64_t i = 0; i < n; ++i) p[i] = {start + int32_t(i), start + int32_t(i), start + int32_t(i)};
  return p;
}

Chunk text_chunk(const Engine& e, const std::vector<int32_t>& ids, const std::vector<Position3>& pos,
                 const std::vector<Split>& splits) {
  Chunk c;
  c.embeddings.resize(ids.size() * size_t(e.config().hidden_size));
  e.embed_tokens(ids.data(), int64_t(ids.size()), c.embeddings.data());
  c.paths.assign(ids.size(), Path::Und);
  c.positions = pos;
  c.splits = splits;
  return c;
}

}  // namespace lq::fwd
