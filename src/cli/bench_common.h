// Pieces shared by the `lance-quant bench` subcommands.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace lq::cli::bench {

using Clock = std::chrono::steady_clock;
inline double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// A deterministic prompt of n token ids spread over the ids the tokenizer can produce (so every
// benchmark of a model reads the same embedding rows).
inline std::vector<int32_t> synthetic_prompt_ids(const model::ModelConfig& c, int64_t n) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  const int64_t id_range = std::min<int64_t>(c.len_tokenizer > 0 ? c.len_tokenizer : c.vocab_size, c.vocab_size);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7919 + 13) % size_t(id_range));
  return ids;
}

}  // namespace lq::cli::bench
