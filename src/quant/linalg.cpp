#include "quant/linalg.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "io/error.h"
#include "kernels/linear.h"
#include "kernels/parallel.h"

namespace lq::quant::linalg {

namespace {
constexpr int64_t kBlock = 128;  // diagonal block of the factorizations
constexpr int64_t kPanel = 256;  // rows of A per GEMM call (bounds the temporary output)
// Inverse of a small lower-triangular k x k matrix (row-major, double), column by column.
void invert_lower_small(const std::vector<double>& L, int64_t k, std::vector<double>& inv) {
  inv.assign(size_t(k * k), 0.0);
  for (int64_t c = 0; c < k; ++c)
    for (int64_t i = c; i < k; ++i) {
      double s = i == c ? 1.0 : 0.0;
      for (int64_t p = c; p < i; ++p) s -= L[size_t(i * k + p)] * inv[size_t(p * k + c)];
      inv[size_t(i * k + c)] = s / L[size_t(i * k + i)];
    }
}

}  // namespace

void gemm_nt(int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda, const float* B, int64_t ldb,
             float* C, int64_t ldc, bool lower, int64_t diag_offset) {
  if (m <= 0 || n <= 0 || k <= 0) return;
  // kernels::linear wants contiguous operands: y[t][o] = sum_i x[t][i] W[o][i].
  std::vector<float> bpack;
  const float* Bp = B;
  if (ldb != k) {
    bpack.resize(size_t(n * k));
    for (int64_t j = 0; j < n; ++j) std::memcpy(&bpack[size_t(j * k)], B + j * ldb, sizeof(float) * size_t(k));
    Bp = bpack.data();
  }
  std::vector<float> apack, y;
  for (int64_t i0 = 0; i0 < m; i0 += kPanel) {
    const int64_t i1 = std::min(m, i0 + kPanel), rows = i1 - i0;
    const int64_t cols = lower ? std::min(n, i1 + diag_offset) : n;  // columns any row of the panel writes
    if (cols <= 0) continue;
    const float* Ap = A + i0 * lda;
    if (lda != k) {
      apack.resize(size_t(rows * k));
      for (int64_t i = 0; i < rows; ++i) std::memcpy(&apack[size_t(i * k)], A + (i0 + i) * lda, sizeof(float) * size_t(k));
      Ap = apack.data();
    }
    y.resize(size_t(rows * cols));
    kernels::linear(Ap, rows, kernels::DenseMatrix{kernels::WeightType::F32, cols, k, Bp}, nullptr, y.data());
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t jend = lower ? std::min(cols, i0 + i + diag_offset + 1) : cols;
      float* c = C + (i0 + i) * ldc;
      const float* yi = &y[size_t(i * cols)];
      for (int64_t j = 0; j < jend; ++j) c[j] += alpha * yi[j];
    }
  }
}

bool cholesky_lower(float* A, int64_t n) {
  std::vector<double> blk, inv;
  std::vector<float> panel, src;
  for (int64_t k0 = 0; k0 < n; k0 += kBlock) {
    const int64_t kb = std::min(kBlock, n - k0);
    // Diagonal block, unblocked, in double (its trailing updates from earlier blocks are already in A).
    blk.assign(size_t(kb * kb), 0.0);
    for (int64_t i = 0; i < kb; ++i)
      for (int64_t j = 0; j <= i; ++j) blk[size_t(i * kb + j)] = A[(k0 + i) * n + k0 + j];
    for (int64_t j = 0; j < kb; ++j) {
      double d = blk[size_t(j * kb + j)];
      for (int64_t p = 0; p < j; ++p) d -= blk[size_t(j * kb + p)] * blk[size_t(j * kb + p)];
      if (!(d > 0.0) || !std::isfinite(d)) return false;
      d = std::sqrt(d);
      blk[size_t(j * kb + j)] = d;
      for (int64_t i = j + 1; i < kb; ++i) {
        double s = blk[size_t(i * kb + j)];
        for (int64_t p = 0; p < j; ++p) s -= blk[size_t(i * kb + p)] * blk[size_t(j * kb + p)];
        blk[size_t(i * kb + j)] = s / d;
      }
    }
    for (int64_t i = 0; i < kb; ++i)
      for (int64_t j = 0; j <= i; ++j) A[(k0 + i) * n + k0 + j] = float(blk[size_t(i * kb + j)]);
    const int64_t r0 = k0 + kb, m = n - r0;
    if (m == 0) break;
    // A21 <- A21 L11^-T through the GEMM: L11^-1 in double, then one product.
    invert_lower_small(blk, kb, inv);
    std::vector<float> inv_f(inv.begin(), inv.end());  // B[j][p] = L11^-1[j][p]
    src.resize(size_t(m * kb));
    for (int64_t r = 0; r < m; ++r) std::memcpy(&src[size_t(r * kb)], A + (r0 + r) * n + k0, sizeof(float) * size_t(kb));
    panel.assign(size_t(m * kb), 0.0f);
    gemm_nt(m, kb, kb, 1.0f, src.data(), kb, inv_f.data(), kb, panel.data(), kb);
    for (int64_t r = 0; r < m; ++r) std::memcpy(A + (r0 + r) * n + k0, &panel[size_t(r * kb)], sizeof(float) * size_t(kb));
    // A22 -= A21 A21^T, lower triangle only.
    gemm_nt(m, m, kb, -1.0f, panel.data(), kb, panel.data(), kb, A + r0 * n + r0, n, /*lower=*/true, 0);
  }
  return true;
}

void invert_lower(float* A, int64_t n) {
  for (int64_t i = 0; i < n; ++i) std::fill(A + i * n + i + 1, A + (i + 1) * n, 0.0f);
  std::vector<double> blk, inv;
  std::vector<float> lt, t, ilt;
  for (int64_t j0 = ((n - 1) / kBlock) * kBlock; j0 >= 0; j0 -= kBlock) {
    const int64_t jb = std::min(kBlock, n - j0), r0 = j0 + jb, m = n - r0;
    // Inverse of the diagonal block, in double.
    blk.assign(size_t(jb * jb), 0.0);
    for (int64_t i = 0; i < jb; ++i)
      for (int64_t c = 0; c <= i; ++c) blk[size_t(i * jb + c)] = A[(j0 + i) * n + j0 + c];
    invert_lower_small(blk, jb, inv);
    if (m > 0) {
      // T = X22 L21 (X22 = the already inverted trailing block, lower triangular; L21 below the block).
      lt.resize(size_t(jb * m));
      for (int64_t k = 0; k < m; ++k)
        for (int64_t b = 0; b < jb; ++b) lt[size_t(b * m + k)] = A[(r0 + k) * n + j0 + b];
      t.assign(size_t(m * jb), 0.0f);
      for (int64_t a0 = 0; a0 < m; a0 += kPanel) {
        const int64_t a1 = std::min(m, a0 + kPanel);  // X22 rows a0..a1 are zero beyond column a1
        gemm_nt(a1 - a0, jb, a1, 1.0f, A + (r0 + a0) * n + r0, n, lt.data(), m, t.data() + a0 * jb, jb);
      }
      // X21 = -T L11^-1.
      ilt.resize(size_t(jb * jb));
      for (int64_t b = 0; b < jb; ++b)
        for (int64_t c = 0; c < jb; ++c) ilt[size_t(b * jb + c)] = float(inv[size_t(c * jb + b)]);
      for (int64_t r = 0; r < m; ++r) std::fill(A + (r0 + r) * n + j0, A + (r0 + r) * n + r0, 0.0f);
      gemm_nt(m, jb, jb, -1.0f, t.data(), jb, ilt.data(), jb, A + r0 * n + j0, n);
    }
    for (int64_t i = 0; i < jb; ++i)
      for (int64_t c = 0; c <= i; ++c) A[(j0 + i) * n + j0 + c] = float(inv[size_t(i * jb + c)]);
  }
}

bool inverse_cholesky_upper(float* H, int64_t n, const std::vector<float>& diag) {
  if (int64_t(diag.size()) != n) fail("inverse_cholesky_upper", "diagonal has the wrong length");
  // With J the reversal, J H J = L L^T gives H = V V^T with V = J L J upper, so H^-1 = U^T U with
  // U = V^-1 = J L^-1 J: one Cholesky and one triangular inverse (reversing a row-major matrix is
  // reversing its storage).
  std::reverse(H, H + n * n);
  if (!cholesky_lower(H, n)) {
    for (int64_t i = 0; i < n; ++i) {  // the strict upper triangle was never written
      for (int64_t j = 0; j < i; ++j) H[i * n + j] = H[j * n + i];
      H[i * n + i] = diag[size_t(n - 1 - i)];
    }
    std::reverse(H, H + n * n);
    return false;
  }
  invert_lower(H, n);
  std::reverse(H, H + n * n);
  return true;
}

void permute_symmetric(float* A, int64_t n, const std::vector<int64_t>& perm) {
  if (int64_t(perm.size()) != n) fail("permute_symmetric", "permutation has the wrong length");
  std::vector<float> tmp(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    float* row = A + r * n;
    for (int64_t j = 0; j < n; ++j) tmp[size_t(j)] = row[perm[size_t(j)]];
    std::memcpy(row, tmp.data(), sizeof(float) * size_t(n));
  }
  std::vector<char> done(static_cast<size_t>(n), 0);
  for (int64_t s = 0; s < n; ++s) {
    if (done[size_t(s)]) continue;
    std::memcpy(tmp.data(), A + s * n, sizeof(float) * size_t(n));
    int64_t i = s;
    while (perm[size_t(i)] != s) {
      std::memcpy(A + i * n, A + perm[size_t(i)] * n, sizeof(float) * size_t(n));
      done[size_t(i)] = 1;
      i = perm[size_t(i)];
    }
    std::memcpy(A + i * n, tmp.data(), sizeof(float) * size_t(n));
    done[size_t(i)] = 1;
  }
}

XtxAccumulator::XtxAccumulator(int64_t in) : in_(in), h_(size_t(in * in), 0.0f), panel_(size_t(in * kPanel)) {}

void XtxAccumulator::add(const float* x, int64_t n) {
  for (int64_t r0 = 0; r0 < n;) {
    const int64_t take = std::min(n - r0, kPanel - pending_);
    for (int64_t c = 0; c < in_; ++c) {
      float* dst = &panel_[size_t(c * kPanel + pending_)];
      for (int64_t r = 0; r < take; ++r) dst[r] = x[(r0 + r) * in_ + c];
    }
    pending_ += take;
    rows_ += take;
    r0 += take;
    if (pending_ == kPanel) flush();
  }
}

void XtxAccumulator::flush() {
  if (pending_ == 0) return;
  gemm_nt(in_, in_, pending_, 1.0f, panel_.data(), kPanel, panel_.data(), kPanel, h_.data(), in_, /*lower=*/true, 0);
  pending_ = 0;
}

std::vector<float> XtxAccumulator::hessian() {
  flush();
  const float f = rows_ > 0 ? 2.0f / float(rows_) : 0.0f;
  for (int64_t i = 0; i < in_; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      const float v = h_[size_t(i * in_ + j)] * f;
      h_[size_t(i * in_ + j)] = v;
      h_[size_t(j * in_ + i)] = v;
    }
  std::vector<float> out = std::move(h_);
  h_.clear();
  h_.shrink_to_fit();
  panel_.clear();
  panel_.shrink_to_fit();
  rows_ = 0;
  return out;
}

}  // namespace lq::quant::linalg
