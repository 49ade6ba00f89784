#include "quant/awq.h"

#include <algorithm>
#include <cmath>

#include "io/error.h"
#include "kernels/linear.h"

namespace lq::quant {

std::vector<float> awq_scales(const std::vector<float>& x_mean, const std::vector<float>& w_mean, double alpha, bool duo) {
  const size_t n = x_mean.size();
  if (duo && w_mean.size() != n) fail("awq_scales", "x_mean and w_mean differ in length");
  std::vector<double> s(n);
  double lo = INFINITY, hi = 0;
  for (size_t c = 0; c < n; ++c) {
    double v = std::pow(std::max(double(x_mean[c]), 1e-8), alpha);
    if (duo) v /= std::pow(std::max(double(w_mean[c]), 1e-8), 1.0 - alpha);
    v = std::max(v, 1e-4);
    s[c] = v;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  const double norm = std::sqrt(lo * hi);
  std::vector<float> out(n);
  for (size_t c = 0; c < n; ++c) out[c] = float(s[c] / norm);
  return out;
}

std::vector<float> weight_channel_mean(const std::vector<const float*>& ws, const std::vector<int64_t>& outs, int64_t in,
                                       int64_t group) {
  const int64_t g = group > 0 ? group : in;
  std::vector<double> sum(static_cast<size_t>(in), 0.0);
  int64_t rows = 0;
  for (size_t m = 0; m < ws.size(); ++m) {
    for (int64_t r = 0; r < outs[m]; ++r) {
      const float* row = ws[m] + r * in;
      for (int64_t g0 = 0; g0 < in; g0 += g) {
        float mx = 0;
        for (int64_t c = g0; c < g0 + g; ++c) mx = std::max(mx, std::fabs(row[c]));
        const double inv = mx > 0 ? 1.0 / mx : 0.0;
        for (int64_t c = g0; c < g0 + g; ++c) sum[size_t(c)] += std::fabs(row[c]) * inv;
      }
    }
    rows += outs[m];
  }
  std::vector<float> out(static_cast<size_t>(in));
  for (int64_t c = 0; c < in; ++c) out[size_t(c)] = float(sum[size_t(c)] / double(std::max<int64_t>(rows, 1)));
  return out;
}

void fake_quantize_scaled(const float* w, int64_t out, int64_t in, const QuantParams& p, const std::vector<float>& s,
                          float* wq, const std::function<int64_t(int64_t)>& scale_of_channel) {
  std::vector<float> col(static_cast<size_t>(in));
  for (int64_t c = 0; c < in; ++c) col[size_t(c)] = s[size_t(scale_of_channel ? scale_of_channel(c) : c)];
  std::vector<float> ws(size_t(out * in));
  for (int64_t r = 0; r < out; ++r)
    for (int64_t c = 0; c < in; ++c) ws[size_t(r * in + c)] = w[r * in + c] * col[size_t(c)];
  fake_quantize(ws.data(), out, in, p, wq);
  for (int64_t r = 0; r < out; ++r)
    for (int64_t c = 0; c < in; ++c) wq[r * in + c] /= col[size_t(c)];
}

ScaleSearch search_scales(const std::vector<float>& x_mean, const std::vector<float>& w_mean, int grid, bool duo,
                          const std::function<double(const std::vector<float>&)>& loss) {
  ScaleSearch best;
  best.identity = true;
  best.s.assign(x_mean.size(), 1.0f);
  best.loss = best.identity_loss = loss(best.s);
  for (int i = 0; i < grid; ++i) {
    const double alpha = double(i) / grid;
    std::vector<float> s = awq_scales(x_mean, w_mean, alpha, duo);
    const double l = loss(s);
    if (!(l < best.loss)) continue;  // NaN or not better: keep the current best
    best.loss = l;
    best.alpha = alpha;
    best.identity = false;
    best.s = std::move(s);
  }
  return best;
}

namespace {

// x [n, in] regrouped as [groups][n][g]: each group's inputs become one contiguous [n, g] matrix.
std::vector<float> inputs_by_group(const float* x, int64_t n, int64_t in, int64_t g) {
  const int64_t groups = in / g;
  std::vector<float> out(size_t(n * in));
  for (int64_t gi = 0; gi < groups; ++gi)
    for (int64_t t = 0; t < n; ++t)
      std::copy(x + t * in + gi * g, x + t * in + (gi + 1) * g, out.begin() + (gi * n + t) * g);
  return out;
}

}  // namespace

std::vector<float> search_clip(const float* w, int64_t out, int64_t in, const QuantParams& p, const float* x, int64_t n) {
  if (!scheme_is_integer(p.scheme)) fail("search_clip", "clipping applies to integer schemes only");
  const int64_t g = p.effective_group(in), groups = in / g;
  std::vector<float> best_ratio(size_t(out * groups), 1.0f);
  std::vector<double> best_err(size_t(out * groups), INFINITY);
  std::vector<float> wq(size_t(out * in)), ratios(size_t(out * groups));
  // Each group's partial products for all rows and outputs are one GEMM, x_g [n, g] times d_g^T
  // (d = w - Q_r(w) on the group's columns): the same sums as n x out dot products of length g,
  // at GEMM speed (the clip search was the slowest step of a layer's AWQ search).
  const std::vector<float> xg = inputs_by_group(x, n, in, g);
  std::vector<float> dg(size_t(out * g)), y(size_t(n * out));
  std::vector<double> err(static_cast<size_t>(out));
  for (int step = 0; step < 10; ++step) {
    const float r = 1.0f - 0.05f * float(step);
    std::fill(ratios.begin(), ratios.end(), r);
    fake_quantize(w, out, in, p, wq.data(), ratios.data());
    for (int64_t gi = 0; gi < groups; ++gi) {
      parallel_rows(out, g, [&](int64_t o0, int64_t o1) {
        for (int64_t o = o0; o < o1; ++o)
          for (int64_t c = 0; c < g; ++c) dg[size_t(o * g + c)] = w[o * in + gi * g + c] - wq[size_t(o * in + gi * g + c)];
      });
      kernels::linear(xg.data() + gi * n * g, n, kernels::DenseMatrix{kernels::WeightType::F32, out, g, dg.data()}, nullptr,
                      y.data());
      parallel_rows(out, n, [&](int64_t o0, int64_t o1) {  // per output: its own sum, in t order (thread-count independent)
        for (int64_t o = o0; o < o1; ++o) err[size_t(o)] = 0.0;
        for (int64_t t = 0; t < n; ++t)
          for (int64_t o = o0; o < o1; ++o) err[size_t(o)] += double(y[size_t(t * out + o)]) * y[size_t(t * out + o)];
        for (int64_t o = o0; o < o1; ++o) {
          const size_t k = size_t(o * groups + gi);
          if (err[size_t(o)] < best_err[k]) best_err[k] = err[size_t(o)], best_ratio[k] = r;
        }
      });
    }
  }
  return best_ratio;
}

}  // namespace lq::quant
