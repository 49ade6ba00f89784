#include "vit/vit.h"

#include <cmath>
#include <cstring>
#include <map>

#include "forward/attention.h"
#include "formats/checkpoint.h"
#include "forward/quant_linear.h"
#include "num/formats.h"
#include "quant/quantizer.h"
#include "io/error.h"
#include "io/safetensors.h"
#include "kernels/parallel.h"

namespace lq::vit {

WindowOrder window_order(int grid_h, int grid_w, const VitConfig& c) {
  const int ms = c.spatial_merge_size, ws = c.window_units();
  if (grid_h % ms || grid_w % ms) fail("vit", "patch grid " + std::to_string(grid_h) + "x" + std::to_string(grid_w) +
                                                  " is not a multiple of the merge size " + std::to_string(ms));
  const int lh = grid_h / ms, lw = grid_w / ms;
  // get_window_index pads each side by ws - side % ws (a whole empty window when it divides) and lists
  // the windows row by row, the units of a window row by row; empty windows drop out.
  const int nwh = (lh + ws - lh % ws) / ws, nww = (lw + ws - lw % ws) / ws;
  WindowOrder o;
  o.units.reserve(size_t(lh) * size_t(lw));
  for (int wh = 0; wh < nwh; ++wh)
    for (int ww = 0; ww < nww; ++ww) {
      int64_t n = 0;
      for (int r = 0; r < ws; ++r)
        for (int col = 0; col < ws; ++col) {
          const int y = wh * ws + r, x = ww * ws + col;
          if (y < lh && x < lw) {
            o.units.push_back(int32_t(y * lw + x));
            ++n;
          }
        }
      if (n) o.window_patches.push_back(n * c.merge_unit());
    }
  return o;
}

std::vector<float> rotary_angles(int grid_h, int grid_w, const VitConfig& c) {
  const int ms = c.spatial_merge_size, quarter = c.head_dim() / 4, dim = c.head_dim() / 2;
  // Qwen2_5_VisionRotaryEmbedding(head_dim / 2): inv_freq = 1 / theta^(arange(0, dim, 2) / dim), in f32.
  std::vector<float> inv(static_cast<size_t>(quarter));
  for (int j = 0; j < quarter; ++j) inv[size_t(j)] = 1.0f / std::pow(float(c.rope_theta), float(2 * j) / float(dim));
  std::vector<float> a(size_t(grid_h) * size_t(grid_w) * size_t(dim));
  size_t p = 0;
  for (int mh = 0; mh < grid_h / ms; ++mh)
    for (int mw = 0; mw < grid_w / ms; ++mw)
      for (int sh = 0; sh < ms; ++sh)
        for (int sw = 0; sw < ms; ++sw, ++p) {
          const float row = float(mh * ms + sh), col = float(mw * ms + sw);
          for (int j = 0; j < quarter; ++j) {
            a[p * size_t(dim) + size_t(j)] = row * inv[size_t(j)];
            a[p * size_t(dim) + size_t(quarter + j)] = col * inv[size_t(j)];
          }
        }
  return a;
}

namespace {

bool aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

// A weight viewed as [rows, numel / rows] (+ bias), borrowed from the map when the dtype is the storage's.
std::unique_ptr<fwd::LinearWeights> load_dense(const io::TensorStore& st, const std::string& weight, const std::string& bias,
                                               fwd::WeightStorage storage) {
  const io::TensorInfo& t = st.info(weight);
  kernels::DenseMatrix m;
  m.rows = t.shape[0];
  m.cols = t.numel() / m.rows;
  const bool f32 = storage == fwd::WeightStorage::F32;
  m.type = f32 ? kernels::WeightType::F32 : kernels::WeightType::BF16;
  const size_t elem = f32 ? 4 : 2;
  std::vector<uint8_t> owned;
  const uint8_t* mapped = st.file_of(weight).bytes(t).data();
  if (t.dtype == (f32 ? io::DType::F32 : io::DType::BF16) && aligned(mapped, elem)) {
    m.data = mapped;
  } else {
    owned.resize(size_t(m.rows * m.cols) * elem);
    if (f32) st.read_rows_f32(weight, 0, m.rows, reinterpret_cast<float*>(owned.data()));
    else st.read_rows_bf16(weight, 0, m.rows, reinterpret_cast<uint16_t*>(owned.data()));
    st.drop(weight, /*evict_cache=*/false);  // converted into `owned`: the mapped pages need not stay resident
  }
  std::vector<float> b;
  if (!bias.empty()) b = st.read_f32(bias);
  return std::make_unique<fwd::DenseLinear>(m, std::move(owned), std::move(b));
}

struct Block {
  std::vector<float> norm1, norm2;
  std::unique_ptr<fwd::LinearWeights> qkv, proj, gate, up, down;
};

void rms_norm(const float* x, int64_t rows, int64_t width, const float* w, double eps, float* out) {
  kernels::parallel_for(rows, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* xr = x + r * width;
      float* o = out + r * width;
      double ss = 0;
      for (int64_t i = 0; i < width; ++i) ss += double(xr[i]) * xr[i];
      const float inv = float(1.0 / std::sqrt(ss / double(width) + eps));
      for (int64_t i = 0; i < width; ++i) o[i] = w[i] * (xr[i] * inv);
    }
  });
}

}  // namespace

struct Vit::Impl {
  VitConfig c;
  std::string path, prefix;
  VitLoadOptions opts;
  std::unique_ptr<io::TensorStore> store;
  std::unique_ptr<fwd::LinearWeights> patch_embed, merger0, merger2;
  std::vector<float> ln_q;
  std::vector<Block> blocks;
  std::string stored_quantization;

  std::unique_ptr<fwd::LinearWeights>& slot(const std::string& name) {
    if (name == "patch_embed.proj") return patch_embed;
    if (name == "merger.mlp.0") return merger0;
    if (name == "merger.mlp.2") return merger2;
    if (name.rfind("blocks.", 0) == 0) {
      const size_t dot = name.find('.', 7);
      if (dot != std::string::npos) {
        size_t used = 0;
        int b = -1;
        try {
          b = std::stoi(name.substr(7, dot - 7), &used);
        } catch (const std::exception&) {
        }
        if (b >= 0 && b < int(blocks.size()) && used == dot - 7) {
          const std::string rest = name.substr(dot + 1);
          Block& k = blocks[size_t(b)];
          if (rest == "attn.qkv") return k.qkv;
          if (rest == "attn.proj") return k.proj;
          if (rest == "mlp.gate_proj") return k.gate;
          if (rest == "mlp.up_proj") return k.up;
          if (rest == "mlp.down_proj") return k.down;
        }
      }
    }
    fail("vit", "no linear named '" + name + "'");
  }

  void drop_block(int b) const {
    if (!opts.release_pages) return;
    const std::string p = prefix + "blocks." + std::to_string(b) + ".";
    for (const char* n : {"attn.qkv.weight", "attn.proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"})
      if (store->has(p + n)) store->drop(p + n, /*evict_cache=*/false);  // quantized linears own their codes
  }

  // One temporal slice: patches [S, patch_dim] -> merged rows [S / mu, out] in raster order.
  void slice_forward(const float* patches, int gh, int gw, float* out) const {
    const int64_t S = int64_t(gh) * gw, H = c.hidden_size, I = c.intermediate_size, mu = c.merge_unit();
    const int heads = c.num_heads, hd = c.head_dim(), half = hd / 2;
    const WindowOrder wo = window_order(gh, gw, c);
    const std::vector<float> ang = rotary_angles(gh, gw, c);

    // Patch embedding, then rows (and their rotary angles) in window order, unit by unit.
    std::vector<float> x0(size_t(S * H)), x(size_t(S * H));
    patch_embed->apply(patches, S, x0.data());
    std::vector<float> cosv(size_t(S) * size_t(half)), sinv(size_t(S) * size_t(half));
    for (size_t i = 0; i < wo.units.size(); ++i)
      for (int64_t k = 0; k < mu; ++k) {
        const int64_t src = int64_t(wo.units[i]) * mu + k, dst = int64_t(i) * mu + k;
        std::memcpy(&x[size_t(dst * H)], &x0[size_t(src * H)], sizeof(float) * size_t(H));
        for (int d = 0; d < half; ++d) {
          const float a = ang[size_t(src) * size_t(half) + size_t(d)];
          cosv[size_t(dst) * size_t(half) + size_t(d)] = float(std::cos(double(a)));
          sinv[size_t(dst) * size_t(half) + size_t(d)] = float(std::sin(double(a)));
        }
      }
    x0 = {};

    std::vector<fwd::Split> window_splits, full_splits{{S, fwd::SplitMode::Noise}};
    for (int64_t n : wo.window_patches) window_splits.push_back({n, fwd::SplitMode::Noise});
    const fwd::AttentionLayout window_layout = fwd::make_attention_layout(window_splits, 0, S);
    const fwd::AttentionLayout full_layout = fwd::make_attention_layout(full_splits, 0, S);
    const fwd::AttentionShape shape{heads, heads, hd};

    std::vector<float> h(size_t(S * H)), qkv(size_t(S * 3 * H)), q(size_t(S * H)), k(size_t(S * H)), v(size_t(S * H)),
        att(size_t(S * H)), tmp(size_t(S * H)), g(size_t(S * I)), u(size_t(S * I));
    for (int b = 0; b < c.depth; ++b) {
      const Block& blk = blocks[size_t(b)];
      rms_norm(x.data(), S, H, blk.norm1.data(), c.rms_norm_eps, h.data());
      blk.qkv->apply(h.data(), S, qkv.data());
      // qkv rows are (3, heads, hd); rotate q and k: x' = x cos + rotate_half(x) sin within each head.
      kernels::parallel_for(S, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const float* src = &qkv[size_t(r * 3 * H)];
          const float* cs = &cosv[size_t(r) * size_t(half)];
          const float* sn = &sinv[size_t(r) * size_t(half)];
          for (int hh = 0; hh < heads; ++hh)
            for (int which = 0; which < 2; ++which) {
              const float* in = src + which * H + hh * hd;
              float* o = (which == 0 ? q.data() : k.data()) + r * H + hh * hd;
              for (int d = 0; d < half; ++d) {
                o[d] = in[d] * cs[d] - in[d + half] * sn[d];
                o[d + half] = in[d + half] * cs[d] + in[d] * sn[d];
              }
            }
          std::memcpy(&v[size_t(r * H)], src + 2 * H, sizeof(float) * size_t(H));
        }
      });
      fwd::attention(shape, c.full_attention(b) ? full_layout : window_layout, q.data(), k.data(), v.data(), att.data());
      blk.proj->apply(att.data(), S, tmp.data());
      for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
      rms_norm(x.data(), S, H, blk.norm2.data(), c.rms_norm_eps, h.data());
      blk.gate->apply(h.data(), S, g.data());
      blk.up->apply(h.data(), S, u.data());
      kernels::parallel_for(int64_t(g.size()), 4096, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const float a = g[size_t(i)];
          g[size_t(i)] = a / (1.0f + std::exp(-a)) * u[size_t(i)];
        }
      });
      blk.down->apply(g.data(), S, tmp.data());
      for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
      drop_block(b);
    }
    // Merger on the window-ordered rows (each unit's patches stay contiguous), then back to raster order.
    rms_norm(x.data(), S, H, ln_q.data(), c.rms_norm_eps, h.data());
    const int64_t units = S / mu, M = H * mu, O = c.out_hidden_size;
    std::vector<float> m(size_t(units * M)), y(size_t(units * O));
    merger0->apply(h.data(), units, m.data());
    kernels::parallel_for(int64_t(m.size()), 4096, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const double a = m[size_t(i)];
        m[size_t(i)] = float(0.5 * a * (1.0 + std::erf(a / std::sqrt(2.0))));
      }
    });
    merger2->apply(m.data(), units, y.data());
    for (size_t i = 0; i < wo.units.size(); ++i)
      std::memcpy(out + int64_t(wo.units[i]) * O, &y[i * size_t(O)], sizeof(float) * size_t(O));
  }
};

Vit::Vit(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Vit::Vit(Vit&&) noexcept = default;
Vit& Vit::operator=(Vit&&) noexcept = default;
Vit::~Vit() = default;

Vit Vit::load(const std::string& path, const VitLoadOptions& opts) { return load(locate_vit(path), opts); }

Vit Vit::load(const VitLocation& where, const VitLoadOptions& opts) {
  auto im = std::make_unique<Impl>();
  im->c = where.config;
  im->path = where.weights;
  im->prefix = where.prefix;
  im->opts = opts;
  im->store = std::make_unique<io::TensorStore>(where.weights);
  // A quantized checkpoint: its reader validates every quantized linear's parts (names, dtypes, shapes).
  std::unique_ptr<formats::CheckpointReader> reader;
  if (!where.checkpoint_dir.empty()) reader = std::make_unique<formats::CheckpointReader>(where.checkpoint_dir);
  check_vit_tensors(im->c, *im->store, where.prefix, where.weights, reader.get());
  const io::TensorStore& st = *im->store;
  const std::string& p = where.prefix;
  const auto storage = opts.storage;
  std::map<int64_t, int> groups;
  int dense_narrow = 0, dense_chosen = 0;  // too narrow for the 4-bit kernels / kept by --keep
  // A linear: quantized in the checkpoint (the fused 4-bit kernels), else dense from the map.
  auto linear = [&](const std::string& base, bool bias) -> std::unique_ptr<fwd::LinearWeights> {
    if (reader && reader->is_quantized(p + base)) {
      const quant::QTensor q = reader->read_quantized(p + base);
      std::vector<float> b;
      if (bias) {
        if (!st.has(p + base + ".bias")) fail(where.weights, "quantized ViT linear " + p + base + " has no " + p + base + ".bias");
        b = st.read_f32(p + base + ".bias");
      }
      ++groups[q.group];
      auto w = fwd::make_quant_linear(q, std::move(b), where.weights + ": " + p + base);
      for (const auto& t : reader->file().tensors())  // the kernel layout is a copy: release the mapped parts
        if (t.name.rfind(p + base + ".", 0) == 0) reader->file().drop(t, /*evict_cache=*/false);
      return w;
    }
    auto w = load_dense(st, p + base + ".weight", bias ? p + base + ".bias" : "", storage);
    if (base != "patch_embed.proj") ++(rtn_int4_params(base, w->in_features()) ? dense_chosen : dense_narrow);
    return w;
  };
  im->patch_embed = linear("patch_embed.proj", false);
  for (int b = 0; b < im->c.depth; ++b) {
    const std::string bn = "blocks." + std::to_string(b) + ".";
    Block k;
    k.norm1 = st.read_f32(p + bn + "norm1.weight");
    k.norm2 = st.read_f32(p + bn + "norm2.weight");
    k.qkv = linear(bn + "attn.qkv", true);
    k.proj = linear(bn + "attn.proj", true);
    k.gate = linear(bn + "mlp.gate_proj", true);
    k.up = linear(bn + "mlp.up_proj", true);
    k.down = linear(bn + "mlp.down_proj", true);
    im->blocks.push_back(std::move(k));
  }
  im->ln_q = st.read_f32(p + "merger.ln_q.weight");
  im->merger0 = linear("merger.mlp.0", true);
  im->merger2 = linear("merger.mlp.2", true);
  if (!groups.empty()) im->stored_quantization = rtn_int4_summary(groups, dense_narrow, dense_chosen);
  return Vit(std::move(im));
}

const VitConfig& Vit::config() const { return impl_->c; }
const std::string& Vit::weights_path() const { return impl_->path; }
const std::string& Vit::prefix() const { return impl_->prefix; }
const std::string& Vit::stored_quantization() const { return impl_->stored_quantization; }

std::vector<float> Vit::forward(const float* patches, std::array<int, 3> grid) const {
  const VitConfig& c = impl_->c;
  const auto [t, gh, gw] = grid;
  if (t < 1 || gh < 1 || gw < 1) fail("vit", "empty patch grid");
  if (gh % c.spatial_merge_size || gw % c.spatial_merge_size)
    fail("vit", "patch grid " + std::to_string(gh) + "x" + std::to_string(gw) + " is not a multiple of the merge size");
  const int64_t S = int64_t(gh) * gw, per_slice_out = S / c.merge_unit() * c.out_hidden_size;
  std::vector<float> out(size_t(t) * size_t(per_slice_out));
  for (int s = 0; s < t; ++s)
    impl_->slice_forward(patches + int64_t(s) * S * c.patch_dim(), gh, gw, out.data() + int64_t(s) * per_slice_out);
  return out;
}

std::vector<std::string> Vit::linear_names() const {
  std::vector<std::string> n = {"patch_embed.proj"};
  for (int b = 0; b < impl_->c.depth; ++b)
    for (const char* k : {"attn.qkv", "attn.proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"})
      n.push_back("blocks." + std::to_string(b) + "." + k);
  n.push_back("merger.mlp.0");
  n.push_back("merger.mlp.2");
  return n;
}

const fwd::LinearWeights& Vit::linear(const std::string& name) const { return *impl_->slot(name); }

void Vit::replace_linear(const std::string& name, std::unique_ptr<fwd::LinearWeights> w) {
  auto& s = impl_->slot(name);
  if (!w || w->in_features() != s->in_features() || w->out_features() != s->out_features())
    fail("vit", "replacement for " + name + " has the wrong shape");
  s = std::move(w);
}

uint64_t Vit::weight_bytes() const {
  uint64_t n = 0;
  for (const auto& name : linear_names()) n += linear(name).weight_bytes();
  return n;
}

std::optional<quant::QuantParams> rtn_int4_params(const std::string& name, int64_t in) {
  if (name == "patch_embed.proj") return std::nullopt;  // never a target: the image's raw pixels
  if (in % 16) return std::nullopt;  // the 4-bit kernels take input widths in steps of 16 (not 3420)
  quant::QuantParams p;
  p.scheme = quant::Scheme::Int4Asym;
  p.scale_dtype = quant::ScaleDType::BF16;
  p.group = 64;
  while (in % p.group) p.group -= 16;
  return p;
}

quant::QTensor rtn_int4_quantize(const float* w, int64_t out, int64_t in, const quant::QuantParams& p) {
  return quant::quantize(w, out, in, p);
}

std::string rtn_int4_summary(const std::map<int64_t, int>& groups, int kept_width, int kept_chosen) {
  std::string out;
  for (auto it = groups.rbegin(); it != groups.rend(); ++it)
    out += (out.empty() ? "" : ", ") + std::string("int4 g") + std::to_string(it->first) + " x" + std::to_string(it->second);
  if (kept_width) out += ", " + std::to_string(kept_width) + " kept dense (input width not a multiple of 16)";
  if (kept_chosen) out += ", " + std::to_string(kept_chosen) + " kept dense (--keep)";
  return out;
}

std::string quantize_linears_rtn_int4(Vit& v, const std::function<bool(const std::string&)>& keep) {
  if (!v.stored_quantization().empty())
    fail(v.weights_path(), "the ViT's linears are already 4-bit in this checkpoint (" + v.stored_quantization() + ")");
  std::map<int64_t, int> groups;
  int kept = 0, chosen = 0;
  for (const std::string& name : v.linear_names()) {
    if (name == "patch_embed.proj") continue;
    const std::optional<quant::QuantParams> p = rtn_int4_params(name, v.linear(name).in_features());
    if (!p) {
      ++kept;
      continue;
    }
    if (keep && keep(name)) {
      ++chosen;
      continue;
    }
    const auto* dense = dynamic_cast<const fwd::DenseLinear*>(&v.linear(name));
    if (!dense) fail("vit", name + " is not a dense linear (already quantized?)");
    const kernels::DenseMatrix& m = dense->matrix();
    std::vector<float> w(size_t(m.rows * m.cols));
    if (m.type == kernels::WeightType::F32) std::memcpy(w.data(), m.data, w.size() * sizeof(float));
    else num::bf16_to_f32(static_cast<const uint16_t*>(m.data), w.data(), w.size());
    const quant::QTensor q = rtn_int4_quantize(w.data(), m.rows, m.cols, *p);
    ++groups[p->group];
    v.replace_linear(name, fwd::make_quant_linear(q, dense->bias(), name));
  }
  return rtn_int4_summary(groups, kept, chosen);
}

}  // namespace lq::vit
