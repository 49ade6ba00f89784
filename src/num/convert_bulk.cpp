// Bulk f32 <-> bf16 / f16 conversion with run-time dispatch. The AVX2 bf16 paths reproduce the scalar
// bit manipulation lane by lane; the f16 paths use the F16C instructions, whose IEEE round-to-nearest-
// even (and NaN quieting) the scalar code matches. Tails go through the scalar functions, so every
// element is bit-identical whatever the path (tests/num/convert_bulk_test.cpp checks this).
#include "num/formats.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace lq::num {

namespace {

#if defined(__x86_64__) || defined(__i386__)
#define LQ_X86 1

__attribute__((target("avx2"))) void bf16_to_f32_avx2(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    const __m256i lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(h));
    const __m256i hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_slli_epi32(lo, 16));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i + 8), _mm256_slli_epi32(hi, 16));
  }
  scalar::bf16_to_f32(src + i, dst + i, n - i);
}

// Eight f32 bit patterns -> eight bf16 codes in the low halves of 32-bit lanes (same rule as the
// scalar f32_to_bf16: RNE, NaN -> quiet NaN).
__attribute__((target("avx2"))) inline __m256i bf16_codes_avx2(__m256i u) {
  const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
  const __m256i is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
  const __m256i quiet_nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(rounded, quiet_nan, is_nan);
}

__attribute__((target("avx2"))) void f32_to_bf16_avx2(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i a = bf16_codes_avx2(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    const __m256i b =
        bf16_codes_avx2(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 8)));
    // packus works per 128-bit lane: [a0-3 b0-3 a4-7 b4-7]; restore element order across lanes.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), packed);
  }
  scalar::f32_to_bf16(src + i, dst + i, n - i);
}

__attribute__((target("avx2,f16c"))) void f16_to_f32_f16c(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 8));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(a));
    _mm256_storeu_ps(dst + i + 8, _mm256_cvtph_ps(b));
  }
  scalar::f16_to_f32(src + i, dst + i, n - i);
}

__attribute__((target("avx2,f16c"))) void f32_to_f16_f16c(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i a = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    const __m128i b = _mm256_cvtps_ph(_mm256_loadu_ps(src + i + 8), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), a);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i + 8), b);
  }
  scalar::f32_to_f16(src + i, dst + i, n - i);
}
#endif

struct BulkPaths {
  void (*bf16_to_f32)(const uint16_t*, float*, size_t) = scalar::bf16_to_f32;
  void (*f32_to_bf16)(const float*, uint16_t*, size_t) = scalar::f32_to_bf16;
  void (*f16_to_f32)(const uint16_t*, float*, size_t) = scalar::f16_to_f32;
  void (*f32_to_f16)(const float*, uint16_t*, size_t) = scalar::f32_to_f16;
  const char* name = "scalar";
};

BulkPaths select_paths() {
  BulkPaths p;
#ifdef LQ_X86
  // The f16 paths need AVX2 only for the loop structure; requiring both keeps one path name.
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c")) {
    p = {bf16_to_f32_avx2, f32_to_bf16_avx2, f16_to_f32_f16c, f32_to_f16_f16c, "avx2+f16c"};
  }
#endif
  return p;
}

const BulkPaths& paths() {
  static const BulkPaths p = select_paths();
  return p;
}

}  // namespace

void bf16_to_f32(const uint16_t* src, float* dst, size_t n) { paths().bf16_to_f32(src, dst, n); }
void f32_to_bf16(const float* src, uint16_t* dst, size_t n) { paths().f32_to_bf16(src, dst, n); }
void f16_to_f32(const uint16_t* src, float* dst, size_t n) { paths().f16_to_f32(src, dst, n); }
void f32_to_f16(const float* src, uint16_t* dst, size_t n) { paths().f32_to_f16(src, dst, n); }
const char* convert_simd_path() { return paths().name; }

}  // namespace lq::num
