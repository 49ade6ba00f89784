// Backends behind kernels::Conv2d (internal to lq_kernels; conv.h is the public contract).
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/conv.h"
#include "kernels/linear.h"

namespace lq::kernels {

// im2col of a block of output pixels ([pixels, kh kw cin] in (dy, dx, ci) order, matching the filter's
// [cout, kh, kw, cin] rows) times the filter through kernels::linear; pointwise filters skip im2col.
class GemmConv {
 public:
  GemmConv(const Conv2dParams& p, const float* w, const float* bias);
  void run(const float* x, int64_t h, int64_t w, float* y, bool accumulate, bool add_bias) const;

 private:
  bool pointwise() const;
  Conv2dParams p_;
  std::vector<float> weights_, bias_;
  DenseMatrix mat_;
};

// oneDNN convolution (conv_dnnl.cpp; without oneDNN these throw).
struct DnnlConv;
DnnlConv* make_dnnl_conv(const Conv2dParams& p, const float* w, const float* bias);
void destroy_dnnl_conv(DnnlConv* c);
void run_dnnl_conv(DnnlConv& c, const float* x, int64_t h, int64_t w, float* y, bool accumulate, bool add_bias);

}  // namespace lq::kernels
