#include "forward/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/parallel.h"
#include "io/error.h"

namespace lq::fwd {

AttentionLayout make_attention_layout(const std::vector<Split>& key_splits, int64_t prefix, int64_t rows) {
  AttentionLayout a;
  a.prefix = prefix;
  a.rows = rows;
  int64_t start = 0;
  for (const Split& s : key_splits) {
    a.splits.push_back({start, s.len, s.mode});
    start += s.len;
  }
  if (start != prefix + rows)
    fail("attention", "splits cover " + std::to_string(start) + " keys, expected " + std::to_string(prefix + rows));
  a.query_split.resize(rows);
  size_t s = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t g = prefix + i;
    while (a.splits[s].start + a.splits[s].len <= g) ++s;
    a.query_split[i] = int32_t(s);
  }
  return a;
}

void AttentionLayout::visible(int64_t i, std::vector<KeyRange>& out) const {
  out.clear();
  const int64_t g = prefix + i;
  const int32_t own = query_split[i];
  auto add = [&out](int64_t begin, int64_t end) {  // merges adjacent ranges
    if (!out.empty() && out.back().end == begin)
      out.back().end = end;
    else
      out.push_back({begin, end});
  };
  for (int32_t s = 0; s <= own; ++s) {
    const SplitSpan& sp = splits[s];
    if (s == own)
      add(sp.start, sp.mode != SplitMode::Causal ? sp.start + sp.len : g + 1);
    else if (sp.mode != SplitMode::Noise)  // earlier splits are visible unless they are noise
      add(sp.start, sp.start + sp.len);
  }
}

namespace {

float dot_scalar(const float* a, const float* b, int n) {
  float s = 0;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
void axpy_scalar(float* y, float a, const float* x, int n) {
  for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

__attribute__((target("avx2,fma"))) float dot_avx2(const float* a, const float* b, int n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  __m256 acc = _mm256_add_ps(acc0, acc1);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  float r = _mm_cvtss_f32(s);
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}
__attribute__((target("avx2,fma"))) void axpy_avx2(float* y, float a, const float* x, int n) {
  const __m256 va = _mm256_set1_ps(a);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

struct VecOps {
  float (*dot)(const float*, const float*, int);
  void (*axpy)(float*, float, const float*, int);
};
const VecOps& vec_ops() {
  static const VecOps ops = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                                ? VecOps{dot_avx2, axpy_avx2}
                                : VecOps{dot_scalar, axpy_scalar};
  return ops;
}

// One query head over its visible key ranges: two passes (scores and max, then weighted sum).
void attend_one(const VecOps& ops, const float* qh, const float* k, const float* v, int64_t kv_stride, int hd,
                float scale, const std::vector<KeyRange>& ranges, std::vector<float>& scores, float* out) {
  float mx = -std::numeric_limits<float>::infinity();
  size_t n = 0;
  for (const KeyRange& r : ranges)
    for (int64_t j = r.begin; j < r.end; ++j) {
      const float s = ops.dot(qh, k + j * kv_stride, hd) * scale;
      scores[n++] = s;
      mx = std::max(mx, s);
    }
  std::fill(out, out + hd, 0.0f);
  double sum = 0;
  n = 0;
  for (const KeyRange& r : ranges)
    for (int64_t j = r.begin; j < r.end; ++j) {
      const float p = std::exp(scores[n++] - mx);
      sum += p;
      ops.axpy(out, p, v + j * kv_stride, hd);
    }
  const float inv = float(1.0 / sum);
  for (int d = 0; d < hd; ++d) out[d] *= inv;
}

}  // namespace

void attention(const AttentionShape& s, const AttentionLayout& layout, const float* q, const float* k,
               const float* v, float* out) {
  const int hd = s.head_dim, group = s.num_heads / s.num_kv_heads;
  const int64_t q_stride = int64_t(s.num_heads) * hd, kv_stride = int64_t(s.num_kv_heads) * hd;
  const float scale = float(1.0 / std::sqrt(double(hd)));
  const VecOps& ops = vec_ops();
  // Work items: (query block, head); blocks keep each item's key reads cache-friendly.
  const int64_t block = 16, blocks = (layout.rows + block - 1) / block;
  kernels::parallel_for(blocks * s.num_heads, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(size_t(layout.keys()));
    std::vector<KeyRange> ranges;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / s.num_heads;
      const int h = int(item % s.num_heads), kvh = h / group;
      for (int64_t i = b * block; i < std::min(layout.rows, (b + 1) * block); ++i) {
        layout.visible(i, ranges);
        attend_one(ops, q + i * q_stride + h * hd, k + kvh * hd, v + kvh * hd, kv_stride, hd, scale, ranges,
                   scores, out + i * q_stride + h * hd);
      }
    }
  });
}

void attention_ref(const AttentionShape& s, const std::vector<Split>& key_splits, int64_t prefix, int64_t rows,
                   const float* q, const float* k, const float* v, float* out) {
  const int64_t keys = prefix + rows;
  std::vector<int64_t> split_of(keys);
  std::vector<SplitMode> mode_of(keys);
  int64_t r = 0;
  for (size_t si = 0; si < key_splits.size(); ++si)
    for (int64_t j = 0; j < key_splits[si].len; ++j, ++r) {
      split_of[r] = int64_t(si);
      mode_of[r] = key_splits[si].mode;
    }
  const int hd = s.head_dim, group = s.num_heads / s.num_kv_heads;
  const int64_t qs = int64_t(s.num_heads) * hd, ks = int64_t(s.num_kv_heads) * hd;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t g = prefix + i;
    std::vector<bool> allowed(keys);
    for (int64_t j = 0; j < keys; ++j) {
      const bool same = split_of[j] == split_of[g];
      const bool bidir_same = same && mode_of[g] != SplitMode::Causal;
      const bool hidden_noise = mode_of[j] == SplitMode::Noise && !same;
      allowed[j] = (j <= g || bidir_same) && !hidden_noise;
    }
    for (int h = 0; h < s.num_heads; ++h) {
      const float* qh = q + i * qs + h * hd;
      std::vector<double> sc(keys, -INFINITY);
      double mx = -INFINITY;
      for (int64_t j = 0; j < keys; ++j) {
        if (!allowed[j]) continue;
        double d = 0;
        for (int t = 0; t < hd; ++t) d += double(qh[t]) * k[j * ks + (h / group) * hd + t];
        sc[j] = d / std::sqrt(double(hd));
        mx = std::max(mx, sc[j]);
      }
      double sum = 0;
      std::vector<double> acc(hd, 0.0);
      for (int64_t j = 0; j < keys; ++j) {
        if (!allowed[j]) continue;
        const double p = std::exp(sc[j] - mx);
        sum += p;
        for (int t = 0; t < hd; ++t) acc[t] += p * v[j * ks + (h / group) * hd + t];
      }
      for (int t = 0; t < hd; ++t) out[i * qs + h * hd + t] = float(acc[t] / sum);
    }
  }
}

}  // namespace lq::fwd
