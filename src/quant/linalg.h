// Dense f32 linear algebra for GPTQ: a strided GEMM, Cholesky, triangular inverse and the upper
// Cholesky factor of an inverse, for matrices up to Lance's 11008 x 11008 (0.48 GB in f32).
// Everything works in place on one n x n row-major buffer (no second matrix-sized copy), and the
// O(n^3) work runs in 128-wide blocks through kernels::linear (the packed, threaded GEMM), so a
// factorization of n = 11008 costs seconds, not minutes. Results do not depend on the thread count.
// Accuracy: f32 with double-precision diagonal blocks (what GPTQ implementations run in fp32).
#pragma once
#include <cstdint>
#include <vector>

namespace lq::quant::linalg {

// C[i][j] += alpha * sum_k A[i][k] * B[j][k] for i < m, j < n (row-major, leading dimensions lda,
// ldb, ldc). `lower`: only entries with j <= i + diag_offset are written (the rest of C is untouched).
void gemm_nt(int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda, const float* B, int64_t ldb,
             float* C, int64_t ldc, bool lower = false, int64_t diag_offset = 0);

// A = L L^T, L written into the lower triangle of A [n][n] (diagonal included); the strict upper
// triangle is neither read nor written. Returns false (A's lower triangle then partly overwritten)
// when A is not numerically positive definite.
bool cholesky_lower(float* A, int64_t n);

// Replaces the lower-triangular L in A's lower triangle by L^-1 and zeroes the strict upper triangle.
void invert_lower(float* A, int64_t n);

// H [n][n] symmetric positive definite (both triangles) -> U, upper triangular with U^T U = H^-1
// (the upper Cholesky factor of H^-1, GPTQ's "Hinv"), strict lower triangle zero. On failure (H not
// positive definite) returns false and restores H from its strict upper triangle and `diag`
// (H's diagonal before the call), so the caller can add damping and retry without a copy.
bool inverse_cholesky_upper(float* H, int64_t n, const std::vector<float>& diag);

// Symmetric permutation in place: A'[i][j] = A[perm[i]][perm[j]] (perm a permutation of 0..n-1).
void permute_symmetric(float* A, int64_t n, const std::vector<int64_t>& perm);

// Accumulates X^T X over rows x [n][in], in f32, lower triangle only until finish():
//   add(x, n) any number of times, then hessian() = 2 X^T X / N (both triangles), N = rows added.
// Memory: in x in floats plus a panel of at most 256 rows.
class XtxAccumulator {
 public:
  explicit XtxAccumulator(int64_t in);
  void add(const float* x, int64_t n);
  int64_t rows() const { return rows_; }
  int64_t in() const { return in_; }
  // 2 X^T X / rows() with both triangles filled; leaves the accumulator empty. Zero when no rows.
  std::vector<float> hessian();

 private:
  void flush();
  int64_t in_, rows_ = 0, pending_ = 0;
  std::vector<float> h_;        // lower triangle of sum x x^T
  std::vector<float> panel_;    // pending rows, transposed [in][kPanel]
};

}  // namespace lq::quant::linalg
