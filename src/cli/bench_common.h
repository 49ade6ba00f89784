// Pieces shared by the `lance-quant bench` subcommands.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "forward/forward.h"
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

// Final-normed hidden states of `ids` fed as one causal text chunk at positions start.. into `cache`:
// the prefill (the whole prompt) and each decode step (one token) of the benchmarks.
inline std::vector<float> feed_text(const fwd::Engine& e, const std::vector<int32_t>& ids, int64_t start,
                                    fwd::KvCache& cache) {
  const int64_t n = int64_t(ids.size());
  return e.forward(fwd::text_chunk(e, ids, fwd::text_positions(n, int32_t(start)), {{n, fwd::SplitMode::Causal}}), &cache,
                   fwd::CacheWrite::Append);
}

}  // namespace lq::cli::bench
