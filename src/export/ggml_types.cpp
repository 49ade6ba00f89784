#include "export/ggml_types.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "io/error.h"
#include "num/formats.h"

namespace lq::exporter {

namespace {

void put_f16(uint8_t* p, float v) {
  const uint16_t h = num::f32_to_f16(v);
  std::memcpy(p, &h, 2);
}
float get_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return num::f16_to_f32(h);
}

// ---- F32 / F16 ----
void encode_f32(const float* x, int64_t n, uint8_t* dst) { std::memcpy(dst, x, size_t(n) * 4); }
void decode_f32(const uint8_t* src, int64_t n, float* y) { std::memcpy(y, src, size_t(n) * 4); }
void encode_f16(const float* x, int64_t n, uint8_t* dst) {
  for (int64_t i = 0; i < n; ++i) put_f16(dst + 2 * i, x[i]);
}
void decode_f16(const uint8_t* src, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = get_f16(src + 2 * i);
}

// ---- Q8_0: d = absmax / 127, q = round(x / d) ----
constexpr int64_t kQ8Block = 32;
constexpr size_t kQ8Bytes = 2 + 32;
void encode_q8_0(const float* x, int64_t n, uint8_t* dst) {
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

// ---- Q4_0: d = (signed value of largest magnitude) / -8, q = clamp(round(x / d) + 8, 0, 15) ----
// Using the signed extreme maps it exactly to code 0 and gives the opposite side 7 steps.
constexpr int64_t kQ4Block = 32;
constexpr size_t kQ4Bytes = 2 + 16;
void encode_q4_0(const float* x, int64_t n, uint8_t* dst) {
  for (int64_t b = 0; b < n / kQ4Block; ++b, x += kQ4Block, dst += kQ4Bytes) {
    float extreme = 0.0f;
    for (int i = 0; i < kQ4Block; ++i)
      if (std::fabs(x[i]) > std::fabs(extreme)) extreme = x[i];
    const float d = extreme / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(dst, d);
    auto code = [&](float v) { return uint8_t(std::min(15, int(std::floor(v * id + 8.5f)))); };
    for (int i = 0; i < 16; ++i) dst[2 + i] = uint8_t(code(x[i]) | (code(x[i + 16]) << 4));
  }
}
void decode_q4_0(const uint8_t* src, int64_t n, float* y) {
  for (int64_t b = 0; b < n / kQ4Block; ++b, src += kQ4Bytes, y += kQ4Block) {
    const float d = get_f16(src);
    for (int i = 0; i < 16; ++i) {
      y[i] = d * float(int(src[2 + i] & 0x0F) - 8);
      y[i + 16] = d * float(int(src[2 + i] >> 4) - 8);
    }
  }
}

// ---- Q4_K: 256-element super-blocks, 8 sub-blocks of 32 with 6-bit scale and min ----
constexpr int64_t kQ4KBlock = 256;
constexpr size_t kQ4KBytes = 2 + 2 + 12 + 128;

// Affine fit of one sub-block: x ~ scale * q - min with q in 0..15 and min >= 0 (the format has no
// room for a positive offset, so the fitted range always includes 0).
struct SubFit {
  float scale, min;
};
SubFit fit_sub_block(const float* x) {
  float lo = 0.0f, hi = 0.0f;
  for (int i = 0; i < 32; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  return {(hi - lo) / 15.0f, -lo};
}

void encode_q4_k(const float* x, int64_t n, uint8_t* dst) {
  for (int64_t b = 0; b < n / kQ4KBlock; ++b, x += kQ4KBlock, dst += kQ4KBytes) {
    std::array<SubFit, 8> fit{};
    float max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; ++j) {
      fit[j] = fit_sub_block(x + 32 * j);
      max_scale = std::max(max_scale, fit[j].scale);
      max_min = std::max(max_min, fit[j].min);
    }
    // Super-block scales, rounded to f16 first: the 6-bit sub-scales are chosen against the
    // values a decoder will actually see.
    const float d = num::f16_to_f32(num::f32_to_f16(max_scale / 63.0f));
    const float dmin = num::f16_to_f32(num::f32_to_f16(max_min / 63.0f));
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = d > 0.0f ? uint8_t(std::clamp(std::lround(fit[j].scale / d), 0L, 63L)) : 0;
      mn[j] = dmin > 0.0f ? uint8_t(std::clamp(std::lround(fit[j].min / dmin), 0L, 63L)) : 0;
    }
    put_f16(dst, d);
    put_f16(dst + 2, dmin);
    q4k_pack_scales(sc, mn, dst + 4);
    uint8_t q[256];
    for (int j = 0; j < 8; ++j) {
      const float s = d * float(sc[j]), m = dmin * float(mn[j]);
      for (int i = 0; i < 32; ++i) {
        const float v = x[32 * j + i];
        q[32 * j + i] = s > 0.0f ? uint8_t(std::clamp(std::lround((v + m) / s), 0L, 15L)) : 0;
      }
    }
    uint8_t* qs = dst + 16;
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) qs[32 * c + l] = uint8_t(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  }
}
void decode_q4_k(const uint8_t* src, int64_t n, float* y) {
  for (int64_t b = 0; b < n / kQ4KBlock; ++b, src += kQ4KBytes, y += kQ4KBlock) {
    const float d = get_f16(src), dmin = get_f16(src + 2);
    const uint8_t* qs = src + 16;
    for (int c = 0; c < 4; ++c) {
      uint8_t sc_lo, m_lo, sc_hi, m_hi;
      q4k_unpack_scale_min(2 * c, src + 4, &sc_lo, &m_lo);
      q4k_unpack_scale_min(2 * c + 1, src + 4, &sc_hi, &m_hi);
      for (int l = 0; l < 32; ++l) {
        y[64 * c + l] = d * float(sc_lo) * float(qs[32 * c + l] & 0x0F) - dmin * float(m_lo);
        y[64 * c + 32 + l] = d * float(sc_hi) * float(qs[32 * c + l] >> 4) - dmin * float(m_hi);
      }
    }
  }
}

const std::array<GgmlTypeTraits, 5> kTypes = {{
    {GgmlType::F32, "f32", 1, 4, encode_f32, decode_f32},
    {GgmlType::F16, "f16", 1, 2, encode_f16, decode_f16},
    {GgmlType::Q4_0, "q4_0", kQ4Block, kQ4Bytes, encode_q4_0, decode_q4_0},
    {GgmlType::Q8_0, "q8_0", kQ8Block, kQ8Bytes, encode_q8_0, decode_q8_0},
    {GgmlType::Q4_K, "q4_k", kQ4KBlock, kQ4KBytes, encode_q4_k, decode_q4_k},
}};

}  // namespace

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

GgmlType parse_ggml_type(const std::string& name, const std::string& where) {
  std::string lower = name;
  for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& tr : kTypes)
    if (lower == tr.name) return tr.type;
  fail(where, "unknown GGUF type '" + name + "' (expected f32, f16, q8_0, q4_0 or q4_k)");
}

size_t ggml_row_bytes(GgmlType t, int64_t n, const std::string& where) {
  const GgmlTypeTraits& tr = ggml_traits(t);
  if (n % tr.block_elems != 0)
    fail(where, std::string("row of ") + std::to_string(n) + " elements is not a multiple of the " + tr.name +
                    " block size " + std::to_string(tr.block_elems));
  return size_t(n / tr.block_elems) * tr.block_bytes;
}

}  // namespace lq::exporter
