// Implementation-independent expectations for the numeric formats: decoders written from the format
// definitions in double precision (std::ldexp on the bit fields), and a reference encoder that picks
// the nearest decoded value by searching every code (ties -> even code).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace lq::test {

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// A binary floating-point format: sign bit on top, then exponent and mantissa fields.
struct FormatSpec {
  int exp_bits;
  int mant_bits;
  int bias;
  enum Specials { kIeee, kE4M3Fn, kNone } specials;
  int total_bits() const { return 1 + exp_bits + mant_bits; }
  uint32_t sign_bit() const { return 1u << (exp_bits + mant_bits); }
  int num_codes() const { return 1 << total_bits(); }

  bool is_nan(uint32_t code) const {
    const uint32_t mag = code & (sign_bit() - 1);
    const uint32_t exp = mag >> mant_bits, man = mag & ((1u << mant_bits) - 1);
    if (specials == kIeee) return exp == (1u << exp_bits) - 1 && man != 0;
    if (specials == kE4M3Fn) return mag == sign_bit() - 1;
    return false;
  }

  // Exact value of a code (NaN for NaN codes, +-inf for IEEE infinities).
  double decode(uint32_t code) const {
    if (is_nan(code)) return std::numeric_limits<double>::quiet_NaN();
    const uint32_t mag = code & (sign_bit() - 1);
    const int exp = int(mag >> mant_bits);
    const double man = double(mag & ((1u << mant_bits) - 1));
    const double sign = (code & sign_bit()) ? -1.0 : 1.0;
    if (specials == kIeee && exp == (1 << exp_bits) - 1) return sign * HUGE_VAL;
    const double v = exp == 0 ? std::ldexp(man, 1 - bias - mant_bits)
                              : std::ldexp(1.0 + man / double(1 << mant_bits), exp - bias);
    return sign * v;
  }
};

inline constexpr FormatSpec kBf16Spec{8, 7, 127, FormatSpec::kIeee};
inline constexpr FormatSpec kF16Spec{5, 10, 15, FormatSpec::kIeee};
inline constexpr FormatSpec kE4M3Spec{4, 3, 7, FormatSpec::kE4M3Fn};

// Nearest-value encoder over a table of (value, code) candidates, ties to the even code. For IEEE
// formats the infinity code is placed at 2^(emax+1), where IEEE overflow rounding puts it; for the
// saturating formats the largest finite value is the last candidate, so larger inputs saturate.
class ReferenceEncoder {
 public:
  ReferenceEncoder(std::vector<std::pair<double, uint32_t>> candidates, uint32_t sign_bit)
      : table_(std::move(candidates)), sign_bit_(sign_bit) {
    std::sort(table_.begin(), table_.end());
  }

  static ReferenceEncoder for_spec(const FormatSpec& spec) {
    std::vector<std::pair<double, uint32_t>> c;
    for (uint32_t code = 0; code < spec.sign_bit(); ++code) {
      const double v = spec.decode(code);
      if (std::isnan(v)) continue;
      if (std::isinf(v)) {
        c.emplace_back(std::ldexp(1.0, (1 << spec.exp_bits) - 1 - spec.bias), code);
      } else {
        c.emplace_back(v, code);
      }
    }
    return ReferenceEncoder(std::move(c), spec.sign_bit());
  }

  // Non-NaN input only.
  uint32_t encode(float f) const {
    const double a = std::fabs(double(f));
    auto hi = std::lower_bound(table_.begin(), table_.end(), std::make_pair(a, 0u));
    uint32_t code;
    if (hi == table_.end()) {
      code = table_.back().second;
    } else if (hi == table_.begin() || hi->first == a) {
      code = hi->second;
    } else {
      auto lo = hi - 1;
      const double dlo = a - lo->first, dhi = hi->first - a;
      if (dlo < dhi) code = lo->second;
      else if (dhi < dlo) code = hi->second;
      else code = (lo->second & 1) ? hi->second : lo->second;
    }
    return code | (std::signbit(f) ? sign_bit_ : 0u);
  }

  const std::vector<std::pair<double, uint32_t>>& table() const { return table_; }

 private:
  std::vector<std::pair<double, uint32_t>> table_;
  uint32_t sign_bit_;
};

}  // namespace lq::test
