// The one canonical in-memory form of a quantized linear weight W [out][in].
//
// Every quantizer produces a QTensor, every checkpoint writer packs one and every reader returns
// one, so the runtime and the tests only ever deal with this layout:
//
//   codes   [out][in]  one code per byte, UNPACKED (packing is a property of the on-disk format, not
//                      of the tensor; unpacked codes keep quantizers and kernels index-simple).
//                      INT4: 0..15, INT8: 0..255 (unsigned, the zero point absorbs the sign),
//                      NVFP4: an E2M1 nibble (bit 3 = sign).
//   integer schemes:   scales / zeros [out][in/group]; w = (code - zero) * scale.
//                      `scales` hold the EXACT value of the dtype they are written as (`scale_dtype`):
//                      a bf16/f16 value is representable in f32, so keeping it as float loses nothing
//                      and dequantize() equals the file's dequantization bit for bit.
//                      Symmetric schemes have a fixed zero (8 for INT4, 128 for INT8).
//   NVFP4:             block_scales [out][in/16] E4M3 bytes, tensor_scale fp32;
//                      w = e2m1(code) * (e4m3(block_scale) * tensor_scale), the product in brackets
//                      evaluated first in f32 (that order is part of the definition).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lq::quant {

enum class Scheme { Int4Asym, Int4Sym, Int8Sym, NvFp4 };
// The dtype a per-group scale is stored as in the file (NVFP4 block scales are always E4M3).
enum class ScaleDType { BF16, F16, F32 };

const char* scheme_name(Scheme s);  // "int4_asym", "int4_sym", "int8_sym", "nvfp4"
Scheme parse_scheme(const std::string& name, const std::string& where);
const char* scale_dtype_name(ScaleDType d);  // "bf16", "f16", "f32"
int scheme_bits(Scheme s);                   // bits per code: 4 or 8
bool scheme_is_integer(Scheme s);
// Zero point of a symmetric integer scheme (8 / 128); -1 for schemes with per-group zeros or NVFP4.
int fixed_zero(Scheme s);
int code_max(Scheme s);  // largest code: 15 or 255 (NVFP4: 15, any nibble)

// Rounds `x` to the nearest value of `dtype` (RNE) and returns it as f32. Overflow to inf is kept
// (f16 above 65504): callers that store f16 must check, see AutoAWQ's writer.
float round_to_scale_dtype(float x, ScaleDType dtype);

struct QTensor {
  Scheme scheme = Scheme::Int4Asym;
  int64_t out = 0, in = 0;
  int64_t group = 0;  // elements per scale along the input axis (16 for NVFP4)
  std::vector<uint8_t> codes;  // [out][in], unpacked

  // Integer schemes.
  ScaleDType scale_dtype = ScaleDType::BF16;
  std::vector<float> scales;   // [out][in/group], exact stored values
  std::vector<uint8_t> zeros;  // [out][in/group]

  // NVFP4.
  std::vector<uint8_t> block_scales;  // [out][in/16], E4M3 bytes
  float tensor_scale = 1.0f;

  // An integer-scheme tensor of this shape with zeroed codes, scales and zero points.
  static QTensor integer(Scheme scheme, int64_t out, int64_t in, int64_t group, ScaleDType scale_dtype);

  int64_t groups_per_row() const { return group > 0 ? in / group : 0; }
  int64_t numel() const { return out * in; }

  // Checks sizes, code ranges and (for integer schemes) that each scale is exactly a value of
  // scale_dtype; throws lq::Error naming `where`.
  void validate(const std::string& where) const;

  // Dequantizes rows [row_begin, row_end) into `dst` ((row_end - row_begin) * in floats).
  void dequantize_rows(int64_t row_begin, int64_t row_end, float* dst) const;
  std::vector<float> dequantize() const;

  // Storage accounting of the canonical packed payload: codes at scheme_bits, scales at their
  // dtype (E4M3 for NVFP4), asymmetric zeros at 4 bits, plus the tensor scale. On-disk layouts
  // may spend more (lance-quant-v1 stores zeros as bytes, for example).
  uint64_t payload_bytes() const;
  double bits_per_weight() const { return numel() ? 8.0 * double(payload_bytes()) / double(numel()) : 0.0; }
};

// QTensor::payload_bytes of a tensor of this shape and format, without one (bit budgets).
uint64_t payload_bytes(Scheme scheme, int64_t out, int64_t in, int64_t group, ScaleDType scale_dtype);

// Value of one E2M1 nibble / one E4M3 byte (thin wrappers over lq::num, kept here so kernels that
// only see a QTensor need one include).
float e2m1_value(uint8_t nibble);
float e4m3_value(uint8_t byte);

}  // namespace lq::quant
