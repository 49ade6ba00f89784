// GPTQ and its linear algebra against independent expectations: double-precision references written
// out plainly here (Cholesky, Gauss-Jordan inverse, X^T X from the rows, a column-by-column GPTQ
// without blocks), and math: with H = I GPTQ is RTN bit for bit; on correlated inputs its H-weighted
// error is below RTN's; act-order keeps the standard group layout.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "io/error.h"
#include "kernels/parallel.h"
#include "quant/gptq.h"
#include "quant/linalg.h"
#include "quant/nvfp4.h"
#include "quant/quantizer.h"
#include "quant/rtn.h"
#include "test_random.h"

namespace lq::quant {
namespace {

using lq::test::gaussian;

QuantParams params(Scheme s, int64_t g) {
  QuantParams p;
  p.scheme = s;
  p.group = g;
  return p;
}

// Correlated inputs with uneven channel magnitudes: X = Z M diag(c), M = I + 0.6 N / sqrt(in).
std::vector<float> correlated_rows(int64_t n, int64_t in, uint32_t seed) {
  const std::vector<float> z = gaussian(size_t(n * in), 1.0f, seed), mix = gaussian(size_t(in * in), 1.0f, seed + 1);
  std::vector<float> x(size_t(n * in));
  std::mt19937 rng(seed + 2);
  std::uniform_real_distribution<float> u(0.2f, 3.0f);
  std::vector<float> c(static_cast<size_t>(in));
  for (auto& v : c) v = u(rng);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < in; ++j) {
      double s = z[size_t(r * in + j)];
      for (int64_t k = 0; k < in; ++k) s += 0.6 / std::sqrt(double(in)) * z[size_t(r * in + k)] * mix[size_t(k * in + j)];
      x[size_t(r * in + j)] = float(s) * c[size_t(j)];
    }
  return x;
}

// 2 X^T X / n in double.
std::vector<double> xtx_ref(const std::vector<float>& x, int64_t n, int64_t in) {
  std::vector<double> h(size_t(in * in), 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j < in; ++j) h[size_t(i * in + j)] += double(x[size_t(r * in + i)]) * x[size_t(r * in + j)];
  for (auto& v : h) v *= 2.0 / double(n);
  return h;
}

std::vector<float> to_f(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

// Symmetric positive definite test matrix of size n.
std::vector<double> spd(int64_t n, uint32_t seed) {
  const std::vector<float> x = correlated_rows(2 * n, n, seed);
  std::vector<double> h = xtx_ref(x, 2 * n, n);
  for (int64_t i = 0; i < n; ++i) h[size_t(i * n + i)] += 0.01;
  return h;
}

// Gauss-Jordan inverse with partial pivoting, double.
std::vector<double> inverse_ref(std::vector<double> a, int64_t n) {
  std::vector<double> inv(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) inv[size_t(i * n + i)] = 1.0;
  for (int64_t c = 0; c < n; ++c) {
    int64_t piv = c;
    for (int64_t r = c + 1; r < n; ++r)
      if (std::fabs(a[size_t(r * n + c)]) > std::fabs(a[size_t(piv * n + c)])) piv = r;
    for (int64_t j = 0; j < n; ++j) std::swap(a[size_t(c * n + j)], a[size_t(piv * n + j)]), std::swap(inv[size_t(c * n + j)], inv[size_t(piv * n + j)]);
    const double d = a[size_t(c * n + c)];
    for (int64_t j = 0; j < n; ++j) a[size_t(c * n + j)] /= d, inv[size_t(c * n + j)] /= d;
    for (int64_t r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = a[size_t(r * n + c)];
      if (f == 0) continue;
      for (int64_t j = 0; j < n; ++j) a[size_t(r * n + j)] -= f * a[size_t(c * n + j)], inv[size_t(r * n + j)] -= f * inv[size_t(c * n + j)];
    }
  }
  return inv;
}

// Lower Cholesky, double, textbook.
std::vector<double> cholesky_ref(const std::vector<double>& a, int64_t n) {
  std::vector<double> l(size_t(n * n), 0.0);
  for (int64_t j = 0; j < n; ++j) {
    double d = a[size_t(j * n + j)];
    for (int64_t p = 0; p < j; ++p) d -= l[size_t(j * n + p)] * l[size_t(j * n + p)];
    l[size_t(j * n + j)] = std::sqrt(d);
    for (int64_t i = j + 1; i < n; ++i) {
      double s = a[size_t(i * n + j)];
      for (int64_t p = 0; p < j; ++p) s -= l[size_t(i * n + p)] * l[size_t(j * n + p)];
      l[size_t(i * n + j)] = s / l[size_t(j * n + j)];
    }
  }
  return l;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}
double max_abs(const std::vector<double>& b) {
  double m = 0;
  for (double v : b) m = std::max(m, std::fabs(v));
  return m;
}

TEST(Linalg, GemmNtMatchesNaiveIncludingLowerMode) {
  const int64_t m = 300, n = 270, k = 90;
  const std::vector<float> a = gaussian(size_t(m * 100), 1.0f, 1), b = gaussian(size_t(n * 95), 1.0f, 2);
  std::vector<float> c(size_t(m * n), 1.0f), cl(size_t(m * n), 1.0f);
  linalg::gemm_nt(m, n, k, -0.5f, a.data(), 100, b.data(), 95, c.data(), n);
  linalg::gemm_nt(m, n, k, -0.5f, a.data(), 100, b.data(), 95, cl.data(), n, /*lower=*/true, 3);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) s += double(a[size_t(i * 100 + p)]) * b[size_t(j * 95 + p)];
      const double want = 1.0 - 0.5 * s;
      ASSERT_NEAR(c[size_t(i * n + j)], want, 1e-4) << i << "," << j;
      ASSERT_NEAR(cl[size_t(i * n + j)], j <= i + 3 ? want : 1.0, 1e-4) << i << "," << j;
    }
}

TEST(Linalg, CholeskyAndTriangularInverseMatchDoubleReferences) {
  for (int64_t n : {5, 128, 300}) {  // one block, exactly one block, several blocks with a tail
    const std::vector<double> h = spd(n, uint32_t(n));
    std::vector<float> a = to_f(h);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) a[size_t(i * n + j)] = 12345.0f;  // the strict upper triangle is never touched
    ASSERT_TRUE(linalg::cholesky_lower(a.data(), n));
    const std::vector<double> l = cholesky_ref(h, n);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        if (j > i) {
          ASSERT_EQ(a[size_t(i * n + j)], 12345.0f);
          continue;
        }
        ASSERT_NEAR(a[size_t(i * n + j)], l[size_t(i * n + j)], 2e-4 * max_abs(l)) << n << ": " << i << "," << j;
      }
    linalg::invert_lower(a.data(), n);
    std::vector<double> lfull(l);
    const std::vector<double> linv = inverse_ref(lfull, n);
    EXPECT_LT(max_abs_diff(a, linv), 1e-3 * max_abs(linv)) << n;
  }
}

TEST(Linalg, InverseCholeskyUpperGivesUtU_EqualToHInverse) {
  const int64_t n = 260;
  const std::vector<double> h = spd(n, 7);
  std::vector<float> u = to_f(h), diag(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) diag[size_t(i)] = u[size_t(i * n + i)];
  ASSERT_TRUE(linalg::inverse_cholesky_upper(u.data(), n, diag));
  const std::vector<double> hinv = inverse_ref(h, n);
  // U upper, positive diagonal, U^T U = H^-1.
  std::vector<double> utu(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_GT(u[size_t(i * n + i)], 0.0f);
    for (int64_t j = 0; j < i; ++j) ASSERT_EQ(u[size_t(i * n + j)], 0.0f);
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = 0; k <= std::min(i, j); ++k) s += double(u[size_t(k * n + i)]) * u[size_t(k * n + j)];
      utu[size_t(i * n + j)] = s;
    }
  double err = 0;
  for (size_t i = 0; i < utu.size(); ++i) err = std::max(err, std::fabs(utu[i] - hinv[i]));
  EXPECT_LT(err, 2e-3 * max_abs(hinv));
}

TEST(Linalg, FailedCholeskyRestoresH) {
  const int64_t n = 140;
  std::vector<double> h = spd(n, 3);
  h[size_t(70 * n + 70)] = -1.0;  // not positive definite
  std::vector<float> a = to_f(h), diag(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) diag[size_t(i)] = a[size_t(i * n + i)];
  const std::vector<float> before = a;
  EXPECT_FALSE(linalg::inverse_cholesky_upper(a.data(), n, diag));
  EXPECT_EQ(a, before);
}

TEST(Linalg, PermuteSymmetric) {
  const int64_t n = 37;
  const std::vector<float> a = gaussian(size_t(n * n), 1.0f, 9);
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(4));
  std::vector<float> b = a;
  linalg::permute_symmetric(b.data(), n, perm);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(b[size_t(i * n + j)], a[size_t(perm[size_t(i)] * n + perm[size_t(j)])]);
}

TEST(Linalg, XtxAccumulatorEqualsXtXOfTheRows) {
  const int64_t in = 96, n = 700;  // several panels of 256 rows, added in uneven pieces
  const std::vector<float> x = gaussian(size_t(n * in), 1.5f, 11);
  linalg::XtxAccumulator acc(in);
  int64_t r = 0;
  for (int64_t piece : {1, 300, 17, 256, 126}) acc.add(x.data() + r * in, piece), r += piece;
  ASSERT_EQ(r, n);
  EXPECT_EQ(acc.rows(), n);
  const std::vector<float> h = acc.hessian();
  const std::vector<double> ref = xtx_ref(x, n, in);
  EXPECT_LT(max_abs_diff(h, ref), 1e-5 * max_abs(ref));
  for (int64_t i = 0; i < in; ++i)
    for (int64_t j = 0; j < in; ++j) ASSERT_EQ(h[size_t(i * in + j)], h[size_t(j * in + i)]);
}

// ---- GPTQ -----------------------------------------------------------------------------------

struct RefResult {
  std::vector<uint8_t> codes;
  std::vector<float> wq;
};

// Column-by-column GPTQ in double, no blocks: H^-1 by Gauss-Jordan, its upper Cholesky factor
// U = chol(H^-1)^T, each column's error pushed onto every later column at once. Group parameters and
// codes through the writer's element functions (tested against the RTN reference elsewhere).
RefResult gptq_reference(const std::vector<float>& w, int64_t out, int64_t in, const QuantParams& p, std::vector<double> h,
                         bool act_order, double damp) {
  const int64_t g = p.effective_group(in);
  std::vector<double> diag(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i) {
    if (h[size_t(i * in + i)] == 0) h[size_t(i * in + i)] = 1;
    diag[size_t(i)] = h[size_t(i * in + i)];
  }
  std::vector<int64_t> perm(static_cast<size_t>(in));
  std::iota(perm.begin(), perm.end(), 0);
  if (act_order) std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return diag[size_t(a)] > diag[size_t(b)]; });
  const double mean = std::accumulate(diag.begin(), diag.end(), 0.0) / double(in);
  std::vector<double> hp(size_t(in * in));
  for (int64_t i = 0; i < in; ++i)
    for (int64_t j = 0; j < in; ++j) hp[size_t(i * in + j)] = h[size_t(perm[size_t(i)] * in + perm[size_t(j)])];
  for (int64_t i = 0; i < in; ++i) hp[size_t(i * in + i)] += damp * mean;
  const std::vector<double> l = cholesky_ref(inverse_ref(hp, in), in);  // U = l^T
  auto U = [&](int64_t i, int64_t j) { return l[size_t(j * in + i)]; };
  float t = 1.0f;
  if (p.scheme == Scheme::NvFp4) {
    float amax = 0;
    for (float v : w) amax = std::max(amax, std::fabs(v));
    t = nvfp4_tensor_scale(amax, p);
  }
  RefResult res{std::vector<uint8_t>(size_t(out * in)), std::vector<float>(size_t(out * in))};
  const RtnParams rp{p.scheme, g, p.scale_dtype};
  for (int64_t r = 0; r < out; ++r) {
    std::vector<double> wr(static_cast<size_t>(in));
    for (int64_t i = 0; i < in; ++i) wr[size_t(i)] = w[size_t(r * in + perm[size_t(i)])];
    std::vector<RtnGroupParams> gp(size_t(in / g));
    std::vector<Nvfp4Block> bp(size_t(in / g));
    auto fix = [&](int64_t gi, const float* vals) {
      if (p.scheme == Scheme::NvFp4) bp[size_t(gi)] = nvfp4_block_params(vals, t, p);
      else gp[size_t(gi)] = rtn_group_params(vals, g, rp);
    };
    if (act_order)
      for (int64_t gi = 0; gi < in / g; ++gi) fix(gi, &w[size_t(r * in + gi * g)]);
    for (int64_t i = 0; i < in; ++i) {
      const int64_t c = perm[size_t(i)], gi = c / g;
      if (!act_order && c % g == 0) {
        std::vector<float> vals(static_cast<size_t>(g));
        for (int64_t k = 0; k < g; ++k) vals[size_t(k)] = float(wr[size_t(i + k)]);
        fix(gi, vals.data());
      }
      const float x = float(wr[size_t(i)]);
      uint8_t code;
      float v;
      if (p.scheme == Scheme::NvFp4) code = nvfp4_code(x, bp[size_t(gi)]), v = nvfp4_value(code, bp[size_t(gi)]);
      else code = rtn_code(x, gp[size_t(gi)], p.scheme), v = rtn_value(code, gp[size_t(gi)]);
      res.codes[size_t(r * in + c)] = code;
      res.wq[size_t(r * in + c)] = v;
      const double e = (wr[size_t(i)] - v) / U(i, i);
      for (int64_t j = i + 1; j < in; ++j) wr[size_t(j)] -= e * U(i, j);
    }
  }
  return res;
}

struct Problem {
  int64_t out, in;
  std::vector<float> w;
  std::vector<double> h;
};
Problem problem(int64_t out, int64_t in, uint32_t seed) {
  Problem pr{out, in, gaussian(size_t(out * in), 0.05f, seed), {}};
  pr.h = xtx_ref(correlated_rows(4 * in, in, seed + 10), 4 * in, in);
  return pr;
}

TEST(Gptq, IdentityHessianIsRtnBitForBit) {
  const int64_t out = 24, in = 256;
  const std::vector<float> w = gaussian(size_t(out * in), 0.05f, 21);
  std::vector<float> eye(size_t(in * in), 0.0f);
  for (int64_t i = 0; i < in; ++i) eye[size_t(i * in + i)] = 1.0f;
  for (const QuantParams& p : {params(Scheme::Int4Asym, 64), params(Scheme::Int4Asym, 128), params(Scheme::Int4Asym, 0),
                               params(Scheme::Int4Sym, 32), params(Scheme::Int8Sym, 128), params(Scheme::NvFp4, 16)})
    for (bool act_order : {false, true}) {
      std::vector<float> h = eye;
      GptqOptions o;
      o.act_order = act_order;
      const QTensor q = gptq_quantize(w.data(), out, in, p, h, o);
      const QTensor r = quantize(w.data(), out, in, p);
      EXPECT_EQ(q.codes, r.codes) << scheme_name(p.scheme) << " g" << p.group << " act_order " << act_order;
      EXPECT_EQ(q.scales, r.scales);
      EXPECT_EQ(q.zeros, r.zeros);
      EXPECT_EQ(q.block_scales, r.block_scales);
      EXPECT_EQ(q.tensor_scale, r.tensor_scale);
      EXPECT_NO_THROW(q.validate("gptq"));
    }
}

TEST(Gptq, MatchesPlainDoubleReference) {
  const Problem pr = problem(16, 256, 31);
  for (const QuantParams& p : {params(Scheme::Int4Asym, 64), params(Scheme::Int4Asym, 0), params(Scheme::NvFp4, 16)})
    for (bool act_order : {false, true}) {
      std::vector<float> h = to_f(pr.h);
      GptqOptions o;
      o.act_order = act_order;
      o.block = 64;  // several lazy blocks, groups inside and across blocks
      const QTensor q = gptq_quantize(pr.w.data(), pr.out, pr.in, p, h, o);
      const RefResult ref = gptq_reference(pr.w, pr.out, pr.in, p, pr.h, act_order, 0.01);
      const std::vector<float> wq = q.dequantize();
      int64_t same = 0;
      for (size_t i = 0; i < wq.size(); ++i) same += q.codes[i] == ref.codes[i];
      const std::vector<float> hf = to_f(pr.h);
      const double e = hessian_error(pr.w.data(), wq.data(), pr.out, pr.in, hf);
      const double e_ref = hessian_error(pr.w.data(), ref.wq.data(), pr.out, pr.in, hf);
      // f32 blocked vs double unblocked: a rounding-boundary tie could flip a code (none here today).
      EXPECT_GE(double(same) / double(wq.size()), 0.999) << scheme_name(p.scheme) << " act_order " << act_order;
      EXPECT_NEAR(e, e_ref, 0.002 * e_ref) << scheme_name(p.scheme) << " act_order " << act_order;
    }
}

TEST(Gptq, HessianErrorBelowRtnOnCorrelatedInputs) {
  for (uint32_t seed : {41u, 42u, 43u}) {
    const Problem pr = problem(32, 256, seed);
    const std::vector<float> hf = to_f(pr.h);
    for (const QuantParams& p : {params(Scheme::Int4Asym, 32), params(Scheme::Int4Asym, 64), params(Scheme::Int4Asym, 128),
                                 params(Scheme::Int8Sym, 128), params(Scheme::NvFp4, 16)})
      for (bool act_order : {false, true}) {
        std::vector<float> h = hf;
        GptqOptions o;
        o.act_order = act_order;
        const std::vector<float> wq = gptq_quantize(pr.w.data(), pr.out, pr.in, p, h, o).dequantize();
        std::vector<float> rq(wq.size());
        fake_quantize(pr.w.data(), pr.out, pr.in, p, rq.data());
        const double eg = hessian_error(pr.w.data(), wq.data(), pr.out, pr.in, hf);
        const double er = hessian_error(pr.w.data(), rq.data(), pr.out, pr.in, hf);
        EXPECT_LT(eg, 0.9 * er) << "seed " << seed << " " << scheme_name(p.scheme) << " g" << p.group << " act_order " << act_order;
      }
  }
}

TEST(Gptq, ActOrderKeepsStaticContiguousGroups) {
  // Static groups: every group's scale / zero point is the one RTN computes from the ORIGINAL group,
  // whatever the rounding order; codes index the standard layout, so dequantize() is the file's weights.
  const Problem pr = problem(16, 256, 51);
  std::vector<float> h = to_f(pr.h);
  GptqOptions o;
  o.act_order = true;
  const QuantParams p = params(Scheme::Int4Asym, 64);
  const QTensor q = gptq_quantize(pr.w.data(), pr.out, pr.in, p, h, o);
  const QTensor r = quantize(pr.w.data(), pr.out, pr.in, p);
  EXPECT_EQ(q.group, 64);
  EXPECT_EQ(q.scales, r.scales);
  EXPECT_EQ(q.zeros, r.zeros);
  EXPECT_NE(q.codes, r.codes);  // the rounding itself changed
  EXPECT_NO_THROW(q.validate("gptq act-order"));
  // Each code is the element rule applied with its group's stored parameters to SOME value: it
  // dequantizes to (code - zero) * scale exactly.
  const std::vector<float> wq = q.dequantize();
  for (int64_t rr = 0; rr < pr.out; ++rr)
    for (int64_t c = 0; c < pr.in; ++c) {
      const size_t k = size_t(rr * (pr.in / 64) + c / 64);
      ASSERT_EQ(wq[size_t(rr * pr.in + c)], (float(q.codes[size_t(rr * pr.in + c)]) - float(q.zeros[k])) * q.scales[k]);
    }
}

TEST(Gptq, SameResultForAnyThreadCount) {
  const Problem pr = problem(40, 384, 61);
  auto run = [&](int threads) {
    kernels::set_num_threads(threads);
    std::vector<float> h = to_f(pr.h);
    GptqOptions o;
    o.act_order = true;
    return gptq_quantize(pr.w.data(), pr.out, pr.in, params(Scheme::Int4Asym, 128), h, o).codes;
  };
  const auto a = run(1), b = run(2), c = run(3);
  kernels::set_num_threads(0);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
}

TEST(Gptq, SingularHessianRetriesDampingAndDeadInputsAreHandled) {
  // 8 rows for 64 inputs: H has rank 8; input 5 never active (dead).
  const int64_t in = 64, n = 8, out = 4;
  std::vector<float> x = gaussian(size_t(n * in), 1.0f, 71);
  for (int64_t r = 0; r < n; ++r) x[size_t(r * in + 5)] = 0.0f;
  std::vector<float> h = to_f(xtx_ref(x, n, in));
  const std::vector<float> w = gaussian(size_t(out * in), 0.1f, 72);
  GptqOptions o;
  o.damp = 0.0;  // no damping: the Cholesky of a rank-8 H fails and must be retried with some
  GptqInfo info;
  const QTensor q = gptq_quantize(w.data(), out, in, params(Scheme::Int4Asym, 32), h, o, nullptr, &info);
  EXPECT_GE(info.retries, 1);
  EXPECT_GT(info.damp, 0.0);
  EXPECT_EQ(info.dead_columns, 1);
  EXPECT_NO_THROW(q.validate("gptq"));
}

TEST(Gptq, RefusesBadShapes) {
  std::vector<float> w(4 * 48, 0.1f), h(48 * 48, 0.0f);
  EXPECT_THROW(gptq_quantize(w.data(), 4, 48, params(Scheme::Int4Asym, 32), h), Error);  // 48 % 32
  std::vector<float> small(10);
  EXPECT_THROW(gptq_quantize(w.data(), 4, 48, params(Scheme::Int4Asym, 16), small), Error);
}

}  // namespace
}  // namespace lq::quant
