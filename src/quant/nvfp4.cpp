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

// Squared error of one block against the effective scale `s`, with its codes.
float block_error(const float* w, float s, uint8_t* codes) {
  float err = 0.0f;
  for (int64_t k = 0; k < kBlock; ++k) {
    const uint8_t c = e2m1_encode(w[k] / s);
    const float d = w[k] - e2m1_value(c) * s;
    err += d * d;
    codes[k] = c;
  }
  return err;
}

// Chooses block scale byte and codes for one block (standard encoding).
uint8_t standard_block(const float* w, float t, int radius, uint8_t* codes) {
  float bmax = 0.0f;
  for (int64_t k = 0; k < kBlock; ++k) bmax = std::max(bmax, std::fabs(w[k]));
  if (bmax == 0.0f) {
    std::fill(codes, codes + kBlock, uint8_t(0));
    return 0;
  }
  const int c0 = num::f32_to_e4m3(bmax / (kE2m1Max * t)) & 0x7f;
  uint8_t best_code = 0;
  float best_err = INFINITY;
  uint8_t trial[kBlock];
  // Nearest first, then alternating outwards: a strictly smaller error is needed to move away.
  for (int d = 0; d <= 2 * radius; ++d) {
    const int c = c0 + ((d & 1) ? -(d + 1) / 2 : d / 2);
    if (c < 1 || c > kE4m3MaxCode) continue;
    const float s = e4m3_value(uint8_t(c)) * t;
    const float err = block_error(w, s, trial);
    if (err < best_err) {
      best_err = err;
      best_code = uint8_t(c);
      std::copy(trial, trial + kBlock, codes);
    }
  }
  return best_code;
}

uint8_t legacy_block(const float* w, uint8_t* codes) {
  float bmax = 0.0f;
  for (int64_t k = 0; k < kBlock; ++k) bmax = std::max(bmax, std::fabs(w[k]));
  const float s = bmax / kE2m1Max;  // unrounded: the legacy toolkit chose codes against this
  for (int64_t k = 0; k < kBlock; ++k) codes[k] = s > 0.0f ? e2m1_encode(w[k] / s) : uint8_t(0);
  return num::f32_to_e4m3(s);
}

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
  parallel_rows(out, in, [&](int64_t r0, int64_t r1) {
    uint8_t codes[kBlock];
    for (int64_t b = r0 * in / kBlock; b < r1 * in / kBlock; ++b) {
      const float* wb = w + b * kBlock;
      const uint8_t sc = legacy ? legacy_block(wb, codes) : standard_block(wb, t, p.nvfp4_candidates, codes);
      if constexpr (kFake) {
        const float s = e4m3_value(sc) * t;  // same expression as QTensor::dequantize_rows
        for (int64_t k = 0; k < kBlock; ++k) wq[b * kBlock + k] = e2m1_value(codes[k]) * s;
      } else {
        qt->block_scales[size_t(b)] = sc;
        std::copy(codes, codes + kBlock, qt->codes.data() + b * kBlock);
      }
    }
  });
}

}  // namespace

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
