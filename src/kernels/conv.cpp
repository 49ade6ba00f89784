// Conv2d: the reference, the im2col + GEMM backend and the dispatch (oneDNN lives in conv_dnnl.cpp).
#include "kernels/conv.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "io/error.h"
#include "kernels/conv_impl.h"
#include "kernels/linear.h"
#include "kernels/parallel.h"

namespace lq::kernels {

const char* conv_backend_name(ConvBackend b) {
  switch (b) {
    case ConvBackend::Auto: return "auto";
    case ConvBackend::Gemm: return "gemm";
    case ConvBackend::Dnnl: return "dnnl";
  }
  return "?";
}

ConvBackend parse_conv_backend(const char* text) {
  const std::string t = text ? text : "";
  if (t == "auto") return ConvBackend::Auto;
  if (t == "gemm") return ConvBackend::Gemm;
  if (t == "dnnl") {
    if (!dnnl_available()) fail("conv backend", "dnnl requested but this build has no oneDNN (libdnnl-dev)");
    return ConvBackend::Dnnl;
  }
  fail("conv backend", "expected auto, gemm or dnnl, got '" + t + "'");
}

ConvBackend resolve_conv_backend(ConvBackend b, const Conv2dParams& p) {
  if (b != ConvBackend::Auto) return b;
  const bool spatial = p.kh > 1 || p.kw > 1;
  // Small filters stay on the GEMM: oneDNN's per-call cost (OpenMP region, reorders) dominates them.
  const bool large = p.cin * p.cout >= kDnnlMinChannelProduct;
  return dnnl_available() && spatial && p.stride == 1 && large ? ConvBackend::Dnnl : ConvBackend::Gemm;
}

namespace {

void check_params(const Conv2dParams& p) {
  if (p.cin < 1 || p.cout < 1 || p.kh < 1 || p.kw < 1 || p.stride < 1 || p.pad_top < 0 || p.pad_bottom < 0 ||
      p.pad_left < 0 || p.pad_right < 0)
    fail("conv2d", "invalid parameters (cin " + std::to_string(p.cin) + ", cout " + std::to_string(p.cout) + ", kernel " +
                       std::to_string(p.kh) + "x" + std::to_string(p.kw) + ", stride " + std::to_string(p.stride) + ")");
}

void check_input(const Conv2dParams& p, const float* x, int64_t h, int64_t w, const float* y) {
  if (!x || !y) fail("conv2d", "null input or output");
  if (h < 1 || w < 1 || p.out_h(h) < 1 || p.out_w(w) < 1)
    fail("conv2d", "input " + std::to_string(h) + "x" + std::to_string(w) + " is smaller than the " + std::to_string(p.kh) +
                       "x" + std::to_string(p.kw) + " kernel after padding");
}

}  // namespace

void conv2d_ref(const Conv2dParams& p, const float* x, int64_t h, int64_t w, const float* weight, const float* bias,
                float* y, bool accumulate, bool add_bias) {
  check_params(p);
  check_input(p, x, h, w, y);
  const int64_t oh = p.out_h(h), ow = p.out_w(w);
  for (int64_t oy = 0; oy < oh; ++oy)
    for (int64_t ox = 0; ox < ow; ++ox)
      for (int64_t co = 0; co < p.cout; ++co) {
        double s = (add_bias && bias) ? bias[co] : 0.0;
        for (int dy = 0; dy < p.kh; ++dy) {
          const int64_t iy = oy * p.stride + dy - p.pad_top;
          if (iy < 0 || iy >= h) continue;
          for (int dx = 0; dx < p.kw; ++dx) {
            const int64_t ix = ox * p.stride + dx - p.pad_left;
            if (ix < 0 || ix >= w) continue;
            const float* xp = x + (iy * w + ix) * p.cin;
            const float* wp = weight + ((co * p.kh + dy) * p.kw + dx) * p.cin;
            for (int64_t ci = 0; ci < p.cin; ++ci) s += double(xp[ci]) * wp[ci];
          }
        }
        float& out = y[(oy * ow + ox) * p.cout + co];
        out = accumulate ? float(out + s) : float(s);
      }
}

// ---- im2col + GEMM ----------------------------------------------------------------------------

namespace {

// Output pixels per GEMM call: the im2col block holds pixels x K floats (budget ~32 MiB) but at least
// 256 pixels, so the GEMM's once-per-call weight packing stays a few percent of its work.
constexpr int64_t kIm2colBudgetFloats = int64_t(8) << 20;
constexpr int64_t kMinTilePixels = 256;

}  // namespace

GemmConv::GemmConv(const Conv2dParams& p, const float* w, const float* bias) : p_(p) {
  const int64_t K = int64_t(p.kh) * p.kw * p.cin;
  weights_.assign(w, w + p.cout * K);
  if (bias) bias_.assign(bias, bias + p.cout);
  mat_.type = WeightType::F32;
  mat_.rows = p.cout;
  mat_.cols = K;
  mat_.data = weights_.data();
}

bool GemmConv::pointwise() const {
  return p_.kh == 1 && p_.kw == 1 && p_.stride == 1 && p_.pad_top == 0 && p_.pad_bottom == 0 && p_.pad_left == 0 &&
         p_.pad_right == 0;
}

void GemmConv::run(const float* x, int64_t h, int64_t w, float* y, bool accumulate, bool add_bias) const {
  const int64_t oh = p_.out_h(h), ow = p_.out_w(w), npix = oh * ow, K = mat_.cols, cout = p_.cout;
  const float* b = add_bias && !bias_.empty() ? bias_.data() : nullptr;
  if (pointwise() && !accumulate) {
    linear(x, npix, mat_, b, y);
    return;
  }
  const int64_t tile = std::min(npix, std::max(kMinTilePixels, kIm2colBudgetFloats / K));
  // Scratch of the calling thread, shared by every convolution (memory does not grow with the layers).
  thread_local std::vector<float> cols_, out_;
  if (!pointwise()) cols_.resize(size_t(tile * K));
  if (accumulate) out_.resize(size_t(tile * cout));
  for (int64_t p0 = 0; p0 < npix; p0 += tile) {
    const int64_t n = std::min(tile, npix - p0);
    const float* in = x + p0 * p_.cin;  // pointwise: the pixels themselves
    if (!pointwise()) {
      float* cols = cols_.data();
      parallel_for(n, [&](int64_t b0, int64_t b1) {
        for (int64_t i = b0; i < b1; ++i) {
          const int64_t pix = p0 + i, oy = pix / ow, ox = pix % ow;
          float* row = cols + i * K;
          for (int dy = 0; dy < p_.kh; ++dy) {
            const int64_t iy = oy * p_.stride + dy - p_.pad_top;
            for (int dx = 0; dx < p_.kw; ++dx) {
              const int64_t ix = ox * p_.stride + dx - p_.pad_left;
              float* dst = row + (int64_t(dy) * p_.kw + dx) * p_.cin;
              if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                std::memset(dst, 0, sizeof(float) * size_t(p_.cin));
              else
                std::memcpy(dst, x + (iy * w + ix) * p_.cin, sizeof(float) * size_t(p_.cin));
            }
          }
        }
      });
      in = cols;
    }
    if (!accumulate) {
      linear(in, n, mat_, b, y + p0 * cout);
    } else {
      linear(in, n, mat_, b, out_.data());
      float* dst = y + p0 * cout;
      const float* src = out_.data();
      for (int64_t i = 0; i < n * cout; ++i) dst[i] += src[i];
    }
  }
}

// ---- the class --------------------------------------------------------------------------------

struct Conv2d::Impl {
  Conv2dParams p;
  ConvBackend backend = ConvBackend::Gemm;
  std::unique_ptr<GemmConv> gemm;
  std::unique_ptr<DnnlConv, void (*)(DnnlConv*)> dnnl{nullptr, nullptr};
};

Conv2d::Conv2d(const Conv2dParams& p, const float* w, const float* bias, ConvBackend backend)
    : impl_(std::make_unique<Impl>()) {
  check_params(p);
  if (!w) fail("conv2d", "null weights");
  impl_->p = p;
  impl_->backend = resolve_conv_backend(backend, p);
  if (impl_->backend == ConvBackend::Dnnl) {
    if (!dnnl_available()) fail("conv2d", "dnnl backend requested but this build has no oneDNN");
    impl_->dnnl = {make_dnnl_conv(p, w, bias), destroy_dnnl_conv};
  } else {
    impl_->gemm = std::make_unique<GemmConv>(p, w, bias);
  }
}

Conv2d::Conv2d(Conv2d&&) noexcept = default;
Conv2d& Conv2d::operator=(Conv2d&&) noexcept = default;
Conv2d::~Conv2d() = default;

void Conv2d::run(const float* x, int64_t h, int64_t w, float* y, bool accumulate, bool add_bias) const {
  check_input(impl_->p, x, h, w, y);
  if (impl_->gemm) impl_->gemm->run(x, h, w, y, accumulate, add_bias);
  else run_dnnl_conv(*impl_->dnnl, x, h, w, y, accumulate, add_bias);
}

const Conv2dParams& Conv2d::params() const { return impl_->p; }
ConvBackend Conv2d::backend() const { return impl_->backend; }
uint64_t Conv2d::weight_bytes() const {
  return uint64_t(impl_->p.cout) * impl_->p.kh * impl_->p.kw * impl_->p.cin * sizeof(float);
}

}  // namespace lq::kernels
