// The x2t prompt: positions and mask against cases computed by hand from Lance's reference
// (get_rope_index, validation_dataset process_text_template / process_vit_video), the ViT rows'
// placement, and decoding: one-chunk prefill equals Lance's split-by-split KV prefill, cache equals
// recomputation.
#include <gtest/gtest.h>

#include <cmath>

#include "forward/attention.h"
#include "forward/forward.h"
#include "forward/text.h"
#include "forward/x2t.h"
#include "golden_util.h"
#include "io/error.h"
#include "test_paths.h"
#include "test_random.h"
#include "tokenizer/tokenizer.h"

namespace lq::fwd {
namespace {

// prefix = 3 tokens, rest = 4 tokens, merged grid (t, h, w) = (2, 2, 3), step 2. get_rope_index:
//   ed = first pad = 4 -> text [0, 1, 2, 3] (the prefix and <|vision_start|>), b = 4;
//   grid (4 + 2f, 4 + r, 4 + c); max = max(4 + 2, 4 + 1, 4 + 2) = 6 -> <|vision_end|> 7, rest 8..11.
TEST(X2tPrompt, PositionsAndSplitsHandComputed) {
  const X2tPrompt p = build_x2t_prompt({10, 11, 12}, {20, 21, 22, 23}, 90, 91, 92, {2, 2, 3}, 2);
  const std::vector<int32_t> ids = {10, 11, 12, 90, 91, 91, 91, 91, 91, 91, 91, 91, 91, 91, 91, 91, 92, 20, 21, 22, 23};
  EXPECT_EQ(p.ids, ids);
  EXPECT_EQ(p.vision_begin, 4);
  EXPECT_EQ(p.vision_tokens, 12);
  const std::vector<Position3> want = {
      {0, 0, 0}, {1, 1, 1}, {2, 2, 2}, {3, 3, 3},                          // prefix, <|vision_start|>
      {4, 4, 4}, {4, 4, 5}, {4, 4, 6}, {4, 5, 4}, {4, 5, 5}, {4, 5, 6},    // temporal patch 0
      {6, 4, 4}, {6, 4, 5}, {6, 4, 6}, {6, 5, 4}, {6, 5, 5}, {6, 5, 6},    // temporal patch 1 (step 2)
      {7, 7, 7}, {8, 8, 8}, {9, 9, 9}, {10, 10, 10}, {11, 11, 11}};        // <|vision_end|>, question..
  EXPECT_EQ(p.positions, want);
  EXPECT_EQ(p.next_position, 12);
  ASSERT_EQ(p.splits.size(), 3u);
  EXPECT_EQ(p.splits[0].len, 3);
  EXPECT_EQ(p.splits[0].mode, SplitMode::Causal);
  EXPECT_EQ(p.splits[1].len, 14);  // markers included
  EXPECT_EQ(p.splits[1].mode, SplitMode::Full);
  EXPECT_EQ(p.splits[2].len, 4);
  EXPECT_EQ(p.splits[2].mode, SplitMode::Causal);
  // A wide image: positions after the block follow the widest axis (w - 1 = 9 > 2 (t - 1) = 0).
  const X2tPrompt q = build_x2t_prompt({1}, {2}, 90, 91, 92, {1, 3, 10}, 2);
  EXPECT_EQ(q.positions.back(), (Position3{2 + 9 + 1 + 1, 2 + 9 + 1 + 1, 2 + 9 + 1 + 1}));
}

// Lance's mask: k visible to q iff k <= q or both in the same full split.
TEST(X2tPrompt, MaskBlockIsBidirectionalAndCausalToItsPrefix) {
  const X2tPrompt p = build_x2t_prompt({10, 11, 12}, {20, 21, 22, 23}, 90, 91, 92, {2, 2, 3}, 2);
  const AttentionLayout a = make_attention_layout(p.splits, 0, int64_t(p.ids.size()));
  std::vector<KeyRange> r;
  for (int64_t q = 0; q < int64_t(p.ids.size()); ++q) {
    a.visible(q, r);
    ASSERT_EQ(r.size(), 1u) << q;
    EXPECT_EQ(r[0].begin, 0);
    const int64_t want_end = q < 3 ? q + 1 : q < 17 ? 17 : q + 1;  // prefix causal; block (3..16) sees all of it
    EXPECT_EQ(r[0].end, want_end) << "query " << q;
  }
}

TEST(X2tPrompt, LanceTemplateTokens) {
  LQ_REQUIRE_SHARED();
  const std::string qwen = test::shared_dir() + "/data/qwen2.5-tokenizer";
  const tok::Tokenizer t = tok::Tokenizer::load(qwen);
  const X2tPrompt p = x2t_prompt(t, kX2tImageSystem, "What is on the table?", {1, 2, 2}, 2);
  // The text around the vision block is exactly Lance's rendered template (vision start/end ids 151652/151653,
  // <|video_pad|> 151656 for the K tokens).
  std::vector<int32_t> before(p.ids.begin(), p.ids.begin() + p.vision_begin);
  std::vector<int32_t> after(p.ids.begin() + p.vision_begin + p.vision_tokens, p.ids.end());
  EXPECT_EQ(t.decode(before), "<|im_start|>system\nLook at the image carefully and answer the question.<|im_end|>\n"
                              "<|im_start|>user\n<|vision_start|>");
  EXPECT_EQ(t.decode(after), "<|vision_end|>What is on the table?<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(p.ids[size_t(p.vision_begin) - 1], 151652);
  EXPECT_EQ(p.ids[size_t(p.vision_begin)], 151656);
  EXPECT_EQ(p.ids[size_t(p.vision_begin + p.vision_tokens)], 151653);
}

class X2tDecode : public ::testing::Test {
 protected:
  void SetUp() override {
    if (test::shared_dir().empty()) GTEST_SKIP() << "shared fixtures not found; skipping";
    e_ = std::make_unique<Engine>(Engine::load(test::lance_mini_dir()));
    tok_ = std::make_unique<tok::Tokenizer>(tok::Tokenizer::load(test::lance_mini_dir()));
  }
  std::unique_ptr<Engine> e_;
  std::unique_ptr<tok::Tokenizer> tok_;
};

TEST_F(X2tDecode, OneChunkPrefillEqualsLanceSplitBySplitPrefill) {
  const int64_t H = e_->config().hidden_size;
  const X2tPrompt p = x2t_prompt(*tok_, kX2tImageSystem, "what colour is the circle?", {1, 3, 4}, 2);
  const auto vit = test::gaussian(size_t(p.vision_tokens * H), 1.0f, 7);
  const Chunk c = x2t_chunk(*e_, p, vit.data());
  // The pad rows hold the ViT rows, the others the token embeddings.
  std::vector<float> vs(static_cast<size_t>(H));
  e_->embed_tokens(&p.ids[size_t(p.vision_begin) - 1], 1, vs.data());
  EXPECT_EQ(std::vector<float>(c.embeddings.begin() + (p.vision_begin - 1) * H, c.embeddings.begin() + p.vision_begin * H), vs);
  EXPECT_EQ(std::vector<float>(c.embeddings.begin() + p.vision_begin * H, c.embeddings.begin() + (p.vision_begin + 1) * H),
            std::vector<float>(vit.begin(), vit.begin() + H));
  KvCache one;
  const auto all = e_->forward(c, &one, CacheWrite::Append);
  // Lance (validation_und_KVcache): prefix, then the full block (is_causal=False), then the rest, each into the cache.
  KvCache staged;
  int64_t start = 0;
  std::vector<float> last;
  for (const Split& s : p.splits) {
    Chunk part;
    part.embeddings.assign(c.embeddings.begin() + start * H, c.embeddings.begin() + (start + s.len) * H);
    part.paths.assign(size_t(s.len), Path::Und);
    part.positions.assign(c.positions.begin() + start, c.positions.begin() + start + s.len);
    part.splits = {s};
    last = e_->forward(part, &staged, CacheWrite::Append);
    start += s.len;
  }
  const int64_t n = c.rows();
  const auto a = e_->logits(all.data() + (n - 1) * H, 1), b = e_->logits(last.data() + (p.splits.back().len - 1) * H, 1);
  EXPECT_LT(test::rel_max_err(a, b), 1e-5);
}

TEST_F(X2tDecode, CacheEqualsRecomputation) {
  const int64_t H = e_->config().hidden_size;
  const X2tPrompt p = x2t_prompt(*tok_, kX2tVideoSystem, "describe the motion", {2, 2, 3}, 2);
  const auto vit = test::gaussian(size_t(p.vision_tokens * H), 1.0f, 9);
  const Chunk c = x2t_chunk(*e_, p, vit.data());
  GreedyOptions g;
  g.max_new_tokens = 12;
  g.vocab_limit = e_->config().len_tokenizer;
  const auto cached = greedy_decode_chunk(*e_, c, p.next_position, g);
  g.use_cache = false;
  const auto recomputed = greedy_decode_chunk(*e_, c, p.next_position, g);
  EXPECT_EQ(cached.size(), 12u);
  EXPECT_EQ(cached, recomputed);
}

}  // namespace
}  // namespace lq::fwd
