#include "forward/text.h"

#include "io/error.h"

namespace lq::fwd {

int32_t argmax_masked(const float* logits, int64_t n, int64_t limit) {
  const int64_t end = limit > 0 && limit < n ? limit : n;
  int64_t best = 0;
  for (int64_t i = 1; i < end; ++i)
    if (logits[i] > logits[best]) best = i;
  return int32_t(best);
}

namespace {

// Logits of the last row of a chunk's final-normed output.
int32_t next_token(const Engine& e, const std::vector<float>& normed, int64_t rows, const GreedyOptions& o) {
  const int64_t H = e.config().hidden_size;
  const std::vector<float> logits = e.logits(normed.data() + (rows - 1) * H, 1);
  return argmax_masked(logits.data(), int64_t(logits.size()), o.vocab_limit);
}

}  // namespace

std::vector<int32_t> greedy_decode(const Engine& e, const std::vector<int32_t>& prompt, const GreedyOptions& o) {
  if (prompt.empty()) fail("greedy_decode", "empty prompt");
  const int64_t limit = e.config().max_position_embeddings;
  if (int64_t(prompt.size()) > limit)
    fail("greedy_decode", "prompt has " + std::to_string(prompt.size()) + " tokens, more than max_position_embeddings = " +
                              std::to_string(limit));
  std::vector<int32_t> seq = prompt, out;
  KvCache cache;
  const int64_t n0 = int64_t(prompt.size());
  std::vector<float> normed = e.forward(text_chunk(e, seq, text_positions(n0), {{n0, SplitMode::Causal}}),
                                        o.use_cache ? &cache : nullptr, o.use_cache ? CacheWrite::Append : CacheWrite::No);
  int64_t rows = n0;
  while (int(out.size()) < o.max_new_tokens) {
    const int32_t tok = next_token(e, normed, rows, o);
    if (tok == o.stop_id) break;
    out.push_back(tok);
    seq.push_back(tok);
    if (int(out.size()) == o.max_new_tokens || int64_t(seq.size()) > limit) break;
    const int64_t n = int64_t(seq.size());
    if (o.use_cache) {
      normed = e.forward(text_chunk(e, {tok}, text_positions(1, int32_t(n - 1)), {{1, SplitMode::Causal}}), &cache,
                         CacheWrite::Append);
      rows = 1;
    } else {
      normed = e.forward(text_chunk(e, seq, text_positions(n), {{n, SplitMode::Causal}}), nullptr, CacheWrite::No);
      rows = n;
    }
  }
  return out;
}

}  // namespace lq::fwd
