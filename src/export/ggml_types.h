// The ggml tensor types this exporter writes and reads, as one table (ggml's "type traits" idea): id,
// name, block size, bytes per block, an encoder and a decoder. Block layouts follow ggml-common.h
// (little-endian, packed; "K" super-blocks are 256 elements):
//   Q8_0   32:  { f16 d; int8 qs[32]; }                        w = d * qs[i]
//   Q4_0   32:  { f16 d; u8 qs[16]; }                          w = d * (q - 8); q[i] low nibble of qs[i],
//                                                              q[i + 16] its high nibble
//   Q4_1   32:  { f16 d; f16 m; u8 qs[16]; }                   w = d * q + m (nibbles as Q4_0)
//   Q4_K  256:  { f16 d; f16 dmin; u8 scales[12]; u8 qs[128]; }
//               8 sub-blocks of 32: w = d * sc[j] * q - dmin * m[j], 6-bit sc/m packed as get_scale_min_k4;
//               qs[32c + l] holds q[64c + l] (low nibble) and q[64c + 32 + l] (high nibble)
//   Q5_K  256:  { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }
//               as Q4_K with q in 0..31: bit 4 of q[64c + l] is bit 2c of qh[l], of q[64c + 32 + l] bit 2c+1
//   Q6_K  256:  { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d; }
//               16 sub-blocks of 16: w = d * scales[j] * (q - 32), q in 0..63; for half h (128 elements)
//               and l < 32: ql[64h + l] = q[l] | q[l + 64] << 4, ql[64h + 32 + l] = q[l + 32] | q[l + 96] << 4,
//               qh[32h + l] = q[l] >> 4 | (q[l + 32] >> 4) << 2 | (q[l + 64] >> 4) << 4 | (q[l + 96] >> 4) << 6
//   IQ4_NL 32:  { f16 d; u8 qs[16]; }                          w = d * kIq4nlGrid[q] (nibbles as Q4_0)
//   IQ4_XS 256: { f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]; }
//               8 sub-blocks of 32: w = d * (ls[j] - 32) * kIq4nlGrid[q], 6-bit ls: low 4 bits in
//               scales_l[j / 2] (nibble j % 2), high 2 bits at bit 2j of scales_h; nibbles per 32 as Q4_0
//   F16, F32    one element per "block"
//
// Encoders take one ROW (n elements, a multiple of the block size) and optional per-element importance
// (the row's input-column statistics: mean x^2 of the calibration activations, as llama.cpp's imatrix),
// and choose every scale by a weighted search that scores candidates with the exact decoder arithmetic
// (export/ggml_search.h). Without importance they weight elements as llama.cpp does without an imatrix.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace lq::exporter {

// Values are ggml's enum ggml_type ids (stored in GGUF tensor infos).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14, IQ4_NL = 20, IQ4_XS = 23
};

struct GgmlTypeTraits {
  GgmlType type;
  const char* name;      // "q4_0", as the CLI spells it
  int64_t block_elems;   // elements per block
  size_t block_bytes;    // bytes per block
  // Encodes one row of n elements (a multiple of block_elems) into n / block_elems blocks. `importance`
  // (n values, >= 0) or nullptr.
  void (*encode)(const float* x, int64_t n, uint8_t* dst, const float* importance);
  // Decodes n elements back into f32.
  void (*decode)(const uint8_t* src, int64_t n, float* y);
  // As encode, for a part of a row (whole blocks): `row_mean_sq` is the whole row's mean x^2, which
  // Q4_0 / Q4_1 weigh elements with (the other types use their block's own statistics).
  void (*encode_part)(const float* x, int64_t n, uint8_t* dst, const float* importance, float row_mean_sq);
  // The code grid of the quantized types (n_codes = 0 for f32 / f16): element i of a block decodes to
  // a[i] * grid(code) + b[i], bit for bit as `decode` computes it, with (a, b) from the block's scale
  // fields (`block_affine`, block_elems values each) and grid(c) = nl_grid[c] (IQ4: kIq4nlGrid) or
  // c - grid_zero. `set_codes` rewrites a block's code fields (codes 0..n_codes-1), leaving its scales.
  int n_codes;
  int grid_zero;
  const int8_t* nl_grid;
  void (*block_affine)(const uint8_t* block, float* a, float* b);
  void (*set_codes)(uint8_t* block, const uint8_t* codes);
};

const GgmlTypeTraits& ggml_traits(GgmlType t);
const char* ggml_type_name(GgmlType t);
// Parses a type name ("f32", "f16", "q8_0", "q4_0", "q4_1", "q4_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs");
// throws lq::Error naming `where` otherwise.
GgmlType parse_ggml_type(const std::string& name, const std::string& where);
// Bytes of a row of `n` elements; throws when n is not a multiple of the block size.
size_t ggml_row_bytes(GgmlType t, int64_t n, const std::string& where);
// Bits per weight of the type (block bytes * 8 / block elements).
double ggml_bits_per_weight(GgmlType t);

// The IQ4_NL / IQ4_XS non-linear grid (ggml's kvalues_iq4nl).
extern const int8_t kIq4nlGrid[16];

// Q4_K / Q5_K 6-bit scale/min packing (ggml's get_scale_min_k4), exposed for tests.
void q4k_pack_scales(const uint8_t sc[8], const uint8_t m[8], uint8_t packed[12]);
void q4k_unpack_scale_min(int j, const uint8_t packed[12], uint8_t* sc, uint8_t* m);

// How encoders turn importance into per-element weights (a process-wide setting for experiments;
// default LlamaCpp): LlamaCpp weights element i by imp[i] * sqrt(sigma2 + x[i]^2) (sigma2 from the
// block or row, as ggml-quants.c), Plain by imp[i] alone (the diagonal of E[x x^T]).
enum class ImportanceWeighting { LlamaCpp, Plain };
void set_importance_weighting(ImportanceWeighting w);
ImportanceWeighting importance_weighting();

}  // namespace lq::exporter
