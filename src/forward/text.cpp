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
  const int64_t n0 = int64_t(prompt.size());
  return greedy_decode_chunk(e, text_chunk(e, prompt, text_positions(n0), {{n0, SplitMode::Causal}}), int32_t(n0), o);
}

std::vector<int32_t> greedy_decode_chunk(const Engine& e, const Chunk& prompt, int32_t next_position, const GreedyOptions& o) {
  if (prompt.rows() == 0) fail("greedy_decode", "empty prompt");
  const int64_t limit = e.config().max_position_embeddings, H = e.config().hidden_size;
  if (next_position > limit)
    fail("greedy_decode", "the prompt reaches position " + std::to_string(next_position) +
                              ", beyond max_position_embeddings = " + std::to_string(limit));
  std::vector<int32_t> out;
  KvCache cache;
  std::vector<float> normed = e.forward(prompt, o.use_cache ? &cache : nullptr, o.use_cache ? CacheWrite::Append : CacheWrite::No);
  int64_t rows = prompt.rows();
  while (int(out.size()) < o.max_new_tokens) {
    const int32_t tok = next_token(e, normed, rows, o);
    if (tok == o.stop_id) break;
    out.push_back(tok);
    const int32_t pos = next_position + int32_t(out.size()) - 1;
    if (int(out.size()) == o.max_new_tokens || pos + 1 > limit) break;
    if (o.use_cache) {
      normed = e.forward(text_chunk(e, {tok}, text_positions(1, pos), {{1, SplitMode::Causal}}), &cache, CacheWrite::Append);
      rows = 1;
    } else {  // the prompt chunk, then the generated tokens as one causal split
      Chunk all = prompt;
      const int64_t g = int64_t(out.size());
      all.embeddings.resize(size_t((prompt.rows() + g) * H));
      e.embed_tokens(out.data(), g, all.embeddings.data() + prompt.rows() * H);
      all.paths.resize(size_t(prompt.rows() + g), Path::Und);
      const auto gp = text_positions(g, next_position);
      all.positions.insert(all.positions.end(), gp.begin(), gp.end());
      all.splits.push_back({g, SplitMode::Causal});
      normed = e.forward(all, nullptr, CacheWrite::No);
      rows = all.rows();
    }
  }
  return out;
}

}  // namespace lq::fwd
