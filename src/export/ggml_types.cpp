#include "export/ggml_types.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "export/ggml_search.h"
#include "io/error.h"
#include "num/formats.h"

namespace lq::exporter {

const int8_t kIq4nlGrid[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

namespace {

using search::f16_round;

std::atomic<ImportanceWeighting> g_weighting{ImportanceWeighting::LlamaCpp};

void put_f16(uint8_t* p, float v) {
  const uint16_t h = num::f32_to_f16(v);
  std::memcpy(p, &h, 2);
}
float get_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return num::f16_to_f32(h);
}

// ---- per-element weights ---------------------------------------------------------------------
// llama.cpp's forms (ggml-quants.c): with importance, imp[i] * sqrt(sigma2 + x[i]^2) with sigma2 the mean
// square of the row (Q4_0 / Q4_1) or twice that of the block (K types, IQ4); Q6_K uses imp alone.
// Without importance: |x| + sqrt(sigma2) (Q4_K / Q5_K), x^2 (Q6_K, IQ4), 1 (Q4_0 / Q4_1).
enum class WeightForm { Magnitude, ImportanceOnly };

double mean_square(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
  return n > 0 ? s / double(n) : 0.0;
}

// Fills w[0..n) for the elements x[0..n) with importance imp (or nullptr). `sigma2` as described above.
void fill_weights(const float* x, const float* imp, int n, float sigma2, WeightForm form, float* w,
                  float no_imp_kind /* 0: 1, 1: |x| + sqrt(sigma2), 2: x^2 */) {
  if (imp) {
    // A column no calibration row ever reached has importance 0; a tiny floor keeps the least-squares
    // steps well posed without letting such columns matter.
    double mean_imp = 0;
    for (int i = 0; i < n; ++i) mean_imp += imp[i];
    const float floor_imp = float(1e-6 * (mean_imp / n)) + 1e-30f;
    const bool plain = g_weighting.load() == ImportanceWeighting::Plain || form == WeightForm::ImportanceOnly;
    for (int i = 0; i < n; ++i) {
      const float q = std::max(imp[i], floor_imp);
      w[i] = plain ? q : q * std::sqrt(sigma2 + x[i] * x[i]);
    }
    return;
  }
  const float av = std::sqrt(sigma2);
  for (int i = 0; i < n; ++i)
    w[i] = no_imp_kind == 0 ? 1.0f : no_imp_kind == 1 ? av + std::fabs(x[i]) : std::max(x[i] * x[i], 1e-30f);
}

// ---- F32 / F16 ----
void encode_f32(const float* x, int64_t n, uint8_t* dst, const float*) { std::memcpy(dst, x, size_t(n) * 4); }
void decode_f32(const uint8_t* src, int64_t n, float* y) { std::memcpy(y, src, size_t(n) * 4); }
void encode_f16(const float* x, int64_t n, uint8_t* dst, const float*) {
  for (int64_t i = 0; i < n; ++i) put_f16(dst + 2 * i, x[i]);
}
void decode_f16(const uint8_t* src, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = get_f16(src + 2 * i);
}

// ---- Q8_0: d = absmax / 127, q = round(x / d) (as llama.cpp, which ignores importance for Q8_0) ----
constexpr int64_t kQ8Block = 32;
constexpr size_t kQ8Bytes = 2 + 32;
void encode_q8_0(const float* x, int64_t n, uint8_t* dst, const float*) {
  for (int64_t b = 0; b < n / kQ8Block; ++b, x += kQ8Block, dst += kQ8Bytes) {
    float amax = 0.0f;
    for (int i = 0; i < kQ8Block; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(dst, d);
    for (int i = 0; i < kQ8Block; ++i) dst[2 + i] = uint8_t(int8_t(std::lround(x[i] * id)));
  }
}
void decode_q8_0(const uint8_t* src, int64_t n, float* y) {
  for (int64_t b = 0; b < n / kQ8Block; ++b, src += kQ8Bytes, y += kQ8Block) {
    const float d = get_f16(src);
    for (int i = 0; i < kQ8Block; ++i) y[i] = d * float(int8_t(src[2 + i]));
  }
}

// 32 4-bit codes: q[i] in the low nibble of qs[i], q[i + 16] in the high nibble.
void pack_nibbles32(const uint8_t* q, uint8_t* qs) {
  for (int i = 0; i < 16; ++i) qs[i] = uint8_t((q[i] & 15) | (q[i + 16] << 4));
}

// ---- Q4_0: symmetric 16 levels, d * (q - 8) ----
constexpr int64_t kQ4Block = 32;
constexpr size_t kQ4_0Bytes = 2 + 16;
void encode_q4_0_ms(const float* x, int64_t n, uint8_t* dst, const float* imp, float sigma2) {
  float w[32];
  int8_t l[32];
  uint8_t q[32];
  for (int64_t b = 0; b < n / kQ4Block; ++b, x += kQ4Block, dst += kQ4_0Bytes) {
    fill_weights(x, imp ? imp + b * kQ4Block : nullptr, 32, sigma2, WeightForm::Magnitude, w, 0);
    const float d = search::fit_symmetric(x, w, 32, -8, 7, true, l);
    put_f16(dst, d);
    for (int i = 0; i < 32; ++i) q[i] = uint8_t(l[i] + 8);
    pack_nibbles32(q, dst + 2);
  }
}
void encode_q4_0(const float* x, int64_t n, uint8_t* dst, const float* imp) {
  encode_q4_0_ms(x, n, dst, imp, float(mean_square(x, n)));
}
void decode_q4_0(const uint8_t* src, int64_t n, float* y) {
  for (int64_t b = 0; b < n / kQ4Block; ++b, src += kQ4_0Bytes, y += kQ4Block) {
    const float d = get_f16(src);
    for (int i = 0; i < 16; ++i) {
      y[i] = d * float(int(src[2 + i] & 0x0F) - 8);
      y[i + 16] = d * float(int(src[2 + i] >> 4) - 8);
    }
  }
}

// ---- Q4_1: affine 16 levels, d * q + m ----
constexpr size_t kQ4_1Bytes = 2 + 2 + 16;
void encode_q4_1_ms(const float* x, int64_t n, uint8_t* dst, const float* imp, float sigma2) {
  float w[32];
  uint8_t q[32];
  for (int64_t b = 0; b < n / kQ4Block; ++b, x += kQ4Block, dst += kQ4_1Bytes) {
    fill_weights(x, imp ? imp + b * kQ4Block : nullptr, 32, sigma2, WeightForm::Magnitude, w, 0);
    const search::Affine a = search::fit_affine(x, w, 32, 15, false, true, q);
    put_f16(dst, a.s);
    put_f16(dst + 2, a.b);
    pack_nibbles32(q, dst + 4);
  }
}
void encode_q4_1(const float* x, int64_t n, uint8_t* dst, const float* imp) {
  encode_q4_1_ms(x, n, dst, imp, float(mean_square(x, n)));
}
void decode_q4_1(const uint8_t* src, int64_t n, float* y) {
  for (int64_t b = 0; b < n / kQ4Block; ++b, src += kQ4_1Bytes, y += kQ4Block) {
    const float d = get_f16(src), m = get_f16(src + 2);
    for (int i = 0; i < 16; ++i) {
      y[i] = d * float(src[4 + i] & 0x0F) + m;
      y[i + 16] = d * float(src[4 + i] >> 4) + m;
    }
  }
}

// ---- IQ4_NL: d * grid[q], blocks of 32 ----
constexpr size_t kIq4NlBytes = 2 + 16;
void encode_iq4_nl(const float* x, int64_t n, uint8_t* dst, const float* imp) {
  float w[32];
  uint8_t q[32];
  for (int64_t b = 0; b < n / kQ4Block; ++b, x += kQ4Block, dst += kIq4NlBytes) {
    const float sigma2 = float(2.0 * mean_square(x, 32));
    fill_weights(x, imp ? imp + b * kQ4Block : nullptr, 32, sigma2, WeightForm::Magnitude, w, 2);
    const float d = search::fit_grid(x, w, 32, kIq4nlGrid, true, q);
    put_f16(dst, d);
    pack_nibbles32(q, dst + 2);
  }
}
void decode_iq4_nl(const uint8_t* src, int64_t n, float* y) {
  for (int64_t b = 0; b < n / kQ4Block; ++b, src += kIq4NlBytes, y += kQ4Block) {
    const float d = get_f16(src);
    for (int i = 0; i < 16; ++i) {
      y[i] = d * float(kIq4nlGrid[src[2 + i] & 0x0F]);
      y[i + 16] = d * float(kIq4nlGrid[src[2 + i] >> 4]);
    }
  }
}

// ---- super-block searches ----------------------------------------------------------------------
constexpr int64_t kSuper = 256;

// Candidate super scales: `top` / c for the divisors below (c < codes keeps every sub-scale representable
// with room to spare; c > codes clips the largest sub-block's scale a little, which can pay).
constexpr float kSuperDivisors[] = {0.875f, 0.92f, 0.95f, 0.97f, 0.985f, 1.0f, 1.015f, 1.03f, 1.06f, 1.1f};

// Q4_K / Q5_K: 8 sub-blocks of 32, x ~= d*sc[j]*q - dmin*m[j] with 6-bit sc, m. Given (d, dmin) the
// sub-blocks are independent: each takes the best (sc, m) within +-1 of its continuous optimum.
struct KFit {
  float d = 0, dmin = 0;
  uint8_t sc[8] = {}, m[8] = {};
};
double kquant_choose_codes(const float* x, const float* w, const float* s, const float* mn, int qmax, float d,
                           float dmin, uint8_t* sc, uint8_t* m) {
  double total = 0;
  for (int j = 0; j < 8; ++j) {
    const int c0 = d > 0 ? int(std::lround(s[j] / d)) : 0;
    const int m0 = dmin > 0 ? int(std::lround(mn[j] / dmin)) : 0;
    double best = std::numeric_limits<double>::infinity();
    for (int a = std::max(0, c0 - 1); a <= std::min(63, c0 + 1); ++a)
      for (int b = std::max(0, m0 - 1); b <= std::min(63, m0 + 1); ++b) {
        if (dmin <= 0 && b != 0) continue;
        if (d <= 0 && a != 0) continue;
        const double e = search::affine_error(x + 32 * j, w + 32 * j, 32, d * float(a), dmin * float(b), qmax, nullptr);
        if (e < best) {
          best = e;
          sc[j] = uint8_t(a);
          m[j] = uint8_t(b);
        }
      }
    total += best;
  }
  return total;
}

KFit fit_kquant_super(const float* x, const float* w, int qmax) {
  float s[8], mn[8];
  uint8_t tmp[32];
  float max_s = 0, max_m = 0;
  for (int j = 0; j < 8; ++j) {
    const search::Affine a = search::fit_affine(x + 32 * j, w + 32 * j, 32, qmax, true, false, tmp);
    s[j] = a.s;
    mn[j] = -a.b;
    max_s = std::max(max_s, s[j]);
    max_m = std::max(max_m, mn[j]);
  }
  KFit best;
  double best_err = std::numeric_limits<double>::infinity();
  uint8_t sc[8], m[8];
  auto consider = [&](float d, float dmin) {
    const double e = kquant_choose_codes(x, w, s, mn, qmax, d, dmin, sc, m);
    if (e < best_err) {
      best_err = e;
      best.d = d;
      best.dmin = dmin;
      std::copy(sc, sc + 8, best.sc);
      std::copy(m, m + 8, best.m);
    }
  };
  // Coordinate search: d with dmin at its plain value, then dmin with the best d.
  const float dmin0 = f16_round(max_m / 63.0f);
  for (float f : kSuperDivisors) consider(f16_round(max_s / (63.0f * f)), dmin0);
  if (max_m > 0) {
    const float d_best = best.d;
    for (float f : kSuperDivisors) consider(d_best, f16_round(max_m / (63.0f * f)));
  }
  return best;
}

constexpr size_t kQ4KBytes = 2 + 2 + 12 + 128;
constexpr size_t kQ5KBytes = 2 + 2 + 12 + 32 + 128;

// The code fields of one block (scales untouched); codes are indices into the type's code grid.
void set_codes_q4_k(uint8_t* dst, const uint8_t* q) {
  uint8_t* qs = dst + 16;
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) qs[32 * c + l] = uint8_t(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
}
void set_codes_q5_k(uint8_t* dst, const uint8_t* q) {
  uint8_t* qh = dst + 16;
  uint8_t* qs = dst + 48;
  std::memset(qh, 0, 32);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      const uint8_t lo = q[64 * c + l], hi = q[64 * c + 32 + l];
      qs[32 * c + l] = uint8_t((lo & 15) | ((hi & 15) << 4));
      qh[l] = uint8_t(qh[l] | ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
    }
}

void encode_kquant(const float* x, int64_t n, uint8_t* dst, const float* imp, int qmax) {
  const size_t bytes = qmax == 15 ? kQ4KBytes : kQ5KBytes;
  float w[kSuper];
  uint8_t q[kSuper];
  for (int64_t b = 0; b < n / kSuper; ++b, x += kSuper, dst += bytes) {
    const float sigma2 = float(2.0 * mean_square(x, kSuper));
    fill_weights(x, imp ? imp + b * kSuper : nullptr, int(kSuper), sigma2, WeightForm::Magnitude, w, 1);
    const KFit f = fit_kquant_super(x, w, qmax);
    for (int j = 0; j < 8; ++j)
      search::affine_error(x + 32 * j, w + 32 * j, 32, f.d * float(f.sc[j]), f.dmin * float(f.m[j]), qmax, q + 32 * j);
    std::memset(dst, 0, bytes);
    put_f16(dst, f.d);
    put_f16(dst + 2, f.dmin);
    q4k_pack_scales(f.sc, f.m, dst + 4);
    if (qmax == 15) set_codes_q4_k(dst, q);
    else set_codes_q5_k(dst, q);
  }
}
void encode_q4_k(const float* x, int64_t n, uint8_t* dst, const float* imp) { encode_kquant(x, n, dst, imp, 15); }
void encode_q5_k(const float* x, int64_t n, uint8_t* dst, const float* imp) { encode_kquant(x, n, dst, imp, 31); }

void decode_q4_k(const uint8_t* src, int64_t n, float* y) {
  for (int64_t b = 0; b < n / kSuper; ++b, src += kQ4KBytes, y += kSuper) {
    const float d = get_f16(src), dmin = get_f16(src + 2);
    const uint8_t* qs = src + 16;
    for (int c = 0; c < 4; ++c) {
      uint8_t sc_lo, m_lo, sc_hi, m_hi;
      q4k_unpack_scale_min(2 * c, src + 4, &sc_lo, &m_lo);
      q4k_unpack_scale_min(2 * c + 1, src + 4, &sc_hi, &m_hi);
      const float s_lo = d * float(sc_lo), s_hi = d * float(sc_hi);
      const float mm_lo = dmin * float(m_lo), mm_hi = dmin * float(m_hi);
      for (int l = 0; l < 32; ++l) {
        y[64 * c + l] = s_lo * float(qs[32 * c + l] & 0x0F) - mm_lo;
        y[64 * c + 32 + l] = s_hi * float(qs[32 * c + l] >> 4) - mm_hi;
      }
    }
  }
}
void decode_q5_k(const uint8_t* src, int64_t n, float* y) {
  for (int64_t b = 0; b < n / kSuper; ++b, src += kQ5KBytes, y += kSuper) {
    const float d = get_f16(src), dmin = get_f16(src + 2);
    const uint8_t* qh = src + 16;
    const uint8_t* qs = src + 48;
    for (int c = 0; c < 4; ++c) {
      uint8_t sc_lo, m_lo, sc_hi, m_hi;
      q4k_unpack_scale_min(2 * c, src + 4, &sc_lo, &m_lo);
      q4k_unpack_scale_min(2 * c + 1, src + 4, &sc_hi, &m_hi);
      const float s_lo = d * float(sc_lo), s_hi = d * float(sc_hi);
      const float mm_lo = dmin * float(m_lo), mm_hi = dmin * float(m_hi);
      for (int l = 0; l < 32; ++l) {
        const int lo = (qs[32 * c + l] & 0x0F) | (((qh[l] >> (2 * c)) & 1) << 4);
        const int hi = (qs[32 * c + l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
        y[64 * c + l] = s_lo * float(lo) - mm_lo;
        y[64 * c + 32 + l] = s_hi * float(hi) - mm_hi;
      }
    }
  }
}

// ---- Q6_K: 16 sub-blocks of 16, d * sc[j] * (q - 32), int8 sc ----
constexpr size_t kQ6KBytes = 128 + 64 + 16 + 2;
void set_codes_q6_k(uint8_t* dst, const uint8_t* q) {
  uint8_t* ql = dst;
  uint8_t* qh = dst + 128;
  for (int h = 0; h < 2; ++h) {
    const uint8_t* qq = q + 128 * h;
    for (int i = 0; i < 32; ++i) {
      ql[64 * h + i] = uint8_t((qq[i] & 15) | ((qq[i + 64] & 15) << 4));
      ql[64 * h + 32 + i] = uint8_t((qq[i + 32] & 15) | ((qq[i + 96] & 15) << 4));
      qh[32 * h + i] = uint8_t((qq[i] >> 4) | ((qq[i + 32] >> 4) << 2) | ((qq[i + 64] >> 4) << 4) | ((qq[i + 96] >> 4) << 6));
    }
  }
}
void encode_q6_k(const float* x, int64_t n, uint8_t* dst, const float* imp) {
  float w[kSuper];
  int8_t l[kSuper];
  for (int64_t b = 0; b < n / kSuper; ++b, x += kSuper, dst += kQ6KBytes) {
    fill_weights(x, imp ? imp + b * kSuper : nullptr, int(kSuper), 0.0f, WeightForm::ImportanceOnly, w, 2);
    float s[16];
    float top = 0;  // the sub-scale of largest magnitude, signed
    for (int j = 0; j < 16; ++j) {
      s[j] = search::fit_symmetric(x + 16 * j, w + 16 * j, 16, -32, 31, false, l + 16 * j);
      if (std::fabs(s[j]) > std::fabs(top)) top = s[j];
    }
    float best_d = 0;
    int8_t best_sc[16] = {};
    double best_err = std::numeric_limits<double>::infinity();
    if (top != 0.0f) {
      // The largest sub-scale on code -128 (the long side) or +127, times the divisors.
      for (int side = 0; side < 2; ++side)
        for (float f : kSuperDivisors) {
          const float d = f16_round(side == 0 ? top / (-128.0f * f) : top / (127.0f * f));
          if (d == 0.0f) continue;
          double total = 0;
          int8_t sc[16];
          for (int j = 0; j < 16; ++j) {
            // Windows around the sub-scale and around its negation (the codes are asymmetric, -32..31, so
            // either sign can fit a sub-block best).
            const int c0 = int(std::lround(s[j] / d));
            double best = std::numeric_limits<double>::infinity();
            for (int c : {c0, -c0})
              for (int a = std::max(-128, c - 1); a <= std::min(127, c + 1); ++a) {
                const double e = search::symmetric_error(x + 16 * j, w + 16 * j, 16, d * float(a), -32, 31, nullptr);
                if (e < best) {
                  best = e;
                  sc[j] = int8_t(a);
                }
              }
            total += best;
          }
          if (total < best_err) {
            best_err = total;
            best_d = d;
            std::copy(sc, sc + 16, best_sc);
          }
        }
    }
    uint8_t q[kSuper];
    for (int j = 0; j < 16; ++j) {
      search::symmetric_error(x + 16 * j, w + 16 * j, 16, best_d * float(best_sc[j]), -32, 31, l + 16 * j);
      for (int i = 0; i < 16; ++i) q[16 * j + i] = uint8_t(l[16 * j + i] + 32);
    }
    set_codes_q6_k(dst, q);
    for (int j = 0; j < 16; ++j) dst[192 + j] = uint8_t(best_sc[j]);
    put_f16(dst + 208, best_d);
  }
}
void decode_q6_k(const uint8_t* src, int64_t n, float* y) {
  for (int64_t b = 0; b < n / kSuper; ++b, src += kQ6KBytes, y += kSuper) {
    const uint8_t* ql = src;
    const uint8_t* qh = src + 128;
    const auto* sc = reinterpret_cast<const int8_t*>(src + 192);
    const float d = get_f16(src + 208);
    for (int h = 0; h < 2; ++h) {
      float* yy = y + 128 * h;
      for (int i = 0; i < 32; ++i) {
        const int is = i / 16;
        const int q1 = ((ql[64 * h + i] & 15) | (((qh[32 * h + i] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[64 * h + 32 + i] & 15) | (((qh[32 * h + i] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[64 * h + i] >> 4) | (((qh[32 * h + i] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[64 * h + 32 + i] >> 4) | (((qh[32 * h + i] >> 6) & 3) << 4)) - 32;
        yy[i] = d * float(sc[8 * h + is + 0]) * float(q1);
        yy[i + 32] = d * float(sc[8 * h + is + 2]) * float(q2);
        yy[i + 64] = d * float(sc[8 * h + is + 4]) * float(q3);
        yy[i + 96] = d * float(sc[8 * h + is + 6]) * float(q4);
      }
    }
  }
}

// ---- IQ4_XS: 8 sub-blocks of 32, d * (ls - 32) * grid[q], 6-bit ls ----
constexpr size_t kIq4XsBytes = 2 + 2 + 4 + 128;
void encode_iq4_xs(const float* x, int64_t n, uint8_t* dst, const float* imp) {
  float w[kSuper];
  uint8_t q[kSuper];
  for (int64_t b = 0; b < n / kSuper; ++b, x += kSuper, dst += kIq4XsBytes) {
    const float sigma2 = float(2.0 * mean_square(x, kSuper));
    fill_weights(x, imp ? imp + b * kSuper : nullptr, int(kSuper), sigma2, WeightForm::Magnitude, w, 2);
    float s[8];
    float top = 0;
    for (int j = 0; j < 8; ++j) {
      s[j] = search::fit_grid(x + 32 * j, w + 32 * j, 32, kIq4nlGrid, false, q + 32 * j);
      if (std::fabs(s[j]) > std::fabs(top)) top = s[j];
    }
    float best_d = 0;
    int best_l[8] = {};
    double best_err = std::numeric_limits<double>::infinity();
    if (top != 0.0f) {
      for (int side = 0; side < 2; ++side)
        for (float f : kSuperDivisors) {
          const float d = f16_round(side == 0 ? top / (-32.0f * f) : top / (31.0f * f));
          if (d == 0.0f) continue;
          double total = 0;
          int ls[8];
          for (int j = 0; j < 8; ++j) {
            const int c0 = int(std::lround(s[j] / d));
            double best = std::numeric_limits<double>::infinity();
            for (int c : {c0, -c0})
              for (int a = std::max(-32, c - 1); a <= std::min(31, c + 1); ++a) {
                const double e = search::grid_error(x + 32 * j, w + 32 * j, 32, d * float(a), kIq4nlGrid, nullptr);
                if (e < best) {
                  best = e;
                  ls[j] = a;
                }
              }
            total += best;
          }
          if (total < best_err) {
            best_err = total;
            best_d = d;
            std::copy(ls, ls + 8, best_l);
          }
        }
    } else {
      for (int& v : best_l) v = 0;
    }
    std::memset(dst, 0, kIq4XsBytes);
    put_f16(dst, best_d);
    uint16_t scales_h = 0;
    for (int j = 0; j < 8; ++j) {
      search::grid_error(x + 32 * j, w + 32 * j, 32, best_d * float(best_l[j]), kIq4nlGrid, q + 32 * j);
      const int ls = best_l[j] + 32;
      dst[4 + j / 2] = uint8_t(dst[4 + j / 2] | ((ls & 15) << (4 * (j % 2))));
      scales_h = uint16_t(scales_h | ((ls >> 4) << (2 * j)));
      pack_nibbles32(q + 32 * j, dst + 8 + 16 * j);
    }
    std::memcpy(dst + 2, &scales_h, 2);
  }
}
void decode_iq4_xs(const uint8_t* src, int64_t n, float* y) {
  for (int64_t b = 0; b < n / kSuper; ++b, src += kIq4XsBytes, y += kSuper) {
    const float d = get_f16(src);
    uint16_t scales_h;
    std::memcpy(&scales_h, src + 2, 2);
    for (int j = 0; j < 8; ++j) {
      const int ls = ((src[4 + j / 2] >> (4 * (j % 2))) & 15) | (((scales_h >> (2 * j)) & 3) << 4);
      const float dl = d * float(ls - 32);
      const uint8_t* qs = src + 8 + 16 * j;
      for (int i = 0; i < 16; ++i) {
        y[32 * j + i] = dl * float(kIq4nlGrid[qs[i] & 15]);
        y[32 * j + 16 + i] = dl * float(kIq4nlGrid[qs[i] >> 4]);
      }
    }
  }
}

// ---- per-element affine maps of the code grids: value(code) = a[i] * grid(code) + b[i] -----------
void affine_q4_0(const uint8_t* blk, float* a, float* b) {
  const float d = get_f16(blk);
  for (int i = 0; i < 32; ++i) a[i] = d, b[i] = 0.0f;
}
void affine_q4_1(const uint8_t* blk, float* a, float* b) {
  const float d = get_f16(blk), m = get_f16(blk + 2);
  for (int i = 0; i < 32; ++i) a[i] = d, b[i] = m;
}
void affine_kquant(const uint8_t* blk, float* a, float* b) {
  const float d = get_f16(blk), dmin = get_f16(blk + 2);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    q4k_unpack_scale_min(j, blk + 4, &sc, &m);
    for (int i = 0; i < 32; ++i) a[32 * j + i] = d * float(sc), b[32 * j + i] = -(dmin * float(m));
  }
}
void affine_q6_k(const uint8_t* blk, float* a, float* b) {
  const auto* sc = reinterpret_cast<const int8_t*>(blk + 192);
  const float d = get_f16(blk + 208);
  for (int e = 0; e < 256; ++e) a[e] = d * float(sc[e / 16]), b[e] = 0.0f;
}
void affine_iq4_xs(const uint8_t* blk, float* a, float* b) {
  const float d = get_f16(blk);
  uint16_t scales_h;
  std::memcpy(&scales_h, blk + 2, 2);
  for (int j = 0; j < 8; ++j) {
    const int ls = ((blk[4 + j / 2] >> (4 * (j % 2))) & 15) | (((scales_h >> (2 * j)) & 3) << 4);
    for (int i = 0; i < 32; ++i) a[32 * j + i] = d * float(ls - 32), b[32 * j + i] = 0.0f;
  }
}
void set_codes_q4_0(uint8_t* blk, const uint8_t* q) { pack_nibbles32(q, blk + 2); }
void set_codes_q4_1(uint8_t* blk, const uint8_t* q) { pack_nibbles32(q, blk + 4); }
void set_codes_q8_0(uint8_t* blk, const uint8_t* q) {
  for (int i = 0; i < 32; ++i) blk[2 + i] = uint8_t(int8_t(int(q[i]) - 128));
}
void set_codes_iq4_xs(uint8_t* blk, const uint8_t* q) {
  for (int j = 0; j < 8; ++j) pack_nibbles32(q + 32 * j, blk + 8 + 16 * j);
}

// Encoders whose weights use only the block ignore the row statistic.
template <void (*F)(const float*, int64_t, uint8_t*, const float*)>
void part(const float* x, int64_t n, uint8_t* dst, const float* imp, float) {
  F(x, n, dst, imp);
}

const std::array<GgmlTypeTraits, 10> kTypes = {{
    {GgmlType::F32, "f32", 1, 4, encode_f32, decode_f32, part<encode_f32>, 0, 0, nullptr, nullptr, nullptr},
    {GgmlType::F16, "f16", 1, 2, encode_f16, decode_f16, part<encode_f16>, 0, 0, nullptr, nullptr, nullptr},
    {GgmlType::Q4_0, "q4_0", kQ4Block, kQ4_0Bytes, encode_q4_0, decode_q4_0, encode_q4_0_ms, 16, 8, nullptr,
     affine_q4_0, set_codes_q4_0},
    {GgmlType::Q4_1, "q4_1", kQ4Block, kQ4_1Bytes, encode_q4_1, decode_q4_1, encode_q4_1_ms, 16, 0, nullptr,
     affine_q4_1, set_codes_q4_1},
    {GgmlType::Q8_0, "q8_0", kQ8Block, kQ8Bytes, encode_q8_0, decode_q8_0, part<encode_q8_0>, 256, 128, nullptr,
     affine_q4_0, set_codes_q8_0},
    {GgmlType::Q4_K, "q4_k", kSuper, kQ4KBytes, encode_q4_k, decode_q4_k, part<encode_q4_k>, 16, 0, nullptr,
     affine_kquant, set_codes_q4_k},
    {GgmlType::Q5_K, "q5_k", kSuper, kQ5KBytes, encode_q5_k, decode_q5_k, part<encode_q5_k>, 32, 0, nullptr,
     affine_kquant, set_codes_q5_k},
    {GgmlType::Q6_K, "q6_k", kSuper, kQ6KBytes, encode_q6_k, decode_q6_k, part<encode_q6_k>, 64, 32, nullptr,
     affine_q6_k, set_codes_q6_k},
    {GgmlType::IQ4_NL, "iq4_nl", kQ4Block, kIq4NlBytes, encode_iq4_nl, decode_iq4_nl, part<encode_iq4_nl>, 16, 0,
     kIq4nlGrid, affine_q4_0, set_codes_q4_0},
    {GgmlType::IQ4_XS, "iq4_xs", kSuper, kIq4XsBytes, encode_iq4_xs, decode_iq4_xs, part<encode_iq4_xs>, 16, 0,
     kIq4nlGrid, affine_iq4_xs, set_codes_iq4_xs},
}};

}  // namespace

void set_importance_weighting(ImportanceWeighting w) { g_weighting.store(w); }
ImportanceWeighting importance_weighting() { return g_weighting.load(); }

// Bytes 0-3: low 6 bits = scales 0-3, top 2 bits = high bits of scales 4-7.
// Bytes 4-7: low 6 bits = mins 0-3, top 2 bits = high bits of mins 4-7.
// Bytes 8-11: low nibble = low 4 bits of scales 4-7, high nibble = low 4 bits of mins 4-7.
void q4k_pack_scales(const uint8_t sc[8], const uint8_t m[8], uint8_t packed[12]) {
  for (int j = 0; j < 4; ++j) {
    packed[j] = uint8_t((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    packed[j + 4] = uint8_t((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    packed[j + 8] = uint8_t((sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4));
  }
}
void q4k_unpack_scale_min(int j, const uint8_t q[12], uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = uint8_t((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
    *m = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

const GgmlTypeTraits& ggml_traits(GgmlType t) {
  for (const auto& tr : kTypes)
    if (tr.type == t) return tr;
  fail("ggml", "unsupported ggml type id " + std::to_string(uint32_t(t)));
}

const char* ggml_type_name(GgmlType t) { return ggml_traits(t).name; }

GgmlType parse_ggml_type(const std::string& name, const std::string& where) {
  std::string lower = name;
  for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& tr : kTypes)
    if (lower == tr.name) return tr.type;
  fail(where, "unknown ggml type '" + name + "' (expected f32, f16, q8_0, q4_0, q4_1, q4_k, q5_k, q6_k, iq4_nl or iq4_xs)");
}

size_t ggml_row_bytes(GgmlType t, int64_t n, const std::string& where) {
  const GgmlTypeTraits& tr = ggml_traits(t);
  if (n % tr.block_elems != 0)
    fail(where, std::string("row of ") + std::to_string(n) + " elements is not a multiple of the " + tr.name +
                    " block size " + std::to_string(tr.block_elems));
  return size_t(n / tr.block_elems) * tr.block_bytes;
}

double ggml_bits_per_weight(GgmlType t) {
  const GgmlTypeTraits& tr = ggml_traits(t);
  return double(tr.block_bytes) * 8.0 / double(tr.block_elems);
}

}  // namespace lq::exporter
