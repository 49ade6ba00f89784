// Seeded N(0, 0.02^2) weights of one shape, f32 and bf16, cached per shape (shared by the bench programs).
#pragma once
#include <cstdint>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include "num/formats.h"

namespace lq::bench {

struct Weights {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
};

inline const Weights& weights(int64_t in, int64_t out) {
  static std::map<std::pair<int64_t, int64_t>, Weights> cache;
  auto& w = cache[{in, out}];
  if (w.f32.empty()) {
    w.f32.resize(size_t(in * out));
    std::mt19937 rng(3);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    for (auto& v : w.f32) v = normal(rng);
    w.bf16.resize(w.f32.size());
    lq::num::f32_to_bf16(w.f32.data(), w.bf16.data(), w.f32.size());
  }
  return w;
}

}  // namespace lq::bench
