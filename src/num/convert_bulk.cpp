// Bulk f32 <-> bf16 / f16 conversion with run-time dispatch. The AVX2 bf16 paths reproduce the scalar
// bit manipulation lane by lane; the f16 paths use the F16C instructions, whose IEEE round-to-nearest-
// even (and NaN quieting) the scalar code matches. Tails go through the scalar functions, so every
// element is bit-identical whatever the path (tests/num/convert_bulk_test.cpp checks this).
#include "num/formats.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace lq::num {

namespace {

#if defined(__x86_64__) || defined(__i386__)
#define LQ_X86 1

// Destinations at least this large (beyond the 32 MiB L3 of the machines we target) are written
// with non-temporal stores: that skips reading every destination line into cache before it is
// overwritten, which is what lets glibc's memcpy move large buffers faster than plain stores.
constexpr size_t kStreamingStoreBytes = size_t(16) << 20;

template <bool kStream>
__attribute__((target("avx2"))) inline void store256(void* p, __m256i v) {
  if constexpr (kStream) _mm256_stream_si256(static_cast<__m256i*>(p), v);
  else _mm256_storeu_si256(static_cast<__m256i*>(p), v);
}
template <bool kStream>
__attribute__((target("avx2"))) inline void store128(void* p, __m128i v) {
  if constexpr (kStream) _mm_stream_si128(static_cast<__m128i*>(p), v);
  else _mm_storeu_si128(static_cast<__m128i*>(p), v);
}

// Splits [0, n) into a scalar head (aligning dst to 32 bytes when streaming), a middle of whole
// 16-element groups for the vector body, and a scalar tail.
template <class Src, class Dst, void (*BodyPlain)(const Src*, Dst*, size_t),
          void (*BodyStream)(const Src*, Dst*, size_t)>
void run_bulk(const Src* src, Dst* dst, size_t n, void (*scalar_loop)(const Src*, Dst*, size_t)) {
  size_t head = 0;
  const uintptr_t misalign = reinterpret_cast<uintptr_t>(dst) % 32;
  const bool stream = n * sizeof(Dst) >= kStreamingStoreBytes && misalign % sizeof(Dst) == 0;
  if (stream) head = misalign == 0 ? 0 : (32 - misalign) / sizeof(Dst);
  scalar_loop(src, dst, head);
  const size_t body = (n - head) / 16 * 16;
  if (stream) {
    BodyStream(src + head, dst + head, body);
    _mm_sfence();  // order the non-temporal stores before anything the caller does next
  } else {
    BodyPlain(src + head, dst + head, body);
  }
  scalar_loop(src + head + body, dst + head + body, n - head - body);
}

// Bodies: n is a multiple of 16; with kStream, dst is 32-byte aligned.
template <bool kStream>
__attribute__((target("avx2"))) void bf16_to_f32_body(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    const __m256i lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(h));
    const __m256i hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1));
    store256<kStream>(dst + i, _mm256_slli_epi32(lo, 16));
    store256<kStream>(dst + i + 8, _mm256_slli_epi32(hi, 16));
  }
}

// Eight f32 bit patterns -> eight bf16 codes in the low halves of 32-bit lanes, by the scalar
// f32_to_bf16 rule: RNE on the bit pattern, NaN -> (bits >> 16) | 0x40 (quiet). NaN lanes are rare,
// so they are patched only when a group of 16 has any (the common path skips 3 ops per vector).
__attribute__((target("avx2"))) inline __m256i bf16_rounded_avx2(__m256i u) {
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  return _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
}
__attribute__((target("avx2"))) inline __m256i nan_lanes_avx2(__m256i u) {
  const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
  return _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
}
__attribute__((target("avx2"))) inline __m256i patch_nans_avx2(__m256i rounded, __m256i u,
                                                                __m256i nan) {
  const __m256i quiet_nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(rounded, quiet_nan, nan);
}

template <bool kStream>
__attribute__((target("avx2"))) void f32_to_bf16_body(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; i += 16) {
    const __m256i ua = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    const __m256i ub = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 8));
    __m256i a = bf16_rounded_avx2(ua), b = bf16_rounded_avx2(ub);
    const __m256i nan_a = nan_lanes_avx2(ua), nan_b = nan_lanes_avx2(ub);
    const __m256i any_nan = _mm256_or_si256(nan_a, nan_b);
    if (!_mm256_testz_si256(any_nan, any_nan)) [[unlikely]] {
      a = patch_nans_avx2(a, ua, nan_a);
      b = patch_nans_avx2(b, ub, nan_b);
    }
    // packus works per 128-bit lane: [a0-3 b0-3 a4-7 b4-7]; restore element order across lanes.
    store256<kStream>(dst + i, _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8));
  }
}

template <bool kStream>
__attribute__((target("avx2,f16c"))) void f16_to_f32_body(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; i += 16) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 8));
    store256<kStream>(dst + i, _mm256_castps_si256(_mm256_cvtph_ps(a)));
    store256<kStream>(dst + i + 8, _mm256_castps_si256(_mm256_cvtph_ps(b)));
  }
}

template <bool kStream>
__attribute__((target("avx2,f16c"))) void f32_to_f16_body(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; i += 16) {
    store128<kStream>(dst + i, _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    store128<kStream>(dst + i + 8,
                      _mm256_cvtps_ph(_mm256_loadu_ps(src + i + 8), _MM_FROUND_TO_NEAREST_INT));
  }
}

void bf16_to_f32_avx2(const uint16_t* src, float* dst, size_t n) {
  run_bulk<uint16_t, float, bf16_to_f32_body<false>, bf16_to_f32_body<true>>(src, dst, n,
                                                                             scalar::bf16_to_f32);
}
void f32_to_bf16_avx2(const float* src, uint16_t* dst, size_t n) {
  run_bulk<float, uint16_t, f32_to_bf16_body<false>, f32_to_bf16_body<true>>(src, dst, n,
                                                                             scalar::f32_to_bf16);
}
void f16_to_f32_f16c(const uint16_t* src, float* dst, size_t n) {
  run_bulk<uint16_t, float, f16_to_f32_body<false>, f16_to_f32_body<true>>(src, dst, n,
                                                                           scalar::f16_to_f32);
}
void f32_to_f16_f16c(const float* src, uint16_t* dst, size_t n) {
  run_bulk<float, uint16_t, f32_to_f16_body<false>, f32_to_f16_body<true>>(src, dst, n,
                                                                           scalar::f32_to_f16);
}
#endif

struct BulkPaths {
  void (*bf16_to_f32)(const uint16_t*, float*, size_t) = scalar::bf16_to_f32;
  void (*f32_to_bf16)(const float*, uint16_t*, size_t) = scalar::f32_to_bf16;
  void (*f16_to_f32)(const uint16_t*, float*, size_t) = scalar::f16_to_f32;
  void (*f32_to_f16)(const float*, uint16_t*, size_t) = scalar::f32_to_f16;
  const char* name = "scalar";
};

#ifdef LQ_X86
// F16C from CPUID leaf 1 (ECX bit 29): clang 14 does not know the "f16c" name for __builtin_cpu_supports.
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

BulkPaths select_paths() {
  BulkPaths p;
#ifdef LQ_X86
  // The f16 paths need AVX2 only for the loop structure; requiring both keeps one path name.
  if (__builtin_cpu_supports("avx2") && cpu_has_f16c()) {
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
