// 2-D convolution over channels-last frames: x [h, w, cin] -> y [oh, ow, cout] with a filter stored
// [cout, kh, kw, cin]. The Wan VAE's causal 3-D convolutions are sums of these, one per time tap
// (src/vae). Two backends behind one class, chosen per Conv2d (default: ConvBackend::Auto):
//   Gemm: im2col of a block of output pixels + kernels::linear (the project's packed GEMM);
//   Dnnl: oneDNN's convolution (Debian libdnnl), weights reordered once into its blocked layout.
// Auto picks by filter, from measurements (bench/bench_conv, docs/vae.md): oneDNN for 3x3 stride-1
// filters when the build has it (1.06-1.24x our GEMM on the decoder's layers, 2.7x on its 12-channel
// head), our GEMM for 1x1 and strided filters (1.3x oneDNN there) and for filters with
// cin * cout < kDnnlMinChannelProduct (a tiny VAE decoded 7x slower on oneDNN: per-call overhead).
// conv2d_ref is the plain specification both are tested against (double accumulation); both
// backends stay within a few f32 ulps per term of it (tests/kernels/conv_test.cpp states the budget).
// Results are deterministic for a given backend and thread count.
#pragma once
#include <cstdint>
#include <memory>

namespace lq::kernels {

struct Conv2dParams {
  int64_t cin = 0, cout = 0;
  int kh = 1, kw = 1;
  int stride = 1;
  int pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int64_t out_h(int64_t h) const { return (h + pad_top + pad_bottom - kh) / stride + 1; }
  int64_t out_w(int64_t w) const { return (w + pad_left + pad_right - kw) / stride + 1; }
};

enum class ConvBackend { Auto, Gemm, Dnnl };
inline constexpr int64_t kDnnlMinChannelProduct = 1024;
const char* conv_backend_name(ConvBackend b);
ConvBackend parse_conv_backend(const char* text);  // "auto" | "gemm" | "dnnl" (throws lq::Error)
bool dnnl_available();                              // built with oneDNN
// The backend a Conv2d with these parameters runs on (Auto resolved; never Auto).
ConvBackend resolve_conv_backend(ConvBackend b, const Conv2dParams& p);

// A prepared convolution. The constructor copies the weights into the backend's layout (the caller's
// buffer may be freed afterwards); run() is const and may be called from one thread at a time per
// object (it keeps per-shape primitives and scratch).
class Conv2d {
 public:
  // w: [cout, kh, kw, cin] f32; bias: [cout] or null.
  Conv2d(const Conv2dParams& p, const float* w, const float* bias, ConvBackend backend = ConvBackend::Auto);
  Conv2d(Conv2d&&) noexcept;
  Conv2d& operator=(Conv2d&&) noexcept;
  ~Conv2d();

  // y [out_h(h), out_w(w), cout] = conv(x) (+ bias when add_bias); accumulate: y += instead of y =.
  void run(const float* x, int64_t h, int64_t w, float* y, bool accumulate, bool add_bias = true) const;
  const Conv2dParams& params() const;
  ConvBackend backend() const;  // resolved (never Auto)
  uint64_t weight_bytes() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Specification: y (+)= conv(x) (+ bias), double accumulation, single thread.
void conv2d_ref(const Conv2dParams& p, const float* x, int64_t h, int64_t w, const float* weight, const float* bias,
                float* y, bool accumulate, bool add_bias = true);

}  // namespace lq::kernels
