// Seeded Gaussian test data shared by the test suites (one generator, so a seed means the same values
// everywhere).
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace lq::test {

// n values from N(0, stddev^2), std::mt19937(seed) with std::normal_distribution<float>.
inline std::vector<float> gaussian(size_t n, float stddev, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace lq::test
