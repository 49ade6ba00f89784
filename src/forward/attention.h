// Grouped-query attention over a packed sequence with Lance's split mask, without materialising an
// L x L mask: for each query the visible keys are a short list of contiguous ranges derived from
// the split descriptors.
//
// Mask (one sample): query q may attend key k iff (k <= q, or q and k share a full/noise split),
// and not (k is in a noise split that q is not in).
#pragma once
#include <cstdint>
#include <vector>

#include "forward/forward.h"

namespace lq::fwd {

struct AttentionShape {
  int num_heads = 0, num_kv_heads = 0, head_dim = 0;
};

struct KeyRange {
  int64_t begin = 0, end = 0;  // [begin, end) key rows
};

struct AttentionLayout {
  struct SplitSpan {
    int64_t start = 0, len = 0;
    SplitMode mode = SplitMode::Causal;
  };
  std::vector<SplitSpan> splits;    // over all key rows: cached prefix then the chunk
  std::vector<int32_t> query_split;  // split index of each chunk row
  int64_t prefix = 0;                // cached rows before the chunk
  int64_t rows = 0;                  // chunk rows (queries)
  int64_t keys() const { return prefix + rows; }
  // Visible key ranges of chunk row i (global query index prefix + i), ascending.
  void visible(int64_t i, std::vector<KeyRange>& out) const;
};

// `key_splits` cover prefix + rows key rows; the last `rows` of them are the chunk's queries.
AttentionLayout make_attention_layout(const std::vector<Split>& key_splits, int64_t prefix, int64_t rows);

// q: [rows, heads*hd], k/v: [keys, kv_heads*hd] (after RoPE), out: [rows, heads*hd].
// Scale 1/sqrt(hd), max-subtracted softmax, f32. From 8 query rows attention_blocked, below
// attention_rowwise; both within ~1e-6 relative of attention_ref (tests/forward/attention_test.cpp).
void attention(const AttentionShape& s, const AttentionLayout& layout, const float* q, const float* k,
               const float* v, float* out);
// Per query row and head, two passes over its visible keys (scores and max, then the weighted sum);
// threaded over (head, 16-row block). Decode and short chunks.
void attention_rowwise(const AttentionShape& s, const AttentionLayout& layout, const float* q, const float* k,
                       const float* v, float* out);
// Blocked ("flash") attention for long chunks (the latent noise blocks of t2i / t2v): blocks of 16
// query rows x one K/V head (its GQA group of query heads), keys in tiles of 64 over the union of
// the block's visible ranges, online softmax, AVX2 outer-product micro-kernels; never materialises
// more than a tile of scores. Threaded over (block, K/V head). Needs AVX2 + FMA and head_dim % 16 ==
// 0, else runs attention_rowwise.
void attention_blocked(const AttentionShape& s, const AttentionLayout& layout, const float* q, const float* k,
                       const float* v, float* out);

// Plain reference: materialises the boolean mask from the rule above (tests only).
void attention_ref(const AttentionShape& s, const std::vector<Split>& key_splits, int64_t prefix, int64_t rows,
                   const float* q, const float* k, const float* v, float* out);

}  // namespace lq::fwd
