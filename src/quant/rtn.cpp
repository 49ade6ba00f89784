#include "quant/rtn.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "io/error.h"
#include "quant/quantizer.h"

namespace lq::quant {

namespace {

constexpr float kRangeEps = 1e-5f;  // AutoAWQ / llm-awq clamp the range with the same epsilon

struct Grid {
  bool asym;
  float qmax;       // largest code
  float half;       // symmetric: largest positive level (7 / 127)
  float zero_sym;   // symmetric zero point (8 / 128)
};

Grid grid_of(Scheme s) {
  switch (s) {
    case Scheme::Int4Asym: return {true, 15.f, 0.f, 0.f};
    case Scheme::Int4Sym: return {false, 15.f, 7.f, 8.f};
    case Scheme::Int8Sym: return {false, 255.f, 127.f, 128.f};
    default: fail("quantize_rtn", std::string("scheme ") + scheme_name(s) + " is not an integer scheme");
  }
}

void check_args(int64_t out, int64_t in, const RtnParams& p) {
  if (out <= 0 || in <= 0) fail("quantize_rtn", "empty weight shape");
  if (p.group <= 0 || in % p.group != 0)
    fail("quantize_rtn", "input width " + std::to_string(in) + " is not a multiple of group " + std::to_string(p.group));
  grid_of(p.scheme);
}

// Clipped value range and stored scale / zero of one group. Scalar: one call per group.
using GroupParams = RtnGroupParams;

[[gnu::always_inline]] inline void min_max(const float* w, int64_t n, float* mn_out, float* mx_out) {
  // Eight independent lanes so the compiler can vectorise the reduction without -ffast-math.
  float mn[8], mx[8];
  for (int j = 0; j < 8; ++j) mn[j] = mx[j] = w[0];
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int j = 0; j < 8; ++j) {
      mn[j] = std::min(mn[j], w[k + j]);
      mx[j] = std::max(mx[j], w[k + j]);
    }
  for (; k < n; ++k) {
    mn[0] = std::min(mn[0], w[k]);
    mx[0] = std::max(mx[0], w[k]);
  }
  for (int j = 1; j < 8; ++j) {
    mn[0] = std::min(mn[0], mn[j]);
    mx[0] = std::max(mx[0], mx[j]);
  }
  *mn_out = mn[0];
  *mx_out = mx[0];
}

GroupParams group_params(float mn, float mx, const Grid& g, ScaleDType dt, float clip) {
  const float amax = std::max(std::fabs(mn), std::fabs(mx));
  GroupParams gp;
  float scale;
  if (g.asym) {
    gp.lo = mn;
    gp.hi = mx;
    if (clip != 1.0f) {
      gp.lo = std::max(mn, -clip * amax);
      gp.hi = std::min(mx, clip * amax);
    }
    scale = round_to_scale_dtype(std::max(gp.hi - gp.lo, kRangeEps) / g.qmax, dt);
  } else {
    const float a = clip * amax;
    gp.lo = -a;
    gp.hi = a;
    scale = round_to_scale_dtype(std::max(a, kRangeEps) / g.half, dt);
  }
  if (!std::isfinite(scale) || scale <= 0.0f)
    fail("quantize_rtn", "group scale " + std::to_string(scale) + " does not fit the " +
                             scale_dtype_name(dt) + " scale dtype (range " + std::to_string(mn) + ".." +
                             std::to_string(mx) + ")");
  gp.scale = scale;
  gp.zero = g.asym ? std::clamp(std::nearbyint(-gp.lo / scale), 0.0f, g.qmax) : g.zero_sym;
  return gp;
}

// The element loop shared by every path. kFake: write (q - zero) * scale instead of the code.
[[gnu::always_inline]] inline float code_of(float w, const GroupParams& gp, float qmax) {
  const float x = std::min(std::max(w, gp.lo), gp.hi);
  return std::min(std::max(std::nearbyint(x / gp.scale) + gp.zero, 0.0f), qmax);
}

template <bool kFake>
[[gnu::always_inline]] inline void group_codes(const float* w, int64_t n, const GroupParams& gp, float qmax,
                                               uint8_t* codes, float* wq) {
  for (int64_t k = 0; k < n; ++k) {
    const float q = code_of(w[k], gp, qmax);
    if constexpr (kFake)
      wq[k] = (q - gp.zero) * gp.scale;
    else
      codes[k] = uint8_t(q);
  }
}

struct RowJob {
  const float* w;
  int64_t in;
  const RtnParams* p;
  const float* clip;  // [out][in/group] or null
  QTensor* qt;        // quantize: codes/scales/zeros destination
  float* wq;          // fake quantize destination
};

template <bool kFake>
[[gnu::always_inline]] inline void rows_impl(const RowJob& j, int64_t r0, int64_t r1) {
  const Grid g = grid_of(j.p->scheme);
  const int64_t G = j.p->group, gpr = j.in / G;
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t gi = 0; gi < gpr; ++gi) {
      const int64_t off = r * j.in + gi * G;
      float mn, mx;
      min_max(j.w + off, G, &mn, &mx);
      const float clip = j.clip ? j.clip[r * gpr + gi] : 1.0f;
      const GroupParams gp = group_params(mn, mx, g, j.p->scale_dtype, clip);
      if constexpr (kFake) {
        group_codes<true>(j.w + off, G, gp, g.qmax, nullptr, j.wq + off);
      } else {
        group_codes<false>(j.w + off, G, gp, g.qmax, j.qt->codes.data() + off, nullptr);
        j.qt->scales[size_t(r * gpr + gi)] = gp.scale;
        j.qt->zeros[size_t(r * gpr + gi)] = uint8_t(gp.zero);
      }
    }
}

// Same source, two instruction sets: the AVX2 clone vectorises the loops (vroundps, vdivps, vminps);
// every operation is exactly rounded IEEE and there is no FMA to contract into, so both give
// identical bits (tested against the scalar reference).
template <bool kFake>
void rows_generic(const RowJob& j, int64_t r0, int64_t r1) { rows_impl<kFake>(j, r0, r1); }
template <bool kFake>
__attribute__((target("avx2"))) void rows_avx2(const RowJob& j, int64_t r0, int64_t r1) {
  rows_impl<kFake>(j, r0, r1);
}

template <bool kFake>
void run_rows(const RowJob& j, int64_t out) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  parallel_rows(out, j.in, [&](int64_t r0, int64_t r1) {
    if (avx2)
      rows_avx2<kFake>(j, r0, r1);
    else
      rows_generic<kFake>(j, r0, r1);
  });
}

}  // namespace

RtnGroupParams rtn_group_params(const float* w, int64_t n, const RtnParams& p, float clip) {
  if (n <= 0) fail("rtn_group_params", "empty group");
  const Grid g = grid_of(p.scheme);
  float mn, mx;
  min_max(w, n, &mn, &mx);
  return group_params(mn, mx, g, p.scale_dtype, clip);
}

uint8_t rtn_code(float w, const RtnGroupParams& gp, Scheme s) { return uint8_t(code_of(w, gp, grid_of(s).qmax)); }

RtnGroup rtn_group_reference(const float* w, int64_t n, const RtnParams& p, float clip_ratio, uint8_t* codes) {
  // Written straight from the formulas in rtn.h, element by element.
  const Grid g = grid_of(p.scheme);
  float mn = w[0], mx = w[0];
  for (int64_t k = 1; k < n; ++k) {
    mn = std::min(mn, w[k]);
    mx = std::max(mx, w[k]);
  }
  const float amax = std::max(std::fabs(mn), std::fabs(mx));
  float lo, hi, scale, zero;
  if (g.asym) {
    lo = clip_ratio == 1.0f ? mn : std::max(mn, -clip_ratio * amax);
    hi = clip_ratio == 1.0f ? mx : std::min(mx, clip_ratio * amax);
    scale = round_to_scale_dtype(std::max(hi - lo, kRangeEps) / 15.0f, p.scale_dtype);
    zero = std::clamp(std::nearbyint(-lo / scale), 0.0f, 15.0f);
  } else {
    hi = clip_ratio * amax;
    lo = -hi;
    scale = round_to_scale_dtype(std::max(hi, kRangeEps) / g.half, p.scale_dtype);
    zero = g.zero_sym;
  }
  for (int64_t k = 0; k < n; ++k) {
    const float x = std::clamp(w[k], lo, hi);
    codes[k] = uint8_t(std::clamp(std::nearbyint(x / scale) + zero, 0.0f, g.qmax));
  }
  return {scale, int(zero)};
}

QTensor quantize_rtn(const float* w, int64_t out, int64_t in, const RtnParams& p, const float* clip_ratios) {
  check_args(out, in, p);
  QTensor qt = QTensor::integer(p.scheme, out, in, p.group, p.scale_dtype);
  run_rows<false>(RowJob{w, in, &p, clip_ratios, &qt, nullptr}, out);
  return qt;
}

void fake_quantize_rtn(const float* w, int64_t out, int64_t in, const RtnParams& p, float* wq,
                       const float* clip_ratios) {
  check_args(out, in, p);
  run_rows<true>(RowJob{w, in, &p, clip_ratios, nullptr, wq}, out);
}

}  // namespace lq::quant
