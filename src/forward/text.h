// Greedy text decoding on the und path: prefill the prompt into a KV cache, then one token at a time.
#pragma once
#include <cstdint>
#include <vector>

#include "forward/forward.h"

namespace lq::fwd {

struct GreedyOptions {
  int max_new_tokens = 256;
  int32_t stop_id = -1;     // generation ends after emitting this id (not included); -1: none
  int64_t vocab_limit = 0;  // logits at ids >= this are masked (len(tokenizer)); 0 = no mask
  bool use_cache = true;    // false: recompute the whole sequence each step (reference)
};

// Index of the largest of logits[0 .. min(limit, n)) (first on ties).
int32_t argmax_masked(const float* logits, int64_t n, int64_t limit);

// Greedy continuation of `prompt` (positions 0.., causal). Throws lq::Error when the sequence would
// exceed max_position_embeddings.
std::vector<int32_t> greedy_decode(const Engine& e, const std::vector<int32_t>& prompt, const GreedyOptions& o);

// Greedy continuation of a prompt chunk with any rows, splits and positions (x2t: ViT rows in a full
// split); generated tokens are causal text at positions next_position, next_position + 1, ...
// Without the cache (o.use_cache false) every step reruns the prompt chunk plus the generated tokens.
std::vector<int32_t> greedy_decode_chunk(const Engine& e, const Chunk& prompt, int32_t next_position, const GreedyOptions& o);

}  // namespace lq::fwd
