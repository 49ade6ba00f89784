// Internal: linears the forward-based searches plug into the engine while they work on a layer.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "forward/forward.h"
#include "io/error.h"
#include "kernels/linear.h"

namespace lq::pipeline {

// A dense f32 linear, owning its weights or borrowing them (`borrowed` must outlive it), applied to
// x / s when an input scale is given (the equivalent of the folded norm in front of it).
class ScaledDense final : public fwd::LinearWeights {
 public:
  ScaledDense(int64_t out, int64_t in, std::vector<float> w, std::vector<float> bias, std::vector<float> input_scale)
      : out_(out), in_(in), owned_(std::move(w)), w_(owned_.data()), bias_(std::move(bias)), inv_(std::move(input_scale)) {
    for (float& v : inv_) v = 1.0f / v;
  }
  ScaledDense(int64_t out, int64_t in, const float* borrowed, std::vector<float> bias, std::vector<float> input_scale)
      : ScaledDense(out, in, std::vector<float>{}, std::move(bias), std::move(input_scale)) {
    w_ = borrowed;
  }
  int64_t in_features() const override { return in_; }
  int64_t out_features() const override { return out_; }
  uint64_t weight_bytes() const override { return 4 * uint64_t(out_ * in_); }
  void apply(const float* x, int64_t n, float* y) const override {
    kernels::DenseMatrix m{kernels::WeightType::F32, out_, in_, w_};
    const float* b = bias_.empty() ? nullptr : bias_.data();
    if (inv_.empty()) return kernels::linear(x, n, m, b, y);
    std::vector<float> xs(x, x + n * in_);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < in_; ++c) xs[size_t(r * in_ + c)] *= inv_[size_t(c)];
    kernels::linear(xs.data(), n, m, b, y);
  }

 private:
  int64_t out_, in_;
  std::vector<float> owned_;
  const float* w_;
  std::vector<float> bias_, inv_;
};

// A finished layer's linear: the layer is never run again.
class ReleasedLinear final : public fwd::LinearWeights {
 public:
  ReleasedLinear(int64_t out, int64_t in, std::string name) : out_(out), in_(in), name_(std::move(name)) {}
  int64_t in_features() const override { return in_; }
  int64_t out_features() const override { return out_; }
  uint64_t weight_bytes() const override { return 0; }
  void apply(const float*, int64_t, float*) const override { fail(name_, "layer already quantized and released"); }

 private:
  int64_t out_, in_;
  std::string name_;
};

struct ObserverScope {
  fwd::Engine& e;
  ObserverScope(fwd::Engine& eng, fwd::ActivationObserver* o) : e(eng) { e.set_observer(o); }
  ~ObserverScope() { e.set_observer(nullptr); }
};

}  // namespace lq::pipeline
