#include "export/ggml_gptq.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "export/ggml_search.h"
#include "io/error.h"

namespace lq::exporter {

namespace {

// In-place lower Cholesky factor of the symmetric positive definite a (n x n, row-major; the upper
// triangle is left as it was). False when a pivot is not positive.
bool cholesky_lower(std::vector<double>& a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double* rj = a.data() + j * n;
    double d = rj[j];
    for (int64_t k = 0; k < j; ++k) d -= rj[k] * rj[k];
    if (!(d > 0.0)) return false;
    const double ljj = std::sqrt(d);
    rj[j] = ljj;
    for (int64_t i = j + 1; i < n; ++i) {
      double* ri = a.data() + i * n;
      double v = ri[j];
      for (int64_t k = 0; k < j; ++k) v -= ri[k] * rj[k];
      ri[j] = v / ljj;
    }
  }
  return true;
}

}  // namespace

GptqFactor gptq_factor(const std::vector<double>& xtx, int64_t n, double rel_damp, const std::string& where) {
  if (n <= 0 || xtx.size() != size_t(n * n)) fail(where, "X^T X is not " + std::to_string(n) + " x " + std::to_string(n));
  GptqFactor f;
  f.n = n;
  // Dead inputs: no feedback into or out of them (H row and column cleared, unit diagonal).
  std::vector<bool> dead(size_t(n), false);
  double diag_sum = 0;
  int64_t live = 0;
  for (int64_t j = 0; j < n; ++j) {
    const double d = xtx[size_t(j * n + j)];
    if (!(d > 0.0)) {
      dead[size_t(j)] = true;
      ++f.dead;
    } else {
      diag_sum += d;
      ++live;
    }
  }
  const double mean_diag = live ? diag_sum / double(live) : 1.0;
  // Factor the reversed matrix: P H P = K K^T (K lower) gives H = R R^T with R = P K P upper, so
  // H^-1 = R^-T R^-1 and U = R^-1 = P K^-1 P is the upper factor GPTQ needs (H^-1 = U^T U).
  std::vector<double> k;
  double damp = rel_damp;
  for (int attempt = 0;; ++attempt) {
    k.assign(size_t(n * n), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        const int64_t oi = n - 1 - i, oj = n - 1 - j;
        double v = dead[size_t(oi)] || dead[size_t(oj)] ? 0.0 : xtx[size_t(oi * n + oj)] / mean_diag;
        if (i == j) v = dead[size_t(oi)] ? 1.0 : v + damp;
        k[size_t(i * n + j)] = v;
      }
    if (cholesky_lower(k, n)) break;
    if (attempt == 5)
      fail(where, "X^T X is not positive definite even with damping " + std::to_string(damp) + " x its mean diagonal");
    damp *= 10.0;
  }
  f.damp = damp;
  // K^-1 (lower), one row at a time: row i = (e_i - sum_{c<i} K[i][c] * row c) / K[i][i].
  std::vector<double> inv(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    double* ri = inv.data() + i * n;
    const double* ki = k.data() + i * n;
    for (int64_t c = 0; c < i; ++c) {
      const double kc = ki[c];
      if (kc == 0.0) continue;
      const double* rc = inv.data() + c * n;
      for (int64_t j = 0; j <= c; ++j) ri[j] -= kc * rc[j];
    }
    ri[i] += 1.0;
    const double kii = ki[i];
    for (int64_t j = 0; j <= i; ++j) ri[j] /= kii;
  }
  // U = P K^-1 P (scaled back: H was divided by its mean diagonal, so U carries 1/sqrt(mean_diag); only
  // the ratios U[j][k] / U[j][j] matter, and they are scale-free).
  f.u.assign(size_t(n * n), 0.0f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) f.u[size_t(i * n + j)] = float(inv[size_t((n - 1 - i) * n + (n - 1 - j))]);
  return f;
}

void gptq_encode_row(const GgmlTypeTraits& tr, const float* x, int64_t n, const float* imp, const GptqFactor& f,
                     uint8_t* dst) {
  if (tr.n_codes == 0 || !tr.block_affine || !tr.set_codes)
    fail("gptq", std::string("type ") + tr.name + " has no code grid");
  if (n != f.n) fail("gptq", "row of " + std::to_string(n) + " elements for a factor of width " + std::to_string(f.n));
  const int64_t be = tr.block_elems;
  double ms = 0;
  for (int64_t i = 0; i < n; ++i) ms += double(x[i]) * x[i];
  const float row_ms = float(n > 0 ? ms / double(n) : 0.0);
  std::vector<float> w(x, x + n);
  std::vector<float> a(static_cast<size_t>(be)), b(static_cast<size_t>(be));
  std::vector<uint8_t> codes(static_cast<size_t>(be));
  const int lo = -tr.grid_zero, hi = tr.n_codes - 1 - tr.grid_zero;  // linear grids: integer values lo..hi
  for (int64_t b0 = 0; b0 < n; b0 += be, dst += tr.block_bytes) {
    tr.encode_part(w.data() + b0, be, dst, imp ? imp + b0 : nullptr, row_ms);
    tr.block_affine(dst, a.data(), b.data());
    for (int64_t i = 0; i < be; ++i) {
      const int64_t j = b0 + i;
      const float ai = a[size_t(i)], bi = b[size_t(i)];
      // The code each plain encoder picks for these scales: nearest value, the same float steps.
      const float inv = ai != 0.0f ? 1.0f / ai : 0.0f;
      const float t = (w[size_t(j)] - bi) * inv;
      int c;
      float y;
      if (tr.nl_grid) {
        c = search::nearest_grid_index(tr.nl_grid, t);
        y = ai * float(tr.nl_grid[c]) + bi;
      } else {
        const float r = std::nearbyint(t);
        const int l = !(r >= float(lo)) ? lo : r > float(hi) ? hi : int(r);
        c = l + tr.grid_zero;
        y = ai * float(l) + bi;
      }
      codes[size_t(i)] = uint8_t(c);
      const float* uj = f.u.data() + j * n;
      const float e = (w[size_t(j)] - y) / uj[j];
      float* wk = w.data();
      for (int64_t k = j + 1; k < n; ++k) wk[k] -= e * uj[k];
    }
    tr.set_codes(dst, codes.data());
  }
}

}  // namespace lq::exporter
