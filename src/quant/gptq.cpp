#include "quant/gptq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>

#include "io/error.h"
#include "kernels/parallel.h"
#include "quant/linalg.h"
#include "quant/nvfp4.h"
#include "quant/rtn.h"

namespace lq::quant {

namespace {

// Group parameters and the element rule of one number format (the writer's own functions).
class GroupQuantizer {
 public:
  GroupQuantizer(const QuantParams& p, int64_t out, int64_t in, float tensor_scale, const float* clip)
      : p_(p), in_(in), g_(p.effective_group(in)), t_(tensor_scale), clip_(clip), nvfp4_(p.scheme == Scheme::NvFp4),
        rtn_{p.scheme, g_, p.scale_dtype} {
    if (nvfp4_) blocks_.resize(size_t(out * (in / g_)));
    else groups_.resize(size_t(out * (in / g_)));
  }
  int64_t group() const { return g_; }
  // Fixes group `gi` of row r from the g values at `w`.
  void fix(int64_t r, int64_t gi, const float* w) {
    const size_t k = size_t(r * (in_ / g_) + gi);
    if (nvfp4_) blocks_[k] = nvfp4_block_params(w, t_, p_);
    else groups_[k] = rtn_group_params(w, g_, rtn_, clip_ ? clip_[k] : 1.0f);
  }
  // Code of value x in group gi of row r, and its dequantized value.
  uint8_t code(int64_t r, int64_t gi, float x, float* value) const {
    const size_t k = size_t(r * (in_ / g_) + gi);
    if (nvfp4_) {
      const uint8_t c = nvfp4_code(x, blocks_[k]);
      *value = nvfp4_value(c, blocks_[k]);
      return c;
    }
    const uint8_t c = rtn_code(x, groups_[k], p_.scheme);
    *value = rtn_value(c, groups_[k]);
    return c;
  }
  void store(QTensor& q) const {
    if (nvfp4_) {
      for (size_t k = 0; k < blocks_.size(); ++k) q.block_scales[k] = blocks_[k].scale;
      return;
    }
    for (size_t k = 0; k < groups_.size(); ++k) {
      q.scales[k] = groups_[k].scale;
      q.zeros[k] = uint8_t(groups_[k].zero);
    }
  }

 private:
  const QuantParams& p_;
  int64_t in_, g_;
  float t_;
  const float* clip_;
  bool nvfp4_;
  RtnParams rtn_;
  std::vector<RtnGroupParams> groups_;
  std::vector<Nvfp4Block> blocks_;
};

}  // namespace

QTensor gptq_quantize(const float* w, int64_t out, int64_t in, const QuantParams& p, std::vector<float>& h,
                      const GptqOptions& o, const float* clip_ratios, GptqInfo* info) {
  const std::string where = "gptq_quantize";
  if (out <= 0 || in <= 0) fail(where, "empty weight shape");
  if (int64_t(h.size()) != in * in) fail(where, "H is not " + std::to_string(in) + " x " + std::to_string(in));
  if (o.block <= 0) fail(where, "block must be positive");
  const int64_t g = p.effective_group(in);
  if (g <= 0 || in % g != 0) fail(where, "input width " + std::to_string(in) + " is not a multiple of group " + std::to_string(g));
  if (clip_ratios && p.scheme == Scheme::NvFp4) fail(where, "clip ratios apply to integer schemes only");
  const bool static_groups = o.static_groups || o.act_order;

  // NVFP4's tensor scale comes from the original weights, as quantize_nvfp4 computes it.
  float tensor_scale = 1.0f;
  if (p.scheme == Scheme::NvFp4 && p.nvfp4 != Nvfp4Encoding::Legacy) {
    float amax = 0;
    for (int64_t i = 0; i < out * in; ++i) amax = std::max(amax, std::fabs(w[i]));
    tensor_scale = nvfp4_tensor_scale(amax, p);
  }
  GroupQuantizer gq(p, out, in, tensor_scale, clip_ratios);
  if (static_groups)
    kernels::parallel_for(out, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r)
        for (int64_t gi = 0; gi < in / g; ++gi) gq.fix(r, gi, w + r * in + gi * g);
    });

  // Dead inputs, damping, column order.
  GptqInfo inf;
  std::vector<float> diag(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i) {
    float& d = h[size_t(i * in + i)];
    if (!(d > 0.0f)) {
      for (int64_t j = 0; j < in; ++j) h[size_t(i * in + j)] = h[size_t(j * in + i)] = 0.0f;
      d = 1.0f;
      ++inf.dead_columns;
    }
    diag[size_t(i)] = d;
  }
  std::vector<int64_t> perm(static_cast<size_t>(in));
  std::iota(perm.begin(), perm.end(), 0);
  if (o.act_order) {
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return diag[size_t(a)] > diag[size_t(b)]; });
    linalg::permute_symmetric(h.data(), in, perm);
    for (int64_t i = 0; i < in; ++i) diag[size_t(i)] = h[size_t(i * in + i)];
  }
  const double mean_diag = std::accumulate(diag.begin(), diag.end(), 0.0) / double(in);
  double damp = o.damp;
  std::vector<float> damped(static_cast<size_t>(in));
  for (int attempt = 0;; ++attempt) {
    for (int64_t i = 0; i < in; ++i) {
      damped[size_t(i)] = float(diag[size_t(i)] + damp * mean_diag);
      h[size_t(i * in + i)] = damped[size_t(i)];
    }
    if (linalg::inverse_cholesky_upper(h.data(), in, damped)) break;
    if (attempt >= o.max_retries)
      fail(where, "H stays singular after damping " + std::to_string(damp) + " of its mean diagonal");
    damp = damp > 0 ? damp * 10.0 : 1e-4;
    ++inf.retries;
  }
  inf.damp = damp;
  const float* U = h.data();

  // Working weights in the quantization order.
  std::vector<float> wp(size_t(out * in));
  kernels::parallel_for(out, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      for (int64_t i = 0; i < in; ++i) wp[size_t(r * in + i)] = w[r * in + perm[size_t(i)]];
  });
  QTensor q;
  if (p.scheme == Scheme::NvFp4) {
    q.scheme = Scheme::NvFp4;
    q.out = out;
    q.in = in;
    q.group = g;
    q.tensor_scale = tensor_scale;
    q.codes.resize(size_t(out * in));
    q.block_scales.resize(size_t(out * in / g));
  } else {
    q = QTensor::integer(p.scheme, out, in, g, p.scale_dtype);
  }
  std::vector<double> row_loss(static_cast<size_t>(out), 0.0);
  std::vector<float> err, m;
  for (int64_t i1 = 0; i1 < in; i1 += o.block) {
    const int64_t i2 = std::min(in, i1 + o.block), bs = i2 - i1;
    err.resize(size_t(out * bs));
    kernels::parallel_for(out, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        float* wr = &wp[size_t(r * in)];
        float* er = &err[size_t(r * bs)];
        for (int64_t i = i1; i < i2; ++i) {
          const int64_t c = perm[size_t(i)], gi = c / g;
          if (!static_groups && c % g == 0) gq.fix(r, gi, wr + i);  // no act-order here: c == i
          float v;
          q.codes[size_t(r * in + c)] = gq.code(r, gi, wr[i], &v);
          const float d = U[i * in + i];
          const float e_i = (wr[i] - v) / d;
          row_loss[size_t(r)] += 0.5 * double(e_i) * e_i;
          const float* u = U + i * in;
          for (int64_t j = i + 1; j < i2; ++j) wr[j] -= e_i * u[j];
          er[i - i1] = e_i;
        }
      }
    });
    if (i2 == in) break;
    // W[:, i2:] -= E U[i1:i2, i2:] (the lazy update of every later column).
    const int64_t rest = in - i2;
    m.resize(size_t(rest * bs));
    for (int64_t k = 0; k < bs; ++k)
      for (int64_t j = 0; j < rest; ++j) m[size_t(j * bs + k)] = U[(i1 + k) * in + i2 + j];
    linalg::gemm_nt(out, rest, bs, -1.0f, err.data(), bs, m.data(), bs, wp.data() + i2, in);
  }
  gq.store(q);
  inf.loss = std::accumulate(row_loss.begin(), row_loss.end(), 0.0);
  if (info) *info = inf;
  return q;
}

double hessian_error(const float* w, const float* wq, int64_t out, int64_t in, const std::vector<float>& h) {
  if (int64_t(h.size()) != in * in) fail("hessian_error", "H has the wrong size");
  double total = 0;
  std::vector<double> d(static_cast<size_t>(in));
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t c = 0; c < in; ++c) d[size_t(c)] = double(w[r * in + c]) - wq[r * in + c];
    for (int64_t i = 0; i < in; ++i) {
      if (d[size_t(i)] == 0.0) continue;
      double s = 0;
      for (int64_t j = 0; j < in; ++j) s += double(h[size_t(i * in + j)]) * d[size_t(j)];
      total += d[size_t(i)] * s;
    }
  }
  return total;
}

}  // namespace lq::quant
