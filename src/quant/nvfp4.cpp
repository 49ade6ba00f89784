#include "quant/nvfp4.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "io/error.h"
#include "num/formats.h"

namespace lq::quant {

namespace {

constexpr int64_t kBlock = 16;
constexpr float kE2m1Max = 6.0f, kE4m3Max = 448.0f;
constexpr uint8_t kE4m3MaxCode = 0x7e;  // 448; 0x7f is NaN

void check_args(int64_t out, int64_t in) {
  if (out <= 0 || in <= 0) fail("quantize_nvfp4", "empty weight shape");
  if (in % kBlock != 0)
    fail("quantize_nvfp4", "input width " + std::to_string(in) + " is not a multiple of the NVFP4 block (16)");
}

float tensor_amax(const float* w, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(w[i]));
  return m;
}

// E2M1 rounding as a value (sign kept, -0 for negative values that round to 0): the same number
// as e2m1_value(e2m1_encode(x)), written as selects so that a block vectorises.
[[gnu::always_inline]] inline float e2m1_round(float x) {
  const float a = std::fabs(x);
  float v = a > 0.25f ? 0.5f : 0.0f;
  v = a >= 0.75f ? 1.0f : v;
  v = a > 1.25f ? 1.5f : v;
  v = a >= 1.75f ? 2.0f : v;
  v = a > 2.5f ? 3.0f : v;
  v = a >= 3.5f ? 4.0f : v;
  v = a > 5.0f ? 6.0f : v;
  return std::copysign(v, x);
}

// Squared error of one block against the effective scale `s`. Eight fixed lanes and a fixed
// combination order: the sum is the same whatever the instruction set.
[[gnu::always_inline]] inline float block_error(const float* w, float s) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t k = 0; k < kBlock; k += 8)
    for (int j = 0; j < 8; ++j) {
      const float d = w[k + j] - e2m1_round(w[k + j] / s) * s;
      acc[j] += d * d;
    }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

[[gnu::always_inline]] inline float block_absmax(const float* w) {
  float m = 0.0f;
  for (int64_t k = 0; k < kBlock; ++k) m = std::max(m, std::fabs(w[k]));
  return m;
}

// Block scale byte (standard encoding): the nearest E4M3 code to block_max / (6 t) first, then
// alternating outwards; moving away needs a strictly smaller error.
[[gnu::always_inline]] inline uint8_t standard_scale(const float* w, float t, int radius) {
  const float bmax = block_absmax(w);
  if (bmax == 0.0f) return 0;
  const int c0 = num::f32_to_e4m3(bmax / (kE2m1Max * t)) & 0x7f;
  uint8_t best_code = 0;
  float best_err = INFINITY;
  for (int d = 0; d <= 2 * radius; ++d) {
    const int c = c0 + ((d & 1) ? -(d + 1) / 2 : d / 2);
    if (c < 1 || c > kE4m3MaxCode) continue;
    const float err = block_error(w, e4m3_value(uint8_t(c)) * t);
    if (err < best_err) {
      best_err = err;
      best_code = uint8_t(c);
    }
  }
  return best_code;
}

struct Job {
  const float* w;
  int64_t in;
  float t;
  bool legacy;
  int radius;
  QTensor* qt;  // quantize
  float* wq;    // fake quantize
};

[[gnu::always_inline]] inline Nvfp4Block block_params(const float* wb, float t, bool legacy, int radius) {
  Nvfp4Block b;
  if (legacy) {
    b.s_codes = block_absmax(wb) / kE2m1Max;  // unrounded, as the legacy toolkit did
    b.scale = num::f32_to_e4m3(b.s_codes);
  } else {
    b.scale = standard_scale(wb, t, radius);
    b.s_codes = e4m3_value(b.scale) * t;
  }
  b.s = e4m3_value(b.scale) * t;  // same expression as QTensor::dequantize_rows
  return b;
}

template <bool kFake>
[[gnu::always_inline]] inline void rows_impl(const Job& j, int64_t r0, int64_t r1) {
  for (int64_t b = r0 * j.in / kBlock; b < r1 * j.in / kBlock; ++b) {
    const float* wb = j.w + b * kBlock;
    const Nvfp4Block bp = block_params(wb, j.t, j.legacy, j.radius);
    const uint8_t sc = bp.scale;
    const float s_codes = bp.s_codes;  // the scale the codes are chosen against
    const float s = bp.s;
    for (int64_t k = 0; k < kBlock; ++k) {
      const float x = s_codes > 0.0f ? wb[k] / s_codes : 0.0f;
      if constexpr (kFake)
        j.wq[b * kBlock + k] = e2m1_round(x) * s;
      else
        j.qt->codes[size_t(b * kBlock + k)] = e2m1_encode(x);
    }
    if constexpr (!kFake) j.qt->block_scales[size_t(b)] = sc;
  }
}

// Same source for both instruction sets. No FMA on purpose: contracting w - v*s would change the
// error sums, and with them the chosen scales, between machines.
template <bool kFake>
void rows_generic(const Job& j, int64_t r0, int64_t r1) { rows_impl<kFake>(j, r0, r1); }
template <bool kFake>
__attribute__((target("avx2"))) void rows_avx2(const Job& j, int64_t r0, int64_t r1) { rows_impl<kFake>(j, r0, r1); }

template <bool kFake>
void run(const float* w, int64_t out, int64_t in, const QuantParams& p, QTensor* qt, float* wq) {
  check_args(out, in);
  const bool legacy = p.nvfp4 == Nvfp4Encoding::Legacy;
  const float t = legacy ? 1.0f : nvfp4_tensor_scale(tensor_amax(w, out * in), p);
  if (qt) {
    qt->scheme = Scheme::NvFp4;
    qt->out = out;
    qt->in = in;
    qt->group = kBlock;
    qt->tensor_scale = t;
    qt->codes.resize(size_t(out * in));
    qt->block_scales.resize(size_t(out * in / kBlock));
  }
  static const bool avx2 = __builtin_cpu_supports("avx2");
  const Job job{w, in, t, legacy, p.nvfp4_candidates, qt, wq};
  parallel_rows(out, in, [&](int64_t r0, int64_t r1) {
    if (avx2)
      rows_avx2<kFake>(job, r0, r1);
    else
      rows_generic<kFake>(job, r0, r1);
  });
}

}  // namespace

Nvfp4Block nvfp4_block_params(const float* w16, float t, const QuantParams& p) {
  return block_params(w16, t, p.nvfp4 == Nvfp4Encoding::Legacy, p.nvfp4_candidates);
}

uint8_t nvfp4_code(float w, const Nvfp4Block& b) { return e2m1_encode(b.s_codes > 0.0f ? w / b.s_codes : 0.0f); }

float nvfp4_value(uint8_t code, const Nvfp4Block& b) { return e2m1_value(code) * b.s; }

uint8_t e2m1_encode(float x) {
  const float a = std::fabs(x);
  // Decision points between {0, .5, 1, 1.5, 2, 3, 4, 6}; at a tie the even code wins, hence the
  // alternating > / >=.
  const uint8_t mag = uint8_t((a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) +
                              (a >= 3.5f) + (a > 5.0f));
  return uint8_t(mag | (std::signbit(x) ? 8 : 0));
}

float nvfp4_tensor_scale(float amax, const QuantParams& p) {
  if (!(amax > 0.0f) || !std::isfinite(amax)) return 1.0f;  // all-zero tensor: any scale works
  float t = amax / (kE2m1Max * kE4m3Max);
  if (p.nvfp4_pow2_tensor_scale) return std::exp2(std::ceil(std::log2(t)));
  // Nudging up keeps every block scale <= 448 and makes the stored reciprocal exact.
  while (1.0f / (1.0f / t) != t) t = std::nextafter(t, INFINITY);
  return t;
}

QTensor quantize_nvfp4(const float* w, int64_t out, int64_t in, const QuantParams& p) {
  QTensor qt;
  run<false>(w, out, in, p, &qt, nullptr);
  return qt;
}

void fake_quantize_nvfp4(const float* w, int64_t out, int64_t in, const QuantParams& p, float* wq) {
  run<true>(w, out, in, p, nullptr, wq);
}

}  // namespace lq::quant
