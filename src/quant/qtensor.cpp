#include "quant/qtensor.h"

#include <algorithm>
#include <cmath>

#include "io/error.h"
#include "num/formats.h"

namespace lq::quant {

namespace {
struct SchemeRow {
  Scheme scheme;
  const char* name;
  int bits;
  bool integer;
  int fixed_zero;
};
// One row per scheme: adding a scheme means adding a row here and its quantizer.
constexpr SchemeRow kSchemes[] = {
    {Scheme::Int4Asym, "int4_asym", 4, true, -1},
    {Scheme::Int4Sym, "int4_sym", 4, true, 8},
    {Scheme::Int8Sym, "int8_sym", 8, true, 128},
    {Scheme::NvFp4, "nvfp4", 4, false, -1},
};
const SchemeRow& row_of(Scheme s) {
  for (const auto& r : kSchemes)
    if (r.scheme == s) return r;
  fail("quant", "unknown scheme");
}
}  // namespace

const char* scheme_name(Scheme s) { return row_of(s).name; }
Scheme parse_scheme(const std::string& name, const std::string& where) {
  for (const auto& r : kSchemes)
    if (name == r.name) return r.scheme;
  fail(where, "unknown quantization scheme '" + name + "' (int4_asym, int4_sym, int8_sym, nvfp4)");
}
int scheme_bits(Scheme s) { return row_of(s).bits; }
bool scheme_is_integer(Scheme s) { return row_of(s).integer; }
int fixed_zero(Scheme s) { return row_of(s).fixed_zero; }
int code_max(Scheme s) { return (1 << scheme_bits(s)) - 1; }

const char* scale_dtype_name(ScaleDType d) {
  switch (d) {
    case ScaleDType::BF16: return "bf16";
    case ScaleDType::F16: return "f16";
    case ScaleDType::F32: return "f32";
  }
  return "?";
}

float round_to_scale_dtype(float x, ScaleDType dtype) {
  switch (dtype) {
    case ScaleDType::BF16: return num::bf16_to_f32(num::f32_to_bf16(x));
    case ScaleDType::F16: return num::f16_to_f32(num::f32_to_f16(x));
    case ScaleDType::F32: return x;
  }
  return x;
}

float e2m1_value(uint8_t nibble) { return num::e2m1_to_f32(nibble); }
float e4m3_value(uint8_t byte) { return num::e4m3_to_f32(byte); }

QTensor QTensor::integer(Scheme scheme, int64_t out, int64_t in, int64_t group, ScaleDType scale_dtype) {
  QTensor qt;
  qt.scheme = scheme;
  qt.out = out;
  qt.in = in;
  qt.group = group;
  qt.scale_dtype = scale_dtype;
  qt.codes.resize(size_t(out * in));
  qt.scales.resize(size_t(out * (group > 0 ? in / group : 0)));
  qt.zeros.resize(qt.scales.size());
  return qt;
}

void QTensor::validate(const std::string& where) const {
  if (out <= 0 || in <= 0) fail(where, "empty quantized tensor shape");
  if (scheme == Scheme::NvFp4 && group != 16) fail(where, "NVFP4 needs group 16, got " + std::to_string(group));
  if (group <= 0 || in % group != 0)
    fail(where, "input width " + std::to_string(in) + " is not a multiple of group " + std::to_string(group));
  if (codes.size() != size_t(out * in)) fail(where, "codes size does not match [out, in]");
  const int cmax = code_max(scheme);
  uint8_t largest = 0;  // a branch-free pass (it runs over every weight at load time); find the culprit on failure
  for (uint8_t c : codes) largest = std::max(largest, c);
  if (largest > cmax)
    for (uint8_t c : codes)
      if (c > cmax) fail(where, "code " + std::to_string(c) + " out of range for " + scheme_name(scheme));
  const size_t ngroups = size_t(out * groups_per_row());
  if (scheme == Scheme::NvFp4) {
    if (block_scales.size() != ngroups) fail(where, "block_scales size does not match [out, in/16]");
    if (!std::isfinite(tensor_scale) || tensor_scale <= 0) fail(where, "tensor scale must be finite and > 0");
    for (uint8_t b : block_scales)
      if ((b & 0x7f) == 0x7f) fail(where, "NaN E4M3 block scale");
    return;
  }
  if (scales.size() != ngroups || zeros.size() != ngroups) fail(where, "scales/zeros size does not match [out, in/group]");
  const int fz = fixed_zero(scheme);
  if (scale_dtype == ScaleDType::BF16 && num::all_exact_in_bf16(scales.data(), scales.size()) &&
      std::all_of(scales.begin(), scales.end(), [](float s) { return std::isfinite(s); }) &&
      std::all_of(zeros.begin(), zeros.end(), [&](uint8_t z) { return z <= cmax && (fz < 0 || z == fz); }))
    return;  // the common case, checked without per-value conversions; otherwise the loop names the culprit
  for (size_t i = 0; i < ngroups; ++i) {
    if (round_to_scale_dtype(scales[i], scale_dtype) != scales[i] || !std::isfinite(scales[i]))
      fail(where, "scale " + std::to_string(scales[i]) + " is not a finite " + scale_dtype_name(scale_dtype) + " value");
    if (zeros[i] > cmax || (fz >= 0 && zeros[i] != fz)) fail(where, "zero point out of range");
  }
}

void QTensor::dequantize_rows(int64_t row_begin, int64_t row_end, float* dst) const {
  const int64_t gpr = groups_per_row();
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* c = codes.data() + r * in;
    float* d = dst + (r - row_begin) * in;
    for (int64_t g = 0; g < gpr; ++g) {
      const int64_t k0 = g * group;
      if (scheme == Scheme::NvFp4) {
        const float s = e4m3_value(block_scales[size_t(r * gpr + g)]) * tensor_scale;
        for (int64_t k = k0; k < k0 + group; ++k) d[k] = e2m1_value(c[k]) * s;
      } else {
        const float s = scales[size_t(r * gpr + g)];
        const int z = zeros[size_t(r * gpr + g)];
        for (int64_t k = k0; k < k0 + group; ++k) d[k] = float(int(c[k]) - z) * s;
      }
    }
  }
}

std::vector<float> QTensor::dequantize() const {
  std::vector<float> w(size_t(out * in));
  dequantize_rows(0, out, w.data());
  return w;
}

uint64_t payload_bytes(Scheme scheme, int64_t out, int64_t in, int64_t group, ScaleDType scale_dtype) {
  const uint64_t n = uint64_t(out * in), ng = group > 0 ? uint64_t(out * (in / group)) : 0;
  const uint64_t code_bytes = n * uint64_t(scheme_bits(scheme)) / 8;
  if (scheme == Scheme::NvFp4) return code_bytes + ng + 4;
  const uint64_t scale_bytes = ng * (scale_dtype == ScaleDType::F32 ? 4 : 2);
  const uint64_t zero_bytes = fixed_zero(scheme) >= 0 ? 0 : (ng + 1) / 2;
  return code_bytes + scale_bytes + zero_bytes;
}

uint64_t QTensor::payload_bytes() const { return quant::payload_bytes(scheme, out, in, group, scale_dtype); }

}  // namespace lq::quant
