// The AVX-512 VNNI Lanes kernels differ from the "avx2-vnni" path the other tests run only in one
// instruction: vpdpbusd (_mm256_dpbusd_epi32) where the emulation adds madd(maddubs(a, x), 1) to
// the int32 accumulator. This checks that identity against SIMDe's independent implementation of
// the instruction (its portable code, so it runs on CPUs without AVX-512), over the operand ranges
// the kernels produce: unsigned multipliers 0..24 (INT4 codes 0..15, NVFP4's 2 e2m1 + 12) and
// int8 activations -127..127, plus the extremes of int32 accumulators a layer can reach.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>

#if __has_include(<simde/x86/avx512/dpbusd.h>)
#include <simde/x86/avx2.h>
#include <simde/x86/avx512/dpbusd.h>
#define LQ_HAVE_SIMDE 1
#endif

namespace {

#ifdef LQ_HAVE_SIMDE
simde__m256i random_bytes(std::mt19937& rng, int lo, int hi) {
  alignas(32) int8_t b[32];
  for (int8_t& v : b) v = int8_t(std::uniform_int_distribution<int>(lo, hi)(rng));
  return simde_mm256_load_si256(reinterpret_cast<const simde__m256i*>(b));
}

TEST(VnniSemantics, DpbusdEqualsTheAvx2Emulation) {
  std::mt19937 rng(7);
  const simde__m256i ones = simde_mm256_set1_epi16(1);
  for (int trial = 0; trial < 20000; ++trial) {
    const simde__m256i a = random_bytes(rng, 0, 24), x = random_bytes(rng, -127, 127);
    const int32_t start = trial % 3 == 0 ? 0 : trial % 3 == 1 ? 2000000000 : -2000000000;
    const simde__m256i acc = simde_mm256_set1_epi32(start + trial);
    const simde__m256i vnni = simde_mm256_dpbusd_epi32(acc, a, x);
    const simde__m256i emul = simde_mm256_add_epi32(acc, simde_mm256_madd_epi16(simde_mm256_maddubs_epi16(a, x), ones));
    alignas(32) int32_t u[8], v[8];
    simde_mm256_store_si256(reinterpret_cast<simde__m256i*>(u), vnni);
    simde_mm256_store_si256(reinterpret_cast<simde__m256i*>(v), emul);
    for (int k = 0; k < 8; ++k) ASSERT_EQ(u[k], v[k]) << "trial " << trial << " lane " << k;
  }
}
#else
TEST(VnniSemantics, DpbusdEqualsTheAvx2Emulation) {
  GTEST_SKIP() << "SIMDe (Debian libsimde-dev) is not installed: tools/install-deps.sh installs it";
}
#endif

}  // namespace
