// The ggml tensor types this exporter writes, as one table (ggml's "type traits" idea): id, name,
// block size, bytes per block, a reference encoder and decoder. Block layouts follow ggml-common.h
// (little-endian, packed):
//   Q8_0  block of 32: { f16 d; int8 qs[32]; }                 w = d * qs[i]
//   Q4_0  block of 32: { f16 d; uint8 qs[16]; }                w = d * (q - 8); q[i] in the low nibble
//                      of qs[i], q[i + 16] in the high nibble
//   Q4_K  block of 256 (8 sub-blocks of 32): { f16 d; f16 dmin; uint8 scales[12]; uint8 qs[128]; }
//                      w = d * sc[j] * q - dmin * m[j]; 6-bit sc/m packed as in get_scale_min_k4;
//                      qs[32c + l] holds q[64c + l] (low nibble) and q[64c + 32 + l] (high nibble)
//   F16, F32           one element per "block"
// The encoders are plain scalar code; they are the reference the tests compare against.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace lq::exporter {

// Values are ggml's enum ggml_type ids (stored in GGUF tensor infos).
enum class GgmlType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q8_0 = 8, Q4_K = 12 };

struct GgmlTypeTraits {
  GgmlType type;
  const char* name;      // "q4_0", as the CLI spells it
  int64_t block_elems;   // elements per block
  size_t block_bytes;    // bytes per block
  // Encodes n elements (a multiple of block_elems) into n / block_elems blocks.
  void (*encode)(const float* x, int64_t n, uint8_t* dst);
  // Decodes n elements back into f32.
  void (*decode)(const uint8_t* src, int64_t n, float* y);
};

const GgmlTypeTraits& ggml_traits(GgmlType t);
// Parses "f32", "f16", "q4_0", "q8_0", "q4_k"; throws lq::Error naming `where` otherwise.
GgmlType parse_ggml_type(const std::string& name, const std::string& where);
// Bytes of a row of `n` elements; throws when n is not a multiple of the block size.
size_t ggml_row_bytes(GgmlType t, int64_t n, const std::string& where);

// Q4_K's 6-bit scale/min packing (ggml's get_scale_min_k4), exposed for tests.
void q4k_pack_scales(const uint8_t sc[8], const uint8_t m[8], uint8_t packed[12]);
void q4k_unpack_scale_min(int j, const uint8_t packed[12], uint8_t* sc, uint8_t* m);

}  // namespace lq::exporter
