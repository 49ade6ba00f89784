#include "forward/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "forward/vec_math.h"
#include "io/error.h"
#include "kernels/parallel.h"

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

// ---- blocked ("flash") attention for many query rows --------------------------------------------
//
// Work item: a block of kQueryBlock query rows x one K/V head, i.e. the rows' G = heads / kv_heads
// query heads that share it (GQA): up to 16 G query vectors. K is transposed once per call ([kv head]
// [dim][key]) so scores come from an outer-product micro-kernel (4 query vectors x 16 keys, no
// horizontal sums); keys are visited in tiles of kKeyTile over the union of the block's visible
// ranges, each row masking what it does not see, with the online softmax: per query vector a running
// max m, sum l and output O; a tile with max m' rescales l and O by exp(m - max(m, m')). P V is a
// second micro-kernel (4 query vectors x 16 dims). Scores are (q * scale) . k; exp is the vector exp
// of vec_math.h. Each item is computed by one thread in a fixed order: deterministic, independent of
// the thread count.
constexpr int64_t kFlashMinRows = 8;  // fewer query rows (decode): the per-query path above
constexpr int64_t kQueryBlock = 16;
constexpr int64_t kKeyTile = 64;
constexpr int kQv = 4;  // query vectors per micro-tile

#define LQ_ATTN __attribute__((target("avx2,fma")))

// s[q * ld + j] = sum_d qb[q * hd + d] * kt[d * kt_ld + j] for q < NQ, j < 16.
template <int NQ>
LQ_ATTN void scores_tile(const float* qb, int hd, const float* kt, int64_t kt_ld, float* s, int64_t ld) {
  __m256 acc[NQ][2];
  for (int q = 0; q < NQ; ++q) acc[q][0] = acc[q][1] = _mm256_setzero_ps();
  for (int d = 0; d < hd; ++d) {
    const __m256 k0 = _mm256_loadu_ps(kt + d * kt_ld), k1 = _mm256_loadu_ps(kt + d * kt_ld + 8);
    for (int q = 0; q < NQ; ++q) {
      const __m256 a = _mm256_broadcast_ss(qb + q * hd + d);
      acc[q][0] = _mm256_fmadd_ps(a, k0, acc[q][0]);
      acc[q][1] = _mm256_fmadd_ps(a, k1, acc[q][1]);
    }
  }
  for (int q = 0; q < NQ; ++q) {
    _mm256_storeu_ps(s + q * ld, acc[q][0]);
    _mm256_storeu_ps(s + q * ld + 8, acc[q][1]);
  }
}

// o[q * hd + d0 ..] += sum_j p[q * ld + j] v[j * v_ld + d0 ..] for q < NQ, 16 dims from d0, j < nj.
template <int NQ>
LQ_ATTN void pv_tile(const float* p, int64_t ld, int64_t nj, const float* v, int64_t v_ld, float* o, int hd) {
  __m256 acc[NQ][2];
  for (int q = 0; q < NQ; ++q) {
    acc[q][0] = _mm256_loadu_ps(o + q * hd);
    acc[q][1] = _mm256_loadu_ps(o + q * hd + 8);
  }
  for (int64_t j = 0; j < nj; ++j) {
    const __m256 v0 = _mm256_loadu_ps(v + j * v_ld), v1 = _mm256_loadu_ps(v + j * v_ld + 8);
    for (int q = 0; q < NQ; ++q) {
      const __m256 a = _mm256_broadcast_ss(p + q * ld + j);
      acc[q][0] = _mm256_fmadd_ps(a, v0, acc[q][0]);
      acc[q][1] = _mm256_fmadd_ps(a, v1, acc[q][1]);
    }
  }
  for (int q = 0; q < NQ; ++q) {
    _mm256_storeu_ps(o + q * hd, acc[q][0]);
    _mm256_storeu_ps(o + q * hd + 8, acc[q][1]);
  }
}

template <class F>
LQ_ATTN void for_query_tiles(int64_t nq, F&& f) {
  int64_t q = 0;
  for (; q + kQv <= nq; q += kQv) f(q, std::integral_constant<int, kQv>{});
  switch (nq - q) {
    case 3: f(q, std::integral_constant<int, 3>{}); break;
    case 2: f(q, std::integral_constant<int, 2>{}); break;
    case 1: f(q, std::integral_constant<int, 1>{}); break;
    default: break;
  }
}

LQ_ATTN float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

struct FlashScratch {
  std::vector<float> qb, s, o, m, l;
  std::vector<std::vector<KeyRange>> row_ranges;
  std::vector<KeyRange> all;
};

// True when `ranges` (ascending, disjoint) cover [b, e) entirely.
bool covers(const std::vector<KeyRange>& ranges, int64_t b, int64_t e) {
  for (const KeyRange& r : ranges)
    if (r.begin <= b && e <= r.end) return true;
  return false;
}

LQ_ATTN void flash_item(const AttentionShape& sh, const AttentionLayout& layout, const float* q, const float* kt,
                        int64_t kt_ld, const float* v, int64_t r0, int64_t r1, int kvh, float* out, FlashScratch& w) {
  const int hd = sh.head_dim, G = sh.num_heads / sh.num_kv_heads;
  const int64_t q_stride = int64_t(sh.num_heads) * hd, kv_stride = int64_t(sh.num_kv_heads) * hd;
  const int64_t rows = r1 - r0, nq = rows * G;
  const float scale = float(1.0 / std::sqrt(double(hd)));
  w.qb.resize(size_t(nq * hd));
  w.o.assign(size_t(nq * hd), 0.0f);
  w.s.resize(size_t(nq * kKeyTile));
  w.m.assign(size_t(nq), -std::numeric_limits<float>::infinity());
  w.l.assign(size_t(nq), 0.0f);
  for (int64_t i = 0; i < rows; ++i)
    for (int hh = 0; hh < G; ++hh) {
      const float* src = q + (r0 + i) * q_stride + int64_t(kvh * G + hh) * hd;
      float* dst = w.qb.data() + (i * G + hh) * hd;
      for (int d = 0; d < hd; ++d) dst[d] = src[d] * scale;
    }
  // Visible ranges of each row, and their union (ascending, merged).
  w.row_ranges.resize(size_t(rows));
  w.all.clear();
  for (int64_t i = 0; i < rows; ++i) {
    layout.visible(r0 + i, w.row_ranges[size_t(i)]);
    w.all.insert(w.all.end(), w.row_ranges[size_t(i)].begin(), w.row_ranges[size_t(i)].end());
  }
  std::sort(w.all.begin(), w.all.end(), [](const KeyRange& a, const KeyRange& b) { return a.begin < b.begin; });
  std::vector<KeyRange> merged;
  for (const KeyRange& r : w.all) {
    if (!merged.empty() && r.begin <= merged.back().end) merged.back().end = std::max(merged.back().end, r.end);
    else merged.push_back(r);
  }
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (const KeyRange& u : merged)
    for (int64_t j0 = u.begin; j0 < u.end; j0 += kKeyTile) {
      const int64_t j1 = std::min(u.end, j0 + kKeyTile), nj = j1 - j0, nj16 = (nj + 15) / 16 * 16;
      // Scores of every query vector for keys [j0, j0 + nj16) (K^T is padded past the last key).
      for_query_tiles(nq, [&](int64_t qi, auto nq_tile) LQ_ATTN {
        for (int64_t jj = 0; jj < nj16; jj += 16)
          scores_tile<decltype(nq_tile)::value>(w.qb.data() + qi * hd, hd, kt + j0 + jj, kt_ld,
                                                w.s.data() + qi * kKeyTile + jj, kKeyTile);
      });
      // Mask what each row does not see.
      for (int64_t i = 0; i < rows; ++i) {
        const auto& rr = w.row_ranges[size_t(i)];
        if (covers(rr, j0, j1)) continue;
        for (int64_t j = j0; j < j1; ++j) {
          bool vis = false;
          for (const KeyRange& r : rr) vis = vis || (r.begin <= j && j < r.end);
          if (!vis)
            for (int hh = 0; hh < G; ++hh) w.s[size_t((i * G + hh) * kKeyTile + (j - j0))] = neg_inf;
        }
      }
      // Online softmax: P = exp(S - m_new) in place, l and O rescaled.
      for (int64_t qv = 0; qv < nq; ++qv) {
        float* srow = w.s.data() + qv * kKeyTile;
        __m256 mx = _mm256_set1_ps(neg_inf);
        int64_t j = 0;
        for (; j + 8 <= nj; j += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(srow + j));
        float mt = hmax8(mx);
        for (; j < nj; ++j) mt = std::max(mt, srow[j]);
        if (mt == neg_inf) {  // nothing visible in this tile for this row
          std::fill(srow, srow + nj, 0.0f);
          continue;
        }
        const float m_new = std::max(w.m[size_t(qv)], mt);
        for (j = 0; j < nj; ++j) srow[j] -= m_new;
        exp_f32(srow, srow, nj);
        float sum = 0.0f;
        for (j = 0; j < nj; ++j) sum += srow[j];
        if (w.m[size_t(qv)] != neg_inf && w.m[size_t(qv)] != m_new) {
          float alpha;
          const float diff = w.m[size_t(qv)] - m_new;
          exp_f32(&diff, &alpha, 1);
          w.l[size_t(qv)] *= alpha;
          float* o = w.o.data() + qv * hd;
          const __m256 va = _mm256_set1_ps(alpha);
          for (int d = 0; d < hd; d += 8) _mm256_storeu_ps(o + d, _mm256_mul_ps(_mm256_loadu_ps(o + d), va));
        }
        w.l[size_t(qv)] += sum;
        w.m[size_t(qv)] = m_new;
      }
      // O += P V.
      const float* vt = v + j0 * kv_stride + int64_t(kvh) * hd;
      for_query_tiles(nq, [&](int64_t qi, auto nq_tile) LQ_ATTN {
        for (int d0 = 0; d0 < hd; d0 += 16)
          pv_tile<decltype(nq_tile)::value>(w.s.data() + qi * kKeyTile, kKeyTile, nj, vt + d0, kv_stride,
                                            w.o.data() + qi * hd + d0, hd);
      });
    }
  for (int64_t i = 0; i < rows; ++i)
    for (int hh = 0; hh < G; ++hh) {
      const int64_t qv = i * G + hh;
      const float inv = 1.0f / w.l[size_t(qv)];
      float* dst = out + (r0 + i) * q_stride + int64_t(kvh * G + hh) * hd;
      for (int d = 0; d < hd; ++d) dst[d] = w.o[size_t(qv * hd + d)] * inv;
    }
}

void blocked_attention(const AttentionShape& s, const AttentionLayout& layout, const float* q, const float* k,
                     const float* v, float* out) {
  const int hd = s.head_dim;
  const int64_t keys = layout.keys(), kv_stride = int64_t(s.num_kv_heads) * hd;
  // K^T per kv head: [kv head][dim][key], keys padded with zeros to a multiple of 16 plus one tile.
  const int64_t kt_ld = (keys + 15) / 16 * 16 + 16;
  std::vector<float> kt(size_t(s.num_kv_heads) * size_t(hd) * size_t(kt_ld), 0.0f);
  kernels::parallel_for(int64_t(s.num_kv_heads) * hd, [&](int64_t b, int64_t e) {
    for (int64_t hdim = b; hdim < e; ++hdim) {
      const int64_t kvh = hdim / hd, d = hdim % hd;
      float* dst = kt.data() + hdim * kt_ld;
      const float* src = k + kvh * hd + d;
      for (int64_t j = 0; j < keys; ++j) dst[j] = src[j * kv_stride];
    }
  });
  const int64_t blocks = (layout.rows + kQueryBlock - 1) / kQueryBlock;
  kernels::parallel_for(blocks * s.num_kv_heads, [&](int64_t begin, int64_t end) {
    thread_local FlashScratch scratch;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / s.num_kv_heads;
      const int kvh = int(item % s.num_kv_heads);
      flash_item(s, layout, q, kt.data() + int64_t(kvh) * hd * kt_ld, kt_ld, v, b * kQueryBlock,
                 std::min(layout.rows, (b + 1) * kQueryBlock), kvh, out, scratch);
    }
  });
}

bool flash_available(const AttentionShape& s) {
  static const bool cpu = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return cpu && s.head_dim % 16 == 0 && s.head_dim > 0;
}

}  // namespace

void attention(const AttentionShape& s, const AttentionLayout& layout, const float* q, const float* k,
               const float* v, float* out) {
  if (layout.rows >= kFlashMinRows) return attention_blocked(s, layout, q, k, v, out);
  attention_rowwise(s, layout, q, k, v, out);
}

void attention_blocked(const AttentionShape& s, const AttentionLayout& layout, const float* q, const float* k,
                       const float* v, float* out) {
  if (!flash_available(s)) return attention_rowwise(s, layout, q, k, v, out);
  blocked_attention(s, layout, q, k, v, out);
}

void attention_rowwise(const AttentionShape& s, const AttentionLayout& layout, const float* q, const float* k,
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
