// The Wan2.2 VAE network. Structure and chunking follow diffusers' AutoencoderKLWan (is_residual) and
// Wan's vae2_2.py; the derivation of the cache rules below is in docs/vae.md.
//
// Causal 3-D convolutions are streams: output frame f = bias + sum_j W_j * in(f - (kt - 1 - j)), where
// frames before the first one are zeros and the previous chunk's last two input frames are kept
// (History). Every 3x3x3 filter is stored as three 2-D filters, one per time tap; taps that would
// multiply the zero frames before the start are skipped, so a single picture costs one tap in three.
// Two layers deviate, as in the reference: the decoder's temporal up-sampler passes the first chunk's
// frame through without its time filter (whose stream starts at the second chunk), and the encoder's
// temporal down-sampler passes the first chunk through and then filters [last frame of the previous
// chunk, chunk] with stride 2.
#include "vae/wan_vae.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>

#include "io/error.h"
#include "kernels/linear.h"
#include "kernels/parallel.h"
#include "vae/weights.h"

namespace lq::vae {

namespace {

using kernels::Conv2d;
using kernels::Conv2dParams;
using kernels::ConvBackend;

// A time chunk of frames, channels-last [t, h, w, c].
struct Frames {
  int64_t t = 0, h = 0, w = 0, c = 0;
  std::vector<float> d;
  Frames() = default;
  Frames(int64_t t_, int64_t h_, int64_t w_, int64_t c_) : t(t_), h(h_), w(w_), c(c_), d(size_t(t_ * h_ * w_ * c_)) {}
  int64_t frame_size() const { return h * w * c; }
  float* frame(int64_t i) { return d.data() + i * frame_size(); }
  const float* frame(int64_t i) const { return d.data() + i * frame_size(); }
};

void add_into(Frames& y, const Frames& x) {
  if (y.d.size() != x.d.size()) fail("Wan VAE", "internal: residual shapes differ");
  float* a = y.d.data();
  const float* b = x.d.data();
  kernels::parallel_for(int64_t(y.d.size()), 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) a[i] += b[i];
  });
}

// Per-run state of the causal filters: the cached input frames of each stream (oldest first) and
// whether a layer has seen its first chunk.
struct History {
  std::vector<float> frames;
  int64_t count = 0, frame_size = 0;
  const float* frame(int64_t i) const { return frames.data() + i * frame_size; }
};
struct RunState {
  std::vector<History> hist;
  std::vector<char> started;
  bool last_chunk = false;  // nothing follows: the caches need not be kept
};

// Slot numbers for the per-run state, handed out while a network is built.
struct Slots {
  int hist = 0, flags = 0;
};

class Loader {
 public:
  Loader(const WeightSource& src, ConvBackend backend) : src_(src), backend_(backend) {}
  std::vector<float> take(const std::string& name) const {
    std::vector<float> v = src_.read(name);
    src_.release(name);
    return v;
  }
  ConvBackend backend() const { return backend_; }

 private:
  const WeightSource& src_;
  ConvBackend backend_;
};

// Filter tap j of a PyTorch weight [cout, cin, kt, kh, kw] as [cout, kh, kw, cin].
std::vector<float> filter_tap(const std::vector<float>& w, int64_t cout, int64_t cin, int kt, int kh, int kw, int j) {
  std::vector<float> out(size_t(cout * kh * kw * cin));
  for (int64_t co = 0; co < cout; ++co)
    for (int64_t ci = 0; ci < cin; ++ci)
      for (int dy = 0; dy < kh; ++dy)
        for (int dx = 0; dx < kw; ++dx)
          out[size_t(((co * kh + dy) * kw + dx) * cin + ci)] = w[size_t((((co * cin + ci) * kt + j) * kh + dy) * kw + dx)];
  return out;
}

// ---- causal convolution ------------------------------------------------------------------------

class CausalConv {
 public:
  // kernel (kt, k, k), spatial padding k / 2 (or `pad` given), stride `stride` in space.
  CausalConv(const Loader& L, const std::string& name, int64_t cin, int64_t cout, int kt, int k, Slots* slots,
             int stride = 1, bool downsample_pad = false)
      : cin_(cin), cout_(cout), kt_(kt) {
    const std::vector<float> w = L.take(name + ".weight"), b = L.take(name + ".bias");
    Conv2dParams p;
    p.cin = cin;
    p.cout = cout;
    p.kh = p.kw = k;
    p.stride = stride;
    if (downsample_pad) p.pad_bottom = p.pad_right = 1;  // ZeroPad2d((0, 1, 0, 1))
    else p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = k / 2;
    for (int j = 0; j < kt; ++j) {
      const std::vector<float> tap = filter_tap(w, cout, cin, kt, k, k, j);
      taps_.emplace_back(p, tap.data(), b.data(), L.backend());
    }
    if (kt > 1 && slots) slot_ = slots->hist++;
  }

  int64_t cout() const { return cout_; }
  // A filter without time taps (kt = 1) on one frame [h, w, cin] into `out`.
  void run_frame(const float* in, int64_t h, int64_t w, float* out) const { taps_[0].run(in, h, w, out, false, true); }
  uint64_t weight_bytes() const {
    uint64_t n = 0;
    for (const auto& t : taps_) n += t.weight_bytes();
    return n;
  }

  // y[f] = conv over [history, x] ending at x[f]; updates the history (kt > 1).
  Frames run(const Frames& x, RunState& st) const {
    if (x.c != cin_) fail("Wan VAE", "internal: filter expects " + std::to_string(cin_) + " channels, got " + std::to_string(x.c));
    const Conv2dParams& p = taps_[0].params();
    Frames y(x.t, p.out_h(x.h), p.out_w(x.w), cout_);
    History* hist = kt_ > 1 ? &st.hist[size_t(slot_)] : nullptr;
    for (int64_t f = 0; f < x.t; ++f) {
      float* out = y.frame(f);
      taps_[size_t(kt_ - 1)].run(x.frame(f), x.h, x.w, out, false, true);
      for (int j = kt_ - 2; j >= 0; --j) {
        const int64_t s = f - (kt_ - 1 - j);
        const float* in = nullptr;
        if (s >= 0) in = x.frame(s);
        else if (hist && hist->count + s >= 0) in = hist->frame(hist->count + s);
        if (in) taps_[size_t(j)].run(in, x.h, x.w, out, true, false);
      }
    }
    if (hist && !st.last_chunk) remember(*hist, x, kt_ - 1);
    return y;
  }

  // Keeps the last `keep` frames of [history, x].
  static void remember(History& h, const Frames& x, int64_t keep) {
    const int64_t fs = x.frame_size();
    if (h.count > 0 && h.frame_size != fs) fail("Wan VAE", "internal: frame size changed between chunks");
    std::vector<float> next;
    const int64_t total = h.count + x.t, n = std::min(keep, total);
    next.resize(size_t(n * fs));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t s = total - n + i;  // index in [history, x]
      const float* src = s < h.count ? h.frame(s) : x.frame(s - h.count);
      std::memcpy(next.data() + i * fs, src, sizeof(float) * size_t(fs));
    }
    h.frames = std::move(next);
    h.count = n;
    h.frame_size = fs;
  }

 private:
  int64_t cin_, cout_;
  int kt_;
  int slot_ = -1;
  std::vector<Conv2d> taps_;
};

// ---- normalisation -----------------------------------------------------------------------------

// F.normalize over channels (x / max(||x||, 1e-12)) * sqrt(C) * gamma, then SiLU when `silu`.
class RmsNorm {
 public:
  RmsNorm(const Loader& L, const std::string& name, int64_t c) : gamma_(L.take(name)), c_(c) {
    const float s = std::sqrt(float(c));
    for (float& g : gamma_) g *= s;
  }
  Frames run(const Frames& x, bool silu) const {
    Frames y(x.t, x.h, x.w, x.c);
    const int64_t pixels = x.t * x.h * x.w, C = c_;
    kernels::parallel_for(pixels, 64, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const float* a = x.d.data() + p * C;
        float* b = y.d.data() + p * C;
        double ss = 0;
        for (int64_t i = 0; i < C; ++i) ss += double(a[i]) * a[i];
        const float inv = float(1.0 / std::max(std::sqrt(ss), 1e-12));
        for (int64_t i = 0; i < C; ++i) {
          const float v = a[i] * inv * gamma_[size_t(i)];
          b[i] = silu ? v / (1.0f + std::exp(-v)) : v;
        }
      }
    });
    return y;
  }

 private:
  std::vector<float> gamma_;
  int64_t c_;
};

// ---- blocks ------------------------------------------------------------------------------------

class ResBlock {
 public:
  ResBlock(const Loader& L, const std::string& p, int64_t in, int64_t out, Slots& s)
      : norm1_(L, p + ".norm1.gamma", in),
        conv1_(L, p + ".conv1", in, out, 3, 3, &s),
        norm2_(L, p + ".norm2.gamma", out),
        conv2_(L, p + ".conv2", out, out, 3, 3, &s) {
    if (in != out) shortcut_ = std::make_unique<CausalConv>(L, p + ".conv_shortcut", in, out, 1, 1, nullptr);
  }
  Frames run(const Frames& x, RunState& st) const {
    Frames y = conv1_.run(norm1_.run(x, true), st);
    y = conv2_.run(norm2_.run(y, true), st);
    if (shortcut_) add_into(y, shortcut_->run(x, st));
    else add_into(y, x);
    return y;
  }
  uint64_t weight_bytes() const { return conv1_.weight_bytes() + conv2_.weight_bytes() + (shortcut_ ? shortcut_->weight_bytes() : 0); }

 private:
  RmsNorm norm1_;
  CausalConv conv1_;
  RmsNorm norm2_;
  CausalConv conv2_;
  std::unique_ptr<CausalConv> shortcut_;
};

// Single-head self-attention over the pixels of each frame.
class Attention {
 public:
  Attention(const Loader& L, const std::string& p, int64_t c)
      : norm_(L, p + ".norm.gamma", c), c_(c), qkv_w_(L.take(p + ".to_qkv.weight")), qkv_b_(L.take(p + ".to_qkv.bias")),
        proj_w_(L.take(p + ".proj.weight")), proj_b_(L.take(p + ".proj.bias")) {}

  Frames run(const Frames& x) const {
    const Frames n = norm_.run(x, false);
    Frames y = x;
    const int64_t N = x.h * x.w, C = c_;
    std::vector<float> qkv(size_t(N * 3 * C)), q(size_t(N * C)), k(size_t(N * C)), vt(size_t(C * N)), s(size_t(N * N)),
        o(size_t(N * C)), proj(size_t(N * C));
    const kernels::DenseMatrix wqkv{kernels::WeightType::F32, 3 * C, C, qkv_w_.data()};
    const kernels::DenseMatrix wproj{kernels::WeightType::F32, C, C, proj_w_.data()};
    const float scale = float(1.0 / std::sqrt(double(C)));
    for (int64_t f = 0; f < x.t; ++f) {
      kernels::linear(n.frame(f), N, wqkv, qkv_b_.data(), qkv.data());
      for (int64_t i = 0; i < N; ++i) {
        const float* row = qkv.data() + i * 3 * C;
        for (int64_t j = 0; j < C; ++j) {
          q[size_t(i * C + j)] = row[j] * scale;
          k[size_t(i * C + j)] = row[C + j];
          vt[size_t(j * N + i)] = row[2 * C + j];
        }
      }
      kernels::linear(q.data(), N, {kernels::WeightType::F32, N, C, k.data()}, nullptr, s.data());
      kernels::parallel_for(N, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          float* row = s.data() + r * N;
          const float mx = *std::max_element(row, row + N);
          double sum = 0;
          for (int64_t j = 0; j < N; ++j) {
            row[j] = std::exp(row[j] - mx);
            sum += row[j];
          }
          const float inv = float(1.0 / sum);
          for (int64_t j = 0; j < N; ++j) row[j] *= inv;
        }
      });
      kernels::linear(s.data(), N, {kernels::WeightType::F32, C, N, vt.data()}, nullptr, o.data());
      kernels::linear(o.data(), N, wproj, proj_b_.data(), proj.data());
      float* out = y.frame(f);
      for (int64_t i = 0; i < N * C; ++i) out[i] += proj[size_t(i)];
    }
    return y;
  }
  uint64_t weight_bytes() const { return 4 * (qkv_w_.size() + proj_w_.size()); }

 private:
  RmsNorm norm_;
  int64_t c_;
  std::vector<float> qkv_w_, qkv_b_, proj_w_, proj_b_;
};

class MidBlock {
 public:
  MidBlock(const Loader& L, const std::string& p, int64_t d, Slots& s)
      : res0_(L, p + ".resnets.0", d, d, s), attn_(L, p + ".attentions.0", d), res1_(L, p + ".resnets.1", d, d, s) {}
  Frames run(const Frames& x, RunState& st) const { return res1_.run(attn_.run(res0_.run(x, st)), st); }
  uint64_t weight_bytes() const { return res0_.weight_bytes() + attn_.weight_bytes() + res1_.weight_bytes(); }

 private:
  ResBlock res0_;
  Attention attn_;
  ResBlock res1_;
};

// AvgDown3D: space-to-channel by (ft, fs, fs) after padding ft - T % ft zero frames in front, then the
// mean of each group of in*ft*fs*fs/out consecutive channels.
Frames avg_down(const Frames& x, int64_t out_c, int ft, int fs) {
  const int64_t pad = (ft - x.t % ft) % ft, T = (x.t + pad) / ft, H = x.h / fs, W = x.w / fs;
  const int64_t factor = int64_t(ft) * fs * fs, group = x.c * factor / out_c;
  Frames y(T, H, W, out_c);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = 0; r < H; ++r)
      for (int64_t col = 0; col < W; ++col) {
        float* dst = y.frame(t) + (r * W + col) * out_c;
        for (int64_t o = 0; o < out_c; ++o) {
          double s = 0;
          for (int64_t g = 0; g < group; ++g) {
            const int64_t q = o * group + g, ci = q / factor, rem = q % factor;
            const int64_t it = rem / (fs * fs), iy = (rem / fs) % fs, ix = rem % fs;
            const int64_t src_t = t * ft + it - pad;
            if (src_t < 0) continue;  // zero padding
            s += x.frame(src_t)[((r * fs + iy) * x.w + col * fs + ix) * x.c + ci];
          }
          dst[o] = float(s / double(group));
        }
      }
  return y;
}

// DupUp3D: each output channel o at sub-position (it, iy, ix) copies input channel
// (o * factor + (it fs + iy) fs + ix) / repeats; the first chunk drops its first ft - 1 frames.
Frames dup_up(const Frames& x, int64_t out_c, int ft, int fs, bool first_chunk) {
  const int64_t factor = int64_t(ft) * fs * fs, repeats = out_c * factor / x.c;
  const int64_t skip = first_chunk ? ft - 1 : 0, T = x.t * ft - skip, H = x.h * fs, W = x.w * fs;
  Frames y(T, H, W, out_c);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t full_t = t + skip, src_t = full_t / ft, it = full_t % ft;
    for (int64_t r = 0; r < H; ++r)
      for (int64_t col = 0; col < W; ++col) {
        const int64_t iy = r % fs, ix = col % fs;
        const float* src = x.frame(src_t) + ((r / fs) * x.w + col / fs) * x.c;
        float* dst = y.frame(t) + (r * W + col) * out_c;
        for (int64_t o = 0; o < out_c; ++o) dst[o] = src[(o * factor + (it * fs + iy) * fs + ix) / repeats];
      }
  }
  return y;
}

enum class ResampleMode { Up2d, Up3d, Down2d, Down3d };

class Resample {
 public:
  Resample(const Loader& L, const std::string& p, int64_t dim, ResampleMode mode, Slots& s)
      : mode_(mode), dim_(dim),
        spatial_(L, p + ".resample.1", dim, dim, 1, 3, nullptr, is_down() ? 2 : 1, is_down()) {
    if (mode == ResampleMode::Up3d) {
      time_ = std::make_unique<CausalConv>(L, p + ".time_conv", dim, 2 * dim, 3, 1, &s);
      flag_ = s.flags++;
    } else if (mode == ResampleMode::Down3d) {
      const std::vector<float> w = L.take(p + ".time_conv.weight"), b = L.take(p + ".time_conv.bias");
      Conv2dParams pp;
      pp.cin = pp.cout = dim;
      for (int j = 0; j < 3; ++j) {
        const std::vector<float> tap = filter_tap(w, dim, dim, 3, 1, 1, j);
        down_taps_.emplace_back(pp, tap.data(), b.data(), L.backend());
      }
      flag_ = s.flags++;
      hist_ = s.hist++;
    }
  }

  Frames run(const Frames& x, RunState& st) const {
    if (mode_ == ResampleMode::Up2d || mode_ == ResampleMode::Up3d) {
      Frames in = x;
      if (mode_ == ResampleMode::Up3d) {
        if (!st.started[size_t(flag_)]) {
          st.started[size_t(flag_)] = 1;  // first chunk: passed through ("Rep")
        } else {
          const Frames tc = time_->run(x, st);  // [t, h, w, 2 dim] -> frames 2f, 2f + 1
          in = Frames(2 * x.t, x.h, x.w, dim_);
          for (int64_t f = 0; f < x.t; ++f)
            for (int64_t px = 0; px < x.h * x.w; ++px)
              for (int half = 0; half < 2; ++half)
                std::memcpy(in.frame(2 * f + half) + px * dim_, tc.frame(f) + px * 2 * dim_ + half * dim_, sizeof(float) * size_t(dim_));
        }
      }
      // Nearest 2x up-sampling then the 3x3 filter, one frame at a time.
      Frames y(in.t, 2 * in.h, 2 * in.w, dim_);
      Frames up(1, 2 * in.h, 2 * in.w, dim_);
      for (int64_t f = 0; f < in.t; ++f) {
        const float* src = in.frame(f);
        for (int64_t r = 0; r < up.h; ++r)
          for (int64_t c = 0; c < up.w; ++c)
            std::memcpy(up.frame(0) + (r * up.w + c) * dim_, src + ((r / 2) * in.w + c / 2) * dim_, sizeof(float) * size_t(dim_));
        spatial_.run_frame(up.frame(0), up.h, up.w, y.frame(f));
      }
      return y;
    }
    // Down-sampling: the strided 3x3 filter per frame, then (3d) the strided time filter.
    Frames y(x.t, (x.h + 1 - 3) / 2 + 1, (x.w + 1 - 3) / 2 + 1, dim_);
    for (int64_t f = 0; f < x.t; ++f) spatial_.run_frame(x.frame(f), x.h, x.w, y.frame(f));
    if (mode_ == ResampleMode::Down2d) return y;
    History& h = st.hist[size_t(hist_)];
    if (!st.started[size_t(flag_)]) {
      st.started[size_t(flag_)] = 1;
      CausalConv::remember(h, y, 1);
      return y;
    }
    // [previous chunk's last frame, y] filtered with stride 2, no padding.
    const int64_t n = 1 + y.t, outs = (n - 3) / 2 + 1;
    if (outs < 1) fail("Wan VAE", "internal: temporal down-sampling of a chunk of " + std::to_string(y.t) + " frames");
    auto seq = [&](int64_t i) { return i == 0 ? h.frame(0) : y.frame(i - 1); };
    Frames z(outs, y.h, y.w, dim_);
    for (int64_t o = 0; o < outs; ++o) {
      down_taps_[2].run(seq(2 * o + 2), y.h, y.w, z.frame(o), false, true);
      down_taps_[1].run(seq(2 * o + 1), y.h, y.w, z.frame(o), true, false);
      down_taps_[0].run(seq(2 * o), y.h, y.w, z.frame(o), true, false);
    }
    CausalConv::remember(h, y, 1);
    return z;
  }

  uint64_t weight_bytes() const {
    uint64_t n = spatial_.weight_bytes() + (time_ ? time_->weight_bytes() : 0);
    for (const auto& t : down_taps_) n += t.weight_bytes();
    return n;
  }

 private:
  bool is_down() const { return mode_ == ResampleMode::Down2d || mode_ == ResampleMode::Down3d; }

  ResampleMode mode_;
  int64_t dim_;
  CausalConv spatial_;
  std::unique_ptr<CausalConv> time_;
  std::vector<Conv2d> down_taps_;
  int flag_ = -1, hist_ = -1;
};

// ---- encoder / decoder -------------------------------------------------------------------------

class Encoder {
 public:
  Encoder(const Loader& L, const WanVaeConfig& c) : cfg_(c) {
    const int S = int(c.dim_mult.size());
    std::vector<int64_t> dims{c.base_dim};
    for (int m : c.dim_mult) dims.push_back(int64_t(c.base_dim) * m);
    conv_in_ = std::make_unique<CausalConv>(L, "encoder.conv_in", 3LL * c.patch_size * c.patch_size, dims[0], 3, 3, &slots_);
    for (int i = 0; i < S; ++i) {
      Stage st;
      const std::string b = "encoder.down_blocks." + std::to_string(i);
      for (int j = 0; j < c.num_res_blocks; ++j)
        st.res.push_back(std::make_unique<ResBlock>(L, b + ".resnets." + std::to_string(j), j == 0 ? dims[i] : dims[i + 1], dims[i + 1], slots_));
      st.down = i != S - 1;
      st.temporal = st.down && c.temporal_downsample[size_t(i)];
      if (st.down)
        st.resample = std::make_unique<Resample>(L, b + ".downsampler", dims[i + 1], st.temporal ? ResampleMode::Down3d : ResampleMode::Down2d, slots_);
      st.out_c = dims[i + 1];
      stages_.push_back(std::move(st));
    }
    mid_ = std::make_unique<MidBlock>(L, "encoder.mid_block", dims.back(), slots_);
    norm_out_ = std::make_unique<RmsNorm>(L, "encoder.norm_out.gamma", dims.back());
    conv_out_ = std::make_unique<CausalConv>(L, "encoder.conv_out", dims.back(), 2LL * c.z_dim, 3, 3, &slots_);
    quant_ = std::make_unique<CausalConv>(L, "quant_conv", 2LL * c.z_dim, 2LL * c.z_dim, 1, 1, nullptr);
  }

  RunState new_state() const {
    RunState s;
    s.hist.resize(size_t(slots_.hist));
    s.started.assign(size_t(slots_.flags), 0);
    return s;
  }

  // One chunk of patchified frames -> one latent frame [1, h, w, 2z] (before quant_conv).
  Frames chunk(const Frames& x, RunState& st) const {
    Frames h = conv_in_->run(x, st);
    for (const Stage& s : stages_) {
      const Frames copy = h;
      for (const auto& r : s.res) h = r->run(h, st);
      if (s.resample) h = s.resample->run(h, st);
      add_into(h, avg_down(copy, s.out_c, s.temporal ? 2 : 1, s.down ? 2 : 1));
    }
    h = mid_->run(h, st);
    return conv_out_->run(norm_out_->run(h, true), st);
  }
  const CausalConv& quant() const { return *quant_; }
  uint64_t weight_bytes() const {
    uint64_t n = conv_in_->weight_bytes() + mid_->weight_bytes() + conv_out_->weight_bytes() + quant_->weight_bytes();
    for (const auto& s : stages_) {
      for (const auto& r : s.res) n += r->weight_bytes();
      if (s.resample) n += s.resample->weight_bytes();
    }
    return n;
  }

 private:
  struct Stage {
    std::vector<std::unique_ptr<ResBlock>> res;
    std::unique_ptr<Resample> resample;
    bool down = false, temporal = false;
    int64_t out_c = 0;
  };
  WanVaeConfig cfg_;
  Slots slots_;
  std::unique_ptr<CausalConv> conv_in_, conv_out_, quant_;
  std::vector<Stage> stages_;
  std::unique_ptr<MidBlock> mid_;
  std::unique_ptr<RmsNorm> norm_out_;
};

class Decoder {
 public:
  Decoder(const Loader& L, const WanVaeConfig& c) : cfg_(c) {
    const int S = int(c.dim_mult.size());
    std::vector<int64_t> dims{int64_t(c.decoder_base_dim) * c.dim_mult.back()};
    for (int i = S - 1; i >= 0; --i) dims.push_back(int64_t(c.decoder_base_dim) * c.dim_mult[size_t(i)]);
    post_quant_ = std::make_unique<CausalConv>(L, "post_quant_conv", c.z_dim, c.z_dim, 1, 1, nullptr);
    conv_in_ = std::make_unique<CausalConv>(L, "decoder.conv_in", c.z_dim, dims[0], 3, 3, &slots_);
    mid_ = std::make_unique<MidBlock>(L, "decoder.mid_block", dims[0], slots_);
    for (int i = 0; i < S; ++i) {
      Stage st;
      const std::string b = "decoder.up_blocks." + std::to_string(i);
      for (int j = 0; j <= c.num_res_blocks; ++j)
        st.res.push_back(std::make_unique<ResBlock>(L, b + ".resnets." + std::to_string(j), j == 0 ? dims[i] : dims[i + 1], dims[i + 1], slots_));
      st.up = i != S - 1;
      st.temporal = st.up && c.temporal_downsample[size_t(S - 2 - i)];
      if (st.up)
        st.resample = std::make_unique<Resample>(L, b + ".upsampler", dims[i + 1], st.temporal ? ResampleMode::Up3d : ResampleMode::Up2d, slots_);
      st.out_c = dims[i + 1];
      stages_.push_back(std::move(st));
    }
    norm_out_ = std::make_unique<RmsNorm>(L, "decoder.norm_out.gamma", dims.back());
    conv_out_ = std::make_unique<CausalConv>(L, "decoder.conv_out", dims.back(), 3LL * c.patch_size * c.patch_size, 3, 3, &slots_);
  }

  RunState new_state() const {
    RunState s;
    s.hist.resize(size_t(slots_.hist));
    s.started.assign(size_t(slots_.flags), 0);
    return s;
  }
  const CausalConv& post_quant() const { return *post_quant_; }

  // One latent frame (after post_quant_conv) -> this chunk's patchified frames.
  Frames chunk(const Frames& z, RunState& st, bool first) const {
    Frames h = mid_->run(conv_in_->run(z, st), st);
    for (const Stage& s : stages_) {
      const Frames copy = h;
      for (const auto& r : s.res) h = r->run(h, st);
      if (s.resample) h = s.resample->run(h, st);
      if (s.up) add_into(h, dup_up(copy, s.out_c, s.temporal ? 2 : 1, 2, first));
    }
    return conv_out_->run(norm_out_->run(h, true), st);
  }
  uint64_t weight_bytes() const {
    uint64_t n = conv_in_->weight_bytes() + mid_->weight_bytes() + conv_out_->weight_bytes() + post_quant_->weight_bytes();
    for (const auto& s : stages_) {
      for (const auto& r : s.res) n += r->weight_bytes();
      if (s.resample) n += s.resample->weight_bytes();
    }
    return n;
  }

 private:
  struct Stage {
    std::vector<std::unique_ptr<ResBlock>> res;
    std::unique_ptr<Resample> resample;
    bool up = false, temporal = false;
    int64_t out_c = 0;
  };
  WanVaeConfig cfg_;
  Slots slots_;
  std::unique_ptr<CausalConv> post_quant_, conv_in_, conv_out_;
  std::unique_ptr<MidBlock> mid_;
  std::vector<Stage> stages_;
  std::unique_ptr<RmsNorm> norm_out_;
};

}  // namespace

// ---- public ------------------------------------------------------------------------------------

struct WanVae::Impl {
  WanVaeConfig cfg;
  std::unique_ptr<WeightSource> src;
  ConvBackend backend = ConvBackend::Auto;
  mutable std::mutex mu;
  mutable std::unique_ptr<Decoder> dec;
  mutable std::unique_ptr<Encoder> enc;

  const Decoder& decoder() const {
    std::lock_guard<std::mutex> lock(mu);
    if (!dec) dec = std::make_unique<Decoder>(Loader(*src, backend), cfg);
    return *dec;
  }
  const Encoder& encoder() const {
    std::lock_guard<std::mutex> lock(mu);
    if (!enc) enc = std::make_unique<Encoder>(Loader(*src, backend), cfg);
    return *enc;
  }
};

WanVae::WanVae(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WanVae::WanVae(WanVae&&) noexcept = default;
WanVae& WanVae::operator=(WanVae&&) noexcept = default;
WanVae::~WanVae() = default;

WanVae WanVae::load(const std::string& path, ConvBackend backend) {
  auto impl = std::make_unique<Impl>();
  impl->src = WeightSource::open(path, impl->cfg);
  impl->backend = backend;
  return WanVae(std::move(impl));
}

const WanVaeConfig& WanVae::config() const { return impl_->cfg; }
const std::string& WanVae::source() const { return impl_->src->path(); }

uint64_t WanVae::resident_weight_bytes() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return (impl_->dec ? impl_->dec->weight_bytes() : 0) + (impl_->enc ? impl_->enc->weight_bytes() : 0);
}

void WanVae::decode(const float* latents, int t, int h, int w, const FrameSink& sink, bool clamp,
                    const ChunkProgress& progress) const {
  const WanVaeConfig& c = impl_->cfg;
  if (!latents) fail("VAE decode", "null latents");
  if (t < 1 || h < 1 || w < 1) fail("VAE decode", "latent grid must be at least 1x1x1");
  const Decoder& dec = impl_->decoder();
  const int64_t z = c.z_dim, p = c.patch_size;
  // De-normalise (Lance: z / (1 / std) + mean) and apply post_quant_conv to every latent frame.
  Frames raw(t, h, w, z);
  for (int64_t i = 0; i < int64_t(t) * h * w; ++i)
    for (int64_t ch = 0; ch < z; ++ch)
      raw.d[size_t(i * z + ch)] = latents[i * z + ch] * c.latents_std[size_t(ch)] + c.latents_mean[size_t(ch)];
  RunState none;
  const Frames x = dec.post_quant().run(raw, none);
  RunState st = dec.new_state();
  for (int i = 0; i < t; ++i) {
    Frames one(1, h, w, z);
    std::memcpy(one.frame(0), x.frame(i), sizeof(float) * size_t(x.frame_size()));
    st.last_chunk = i == t - 1;
    const Frames out = dec.chunk(one, st, i == 0);  // [T_i, h', w', 3 p p]
    // Unpatchify: channel c*p*p + dx*p + dy -> pixel (row * p + dy, col * p + dx), colour c.
    const int64_t H = out.h * p, W = out.w * p;
    std::vector<float> rgb(size_t(out.t * H * W * 3));
    for (int64_t f = 0; f < out.t; ++f)
      for (int64_t r = 0; r < out.h; ++r)
        for (int64_t col = 0; col < out.w; ++col) {
          const float* src = out.frame(f) + (r * out.w + col) * out.c;
          for (int64_t ch = 0; ch < 3; ++ch)
            for (int64_t dx = 0; dx < p; ++dx)
              for (int64_t dy = 0; dy < p; ++dy) {
                float v = src[ch * p * p + dx * p + dy];
                if (clamp) v = std::clamp(v, -1.0f, 1.0f);
                rgb[size_t(((f * H + r * p + dy) * W + col * p + dx) * 3 + ch)] = v;
              }
        }
    sink(rgb.data(), int(out.t), int(H), int(W));
    if (progress) progress(i + 1, t);
  }
}

std::vector<float> WanVae::decode(const float* latents, int t, int h, int w, bool clamp) const {
  std::vector<float> all;
  decode(latents, t, h, w, [&](const float* rgb, int frames, int H, int W) { all.insert(all.end(), rgb, rgb + size_t(frames) * H * W * 3); },
         clamp);
  return all;
}

Encoded WanVae::encode(const float* rgb, int frames, int height, int width, const ChunkProgress& progress) const {
  const WanVaeConfig& c = impl_->cfg;
  const int tr = c.temporal_ratio(), sr = c.spatial_ratio();
  if (!rgb) fail("VAE encode", "null pixels");
  if (frames < 1 || (frames - 1) % tr != 0)
    fail("VAE encode", std::to_string(frames) + " frames: the Wan2.2 VAE needs " + std::to_string(tr) + "k + 1 frames");
  if (height < sr || width < sr || height % sr || width % sr)
    fail("VAE encode", std::to_string(width) + "x" + std::to_string(height) + " pixels: both sides must be positive multiples of " +
                           std::to_string(sr));
  const Encoder& enc = impl_->encoder();
  const int64_t p = c.patch_size, h2 = height / p, w2 = width / p, cp = 3 * p * p, z = c.z_dim;
  // Patchify: channel c*p*p + dx*p + dy <- pixel (row * p + dy, col * p + dx), colour c.
  auto patch_frames = [&](int64_t f0, int64_t n) {
    Frames x(n, h2, w2, cp);
    for (int64_t f = 0; f < n; ++f)
      for (int64_t r = 0; r < h2; ++r)
        for (int64_t col = 0; col < w2; ++col) {
          float* dst = x.frame(f) + (r * w2 + col) * cp;
          for (int64_t ch = 0; ch < 3; ++ch)
            for (int64_t dx = 0; dx < p; ++dx)
              for (int64_t dy = 0; dy < p; ++dy)
                dst[ch * p * p + dx * p + dy] = rgb[(((f0 + f) * height + r * p + dy) * width + col * p + dx) * 3 + ch];
        }
    return x;
  };
  RunState st = enc.new_state();
  const int chunks = 1 + (frames - 1) / tr;
  Frames lat;
  for (int i = 0; i < chunks; ++i) {
    const int64_t f0 = i == 0 ? 0 : 1 + int64_t(tr) * (i - 1), n = i == 0 ? 1 : tr;
    st.last_chunk = i == chunks - 1;
    const Frames out = enc.chunk(patch_frames(f0, n), st);
    if (out.t != 1) fail("VAE encode", "internal: a chunk produced " + std::to_string(out.t) + " latent frames");
    if (i == 0) lat = Frames(chunks, out.h, out.w, out.c);
    std::memcpy(lat.frame(i), out.frame(0), sizeof(float) * size_t(out.frame_size()));
    if (progress) progress(i + 1, chunks);
  }
  RunState none;
  const Frames q = enc.quant().run(lat, none);
  Encoded e;
  e.t = int(q.t);
  e.h = int(q.h);
  e.w = int(q.w);
  e.channels = int(z);
  const int64_t n = q.t * q.h * q.w;
  e.mu.resize(size_t(n * z));
  e.logvar.resize(size_t(n * z));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < z; ++ch) {
      e.mu[size_t(i * z + ch)] = (q.d[size_t(i * 2 * z + ch)] - c.latents_mean[size_t(ch)]) / c.latents_std[size_t(ch)];
      e.logvar[size_t(i * z + ch)] = q.d[size_t(i * 2 * z + z + ch)];
    }
  return e;
}

std::vector<uint8_t> to_rgb8(const float* x, size_t n) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) {
    float v = std::clamp(x[i], -1.0f, 1.0f);
    v = v * 0.5f;
    v = v + 0.5f;
    v = v * 255.0f;
    out[i] = uint8_t(std::clamp(std::nearbyint(v), 0.0f, 255.0f));  // default rounding: ties to even
  }
  return out;
}

std::vector<float> reparameterize(const Encoded& e, const float* eps) {
  std::vector<float> out(e.mu.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = e.mu[i] + std::exp(0.5f * e.logvar[i]) * eps[i];
  return out;
}

}  // namespace lq::vae
