#include "export/ggml_search.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "num/formats.h"

namespace lq::exporter::search {

namespace {

constexpr float kTiny = 1e-15f;

int round_clamp(float v, int lo, int hi) {
  // std::nearbyint rounds half to even, like ggml's nearest_int; codes only differ on exact ties.
  const float r = std::nearbyint(v);
  if (!(r >= float(lo))) return lo;  // also catches NaN
  if (r > float(hi)) return hi;
  return int(r);
}

}  // namespace

float f16_round(float v) { return num::f16_to_f32(num::f32_to_f16(v)); }

double symmetric_error(const float* x, const float* w, int n, float s, int qmin, int qmax, int8_t* q) {
  double err = 0;
  const float inv = s != 0.0f ? 1.0f / s : 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = s != 0.0f ? round_clamp(x[i] * inv, qmin, qmax) : 0;
    if (q) q[i] = int8_t(l);
    const float d = x[i] - s * float(l);
    err += double(w[i]) * double(d) * double(d);
  }
  return err;
}

float fit_symmetric(const float* x, const float* w, int n, int qmin, int qmax, bool f16, int8_t* q) {
  float amax = 0, extreme = 0;
  double sxx = 0;
  for (int i = 0; i < n; ++i) {
    sxx += double(w[i]) * x[i] * x[i];
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      extreme = x[i];
    }
  }
  if (amax < kTiny) {
    std::fill(q, q + n, int8_t(0));
    return 0.0f;
  }
  // Pass 1: the extreme on the long side (-qmin steps) or the short side (qmax steps), each stretched by
  // -1..+1 steps in tenths; each candidate's codes are scored with their weighted least-squares scale
  // (residual sxx - sxq^2 / sqq, no second pass).
  double best_res = std::numeric_limits<double>::infinity();
  float best_inv = 0;
  for (int side = 0; side < 2; ++side) {
    const float steps = side == 0 ? float(-qmin) : float(qmax);
    const float sign = side == 0 ? -1.0f : 1.0f;
    for (int k = -10; k <= 10; ++k) {
      const float inv = (steps + 0.1f * float(k)) / (sign * extreme);
      double sxq = 0, sqq = 0;
      for (int i = 0; i < n; ++i) {
        const int l = round_clamp(x[i] * inv, qmin, qmax);
        sxq += double(w[i]) * x[i] * l;
        sqq += double(w[i]) * l * l;
      }
      if (sqq <= 0) continue;
      const double res = sxx - sxq * sxq / sqq;
      if (res < best_res) {
        best_res = res;
        best_inv = inv;
      }
    }
  }
  // Pass 2: Lloyd steps from the best candidate with the stored (f16) scale, exact errors.
  int8_t tmp[256];
  float s = 1.0f / best_inv;
  if (f16) s = f16_round(s);
  double err = symmetric_error(x, w, n, s, qmin, qmax, tmp);
  for (int iter = 0; iter < 4; ++iter) {
    double sxq = 0, sqq = 0;
    for (int i = 0; i < n; ++i) {
      sxq += double(w[i]) * x[i] * tmp[i];
      sqq += double(w[i]) * tmp[i] * tmp[i];
    }
    if (sqq <= 0) break;
    const float ls = f16 ? f16_round(float(sxq / sqq)) : float(sxq / sqq);
    if (ls == s) break;
    int8_t cand[256];
    const double e = symmetric_error(x, w, n, ls, qmin, qmax, cand);
    if (!(e < err)) break;
    err = e;
    s = ls;
    std::copy(cand, cand + n, tmp);
  }
  std::copy(tmp, tmp + n, q);
  return s;
}

double affine_error(const float* x, const float* w, int n, float s, float m, int qmax, uint8_t* q) {
  double err = 0;
  const float inv = s != 0.0f ? 1.0f / s : 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = s != 0.0f ? round_clamp((x[i] + m) * inv, 0, qmax) : 0;
    if (q) q[i] = uint8_t(l);
    const float d = x[i] - (s * float(l) - m);
    err += double(w[i]) * double(d) * double(d);
  }
  return err;
}

namespace {

// Weighted least squares of x ~= s * l + b for fixed codes; `b_nonpositive` clamps b to <= 0. Returns the
// residual sum_i w_i (x_i - s l_i - b)^2 (computed from the sums) and writes (s, b).
double affine_lsq(double sw, double sx, double sxx, double sl, double sll, double sxl, bool b_nonpositive, Affine* out) {
  const double det = sw * sll - sl * sl;
  double s = 0, b = 0;
  if (det > 0) {
    s = (sw * sxl - sx * sl) / det;
    b = (sll * sx - sl * sxl) / det;
  }
  if (det <= 0 || (b_nonpositive && b > 0)) {
    b = 0;
    s = sll > 0 ? sxl / sll : 0.0;
  }
  *out = {float(s), float(b)};
  // sum w (x - s l - b)^2 = sxx - 2 s sxl - 2 b sx + s^2 sll + 2 s b sl + b^2 sw
  return sxx - 2 * s * sxl - 2 * b * sx + s * s * sll + 2 * s * b * sl + b * b * sw;
}

}  // namespace

Affine fit_affine(const float* x, const float* w, int n, int qmax, bool b_nonpositive, bool f16, uint8_t* q) {
  float lo = x[0], hi = x[0];
  double sw = 0, sx = 0, sxx = 0;
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sw += w[i];
    sx += double(w[i]) * x[i];
    sxx += double(w[i]) * x[i] * x[i];
  }
  if (b_nonpositive) lo = std::min(lo, 0.0f);
  if (hi - lo < kTiny) {
    // A constant block: q = 0 and the offset carries the value.
    std::fill(q, q + n, uint8_t(0));
    Affine a{0.0f, lo};
    if (f16) a.b = f16_round(a.b);
    return a;
  }
  auto stored = [&](Affine a) {
    if (f16) {
      a.s = f16_round(a.s);
      a.b = f16_round(a.b);
    }
    if (b_nonpositive && a.b > 0) a.b = 0;
    return a;
  };
  // Pass 1: the range [lo, hi] mapped onto qmax - 1 .. qmax + 1 steps in tenths; each candidate's codes
  // scored with their least-squares (s, b).
  double best_res = std::numeric_limits<double>::infinity();
  Affine best{};
  for (int k = -10; k <= 10; ++k) {
    const float inv = (float(qmax) + 0.1f * float(k)) / (hi - lo);
    double sl = 0, sll = 0, sxl = 0;
    for (int i = 0; i < n; ++i) {
      const double l = round_clamp((x[i] - lo) * inv, 0, qmax);
      sl += w[i] * l;
      sll += w[i] * l * l;
      sxl += double(w[i]) * l * x[i];
    }
    Affine a;
    const double res = affine_lsq(sw, sx, sxx, sl, sll, sxl, b_nonpositive, &a);
    if (a.s > 0 && res < best_res) {
      best_res = res;
      best = a;
    }
  }
  if (!(best.s > 0)) best = {(hi - lo) / float(qmax), lo};
  // Pass 2: Lloyd steps with the stored values, exact errors.
  uint8_t tmp[256];
  Affine cur = stored(best);
  double err = affine_error(x, w, n, cur.s, -cur.b, qmax, tmp);
  for (int iter = 0; iter < 4; ++iter) {
    double sl = 0, sll = 0, sxl = 0;
    for (int i = 0; i < n; ++i) {
      const double l = tmp[i];
      sl += w[i] * l;
      sll += w[i] * l * l;
      sxl += double(w[i]) * l * x[i];
    }
    Affine next;
    affine_lsq(sw, sx, sxx, sl, sll, sxl, b_nonpositive, &next);
    if (!(next.s > 0)) break;
    next = stored(next);
    if (next.s == cur.s && next.b == cur.b) break;
    uint8_t cand[256];
    const double e = affine_error(x, w, n, next.s, -next.b, qmax, cand);
    if (!(e < err)) break;
    err = e;
    cur = next;
    std::copy(cand, cand + n, tmp);
  }
  std::copy(tmp, tmp + n, q);
  return cur;
}

namespace {

// Nearest grid index by bisection (ties go to the larger value).
int nearest_by_bisection(const int8_t* grid, float v) {
  if (!(v > float(grid[0]))) return 0;
  if (v >= float(grid[15])) return 15;
  int lo = 0, hi = 15;  // grid[lo] < v <= grid[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (v > float(grid[mid])) lo = mid;
    else hi = mid;
  }
  return v - float(grid[lo]) < float(grid[hi]) - v ? lo : hi;
}

// For an integer grid every decision boundary (a midpoint) is a multiple of 0.5, so a table over cells
// [c/2, c/2 + 1/2) of [-128, 128) answers exactly what bisection answers: a boundary starts its cell,
// and values at or above it go to the larger neighbour.
struct GridTable {
  const int8_t* grid = nullptr;
  uint8_t cell[512] = {};
};

const GridTable& table_for(const int8_t* grid) {
  static thread_local GridTable t;
  if (t.grid != grid) {
    for (int c = 0; c < 512; ++c) t.cell[c] = uint8_t(nearest_by_bisection(grid, float(c) * 0.5f - 128.0f));
    t.grid = grid;
  }
  return t;
}

}  // namespace

int nearest_grid_index(const int8_t* grid, float v) {
  if (!(v >= -128.0f)) return v < 0 ? 0 : nearest_by_bisection(grid, v);  // NaN goes through bisection
  if (v >= 127.5f) return 15;
  return table_for(grid).cell[int((v + 128.0f) * 2.0f)];
}

double grid_error(const float* x, const float* w, int n, float s, const int8_t* grid, uint8_t* q) {
  double err = 0;
  const float inv = s != 0.0f ? 1.0f / s : 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_grid_index(grid, x[i] * inv);
    if (q) q[i] = uint8_t(l);
    const float d = x[i] - s * float(grid[l]);
    err += double(w[i]) * double(d) * double(d);
  }
  return err;
}

float fit_grid(const float* x, const float* w, int n, const int8_t* grid, bool f16, uint8_t* q) {
  float amax = 0, extreme = 0;
  double sxx = 0;
  for (int i = 0; i < n; ++i) {
    sxx += double(w[i]) * x[i] * x[i];
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      extreme = x[i];
    }
  }
  if (amax < kTiny) {
    std::fill(q, q + n, uint8_t(nearest_grid_index(grid, 0.0f)));
    return 0.0f;
  }
  // Pass 1: the extreme on either end of the grid, stretched by -10..+10 grid units, scored with the
  // least-squares scale of its codes.
  double best_res = std::numeric_limits<double>::infinity();
  float best_inv = 0;
  for (int side = 0; side < 2; ++side) {
    const float end = side == 0 ? float(grid[0]) : float(grid[15]);
    for (int k = -10; k <= 10; ++k) {
      const float inv = (end + (end < 0 ? -1.0f : 1.0f) * float(k)) / extreme;
      double sxg = 0, sgg = 0;
      for (int i = 0; i < n; ++i) {
        const double g = grid[nearest_grid_index(grid, x[i] * inv)];
        sxg += double(w[i]) * x[i] * g;
        sgg += double(w[i]) * g * g;
      }
      if (sgg <= 0) continue;
      const double res = sxx - sxg * sxg / sgg;
      if (res < best_res) {
        best_res = res;
        best_inv = inv;
      }
    }
  }
  uint8_t tmp[256];
  float s = 1.0f / best_inv;
  if (f16) s = f16_round(s);
  double err = grid_error(x, w, n, s, grid, tmp);
  for (int iter = 0; iter < 4; ++iter) {
    double sxg = 0, sgg = 0;
    for (int i = 0; i < n; ++i) {
      const double g = grid[tmp[i]];
      sxg += double(w[i]) * x[i] * g;
      sgg += double(w[i]) * g * g;
    }
    if (sgg <= 0) break;
    const float ls = f16 ? f16_round(float(sxg / sgg)) : float(sxg / sgg);
    if (ls == s) break;
    uint8_t cand[256];
    const double e = grid_error(x, w, n, ls, grid, cand);
    if (!(e < err)) break;
    err = e;
    s = ls;
    std::copy(cand, cand + n, tmp);
  }
  std::copy(tmp, tmp + n, q);
  return s;
}

}  // namespace lq::exporter::search
