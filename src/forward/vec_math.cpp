// Element-wise decoder pieces (vec_math.h). exp: Cephes' single-precision scheme (x = n ln2 + r with
// ln2 split in two constants, a degree-5 polynomial for e^r on |r| <= ln2 / 2, 2^n through the
// exponent bits), within 2 ulp of exp over [-87.3, 88.7]; below, 0, above, +inf.
#include "forward/vec_math.h"

// RoPE must give the scalar definition's bits (separately rounded products, then the sum): no
// contraction of a multiply and an add into an FMA, which GCC does by default for AVX2 code and
// clang (which ignores the GCC pragma) does within an expression by default.
#pragma GCC optimize("fp-contract=off")
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include <algorithm>
#include <atomic>
#include <cmath>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LQ_VEC_X86 1
#endif

#include "kernels/parallel.h"

namespace lq::fwd {

namespace {

std::atomic<bool> g_force_scalar{false};

bool simd() {
#ifdef LQ_VEC_X86
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok && !g_force_scalar.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

// Rows per parallel chunk: enough work to pay for the hand-off.
int64_t row_grain(int64_t per_row) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(per_row, 1)); }

#ifdef LQ_VEC_X86
#define LQ_VEC __attribute__((target("avx2,fma")))

LQ_VEC inline __m256 exp8(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.7228f), lo = _mm256_set1_ps(-87.3365f);
  const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q), x0 = x;
  const __m256 over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ), under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n in two halves (n reaches 128 at the top of the range, past the exponent of one factor).
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i h1 = _mm256_srai_epi32(ni, 1), h2 = _mm256_sub_epi32(ni, h1);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h1, _mm256_set1_epi32(127)), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h2, _mm256_set1_epi32(127)), 23));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), over);
  y = _mm256_andnot_ps(under, y);
  // NaN in, NaN out.
  return _mm256_blendv_ps(y, x0, nan);
}

LQ_VEC void exp_avx2(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp8(_mm256_loadu_ps(x + i)));
  if (i < n) {
    alignas(32) float buf[8] = {};
    std::copy(x + i, x + n, buf);
    _mm256_store_ps(buf, exp8(_mm256_load_ps(buf)));
    std::copy(buf, buf + (n - i), y + i);
  }
}

LQ_VEC void silu_mul_avx2(float* g, const float* u, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(g + i);
    const __m256 e = exp8(_mm256_xor_ps(v, sign));
    _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
  }
  for (; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

LQ_VEC void rms_norm_avx2(const float* x, const float* w, int64_t dim, double eps, float* y) {
  __m256d a0 = _mm256_setzero_pd(), a1 = a0;
  int64_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    a0 = _mm256_fmadd_pd(lo, lo, a0);
    a1 = _mm256_fmadd_pd(hi, hi, a1);
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(a0, a1));
  double ss = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  for (; i < dim; ++i) ss += double(x[i]) * x[i];
  const float inv = float(1.0 / std::sqrt(ss / double(dim) + eps));
  const __m256 vi = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= dim; i += 8)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(_mm256_loadu_ps(x + i), vi)));
  for (; i < dim; ++i) y[i] = w[i] * (x[i] * inv);
}

LQ_VEC void rope_row_avx2(float* v, int half, const float* cs, const float* sn) {
  int j = 0;
  for (; j + 8 <= half; j += 8) {
    const __m256 a = _mm256_loadu_ps(v + j), b = _mm256_loadu_ps(v + j + half);
    const __m256 c = _mm256_loadu_ps(cs + j), s = _mm256_loadu_ps(sn + j);
    _mm256_storeu_ps(v + j, _mm256_sub_ps(_mm256_mul_ps(a, c), _mm256_mul_ps(b, s)));
    _mm256_storeu_ps(v + j + half, _mm256_add_ps(_mm256_mul_ps(b, c), _mm256_mul_ps(a, s)));
  }
  for (; j < half; ++j) {
    const float a = v[j], b = v[j + half];
    v[j] = a * cs[j] - b * sn[j];
    v[j + half] = b * cs[j] + a * sn[j];
  }
}
#endif

void rms_norm_scalar(const float* x, const float* w, int64_t dim, double eps, float* y) {
  double ss = 0;
  for (int64_t i = 0; i < dim; ++i) ss += double(x[i]) * x[i];
  const float inv = float(1.0 / std::sqrt(ss / double(dim) + eps));
  for (int64_t i = 0; i < dim; ++i) y[i] = w[i] * (x[i] * inv);
}

}  // namespace

bool vec_math_simd() { return simd(); }
void set_vec_math_scalar(bool scalar) { g_force_scalar.store(scalar, std::memory_order_relaxed); }

void exp_f32(const float* x, float* y, int64_t n) {
#ifdef LQ_VEC_X86
  if (simd()) return exp_avx2(x, y, n);
#endif
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}

void rms_norm_rows(const float* x, int64_t rows, int64_t dim, double eps, const float* const* row_weights, float* y) {
  const bool vec = simd();
  kernels::parallel_for(rows, row_grain(dim), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
#ifdef LQ_VEC_X86
      if (vec) {
        rms_norm_avx2(x + r * dim, row_weights[r], dim, eps, y + r * dim);
        continue;
      }
#endif
      rms_norm_scalar(x + r * dim, row_weights[r], dim, eps, y + r * dim);
    }
  });
}

void silu_mul(float* gate, const float* up, int64_t n) {
  const bool vec = simd();
  constexpr int64_t kChunk = 8192;
  kernels::parallel_for((n + kChunk - 1) / kChunk, 1, [&](int64_t c0, int64_t c1) {
    const int64_t i0 = c0 * kChunk, i1 = std::min(n, c1 * kChunk);
#ifdef LQ_VEC_X86
    if (vec) return silu_mul_avx2(gate + i0, up + i0, i1 - i0);
#endif
    for (int64_t i = i0; i < i1; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  });
}

void rope_rotate(float* x, int64_t rows, int64_t heads, int half, const float* cs, const float* sn) {
  const bool vec = simd();
  kernels::parallel_for(rows, row_grain(heads * 2 * half), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i)
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + (i * heads + h) * 2 * half;
        const float* c = cs + i * half;
        const float* s = sn + i * half;
#ifdef LQ_VEC_X86
        if (vec) {
          rope_row_avx2(v, half, c, s);
          continue;
        }
#endif
        for (int j = 0; j < half; ++j) {
          const float a = v[j], b = v[j + half];
          v[j] = a * c[j] - b * s[j];
          v[j + half] = b * c[j] + a * s[j];
        }
      }
  });
}

}  // namespace lq::fwd
