// Edit sequences against cases worked out by hand from Lance's reference code (validation_dataset.py
// process_text_template for splits and modality codes, qwen2_navit.py get_rope_index for positions,
// common.py shift_position_ids for MaPE, lance.py validation_gen_KVcache for the two CFG branches),
// with and without the ViT reference; the t2i layout through the same builder equals build_t2i_prompt;
// prefix chunks route clean latents to the gen path.
#include <gtest/gtest.h>

#include <vector>

#include "forward/attention.h"
#include "forward/gen_sequence.h"
#include "forward/t2i.h"
#include "io/error.h"
#include "model/synth.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace {

using namespace lq::fwd;
using P = Position3;

constexpr int32_t VS = 900, VE = 901, PAD = 902;

std::vector<int32_t> ids(int n, int32_t base) {
  std::vector<int32_t> v;
  for (int i = 0; i < n; ++i) v.push_back(base + i);
  return v;
}

// s1 (5 tokens), [ViT block], source block 1x2x3, caption (4), s3 (3), target block 1x2x3, tail (1).
std::vector<SeqPart> edit_parts(bool vit) {
  std::vector<SeqPart> p;
  p.push_back(SeqPart::text(ids(5, 10)));
  if (vit) p.push_back(SeqPart::block(kVitRef, {1, 2, 2}, SplitMode::Full));
  p.push_back(SeqPart::block(kEditSource, {1, 2, 3}, SplitMode::Full));
  p.push_back(SeqPart::text(ids(4, 20), kCaption));
  p.push_back(SeqPart::text(ids(3, 30)));
  p.push_back(SeqPart::block(kNoiseTarget, {1, 2, 3}, SplitMode::Noise));
  p.push_back(SeqPart::text(ids(1, 40)));
  return p;
}

// A 1x2x3 block whose <|vision_start|> sits at s: latents at (s+1, s+1+r, s+1+c), end at s+1+2+1.
std::vector<P> block123(int32_t s) {
  const int32_t b = s + 1;
  return {{s, s, s},         {b, b, b},     {b, b, b + 1}, {b, b, b + 2}, {b, b + 1, b},
          {b, b + 1, b + 1}, {b, b + 1, b + 2}, {b + 3, b + 3, b + 3}};
}

std::vector<P> text(int32_t from, int n) {
  std::vector<P> v;
  for (int i = 0; i < n; ++i) v.push_back({from + i, from + i, from + i});
  return v;
}

template <class T>
std::vector<T> cat(std::initializer_list<std::vector<T>> parts) {
  std::vector<T> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(GenSequence, EditWithoutVit) {
  const GenLayout l = build_gen_layout(edit_parts(false), VS, VE, PAD);
  // get_rope_index: s1 0..4, source block at 5 (end 9), caption 10..13, s3 14..16, target block at 17
  // (end 21), tail 22; MaPE: the target (modality 1, 8 tokens) copies the source (modality 2, 8 tokens).
  EXPECT_EQ(l.positions, cat<P>({text(0, 5), block123(5), text(10, 4), text(14, 3), block123(5), text(22, 1)}));
  EXPECT_EQ(l.modality, cat<int8_t>({std::vector<int8_t>(5, -1), std::vector<int8_t>(8, 2), std::vector<int8_t>(4, 0),
                                     std::vector<int8_t>(3, -1), std::vector<int8_t>(8, 1), std::vector<int8_t>(1, -1)}));
  ASSERT_EQ(l.splits.size(), 6u);
  const std::vector<std::pair<int64_t, SplitMode>> want{{5, SplitMode::Causal}, {8, SplitMode::Full},  {4, SplitMode::Causal},
                                                        {3, SplitMode::Causal}, {8, SplitMode::Noise}, {1, SplitMode::Causal}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(l.splits[i].len, want[i].first) << i;
    EXPECT_EQ(l.splits[i].mode, want[i].second) << i;
  }
  EXPECT_EQ(l.ids[5], VS);
  EXPECT_EQ(l.ids[6], PAD);
  EXPECT_EQ(l.ids[12], VE);
}

TEST(GenSequence, EditWithVitReference) {
  const GenLayout l = build_gen_layout(edit_parts(true), VS, VE, PAD);
  // ViT block 1x2x2 at 5: tokens (6, 6+r, 6+c), end (8,8,8); MaPE moves its t axis so its first token
  // has t = 1000 (+995); source at 9 (end 13), caption 14..17, s3 18..20, target at 21 -> copies source.
  const std::vector<P> vit{{1000, 5, 5}, {1001, 6, 6}, {1001, 6, 7}, {1001, 7, 6}, {1001, 7, 7}, {1003, 8, 8}};
  EXPECT_EQ(l.positions, cat<P>({text(0, 5), vit, block123(9), text(14, 4), text(18, 3), block123(9), text(26, 1)}));
  EXPECT_EQ(std::count(l.modality.begin(), l.modality.end(), int8_t(4)), 6);
}

TEST(GenSequence, NoShiftWithoutFullSplit) {
  // t2i: no full / full_noise split, so get_rope_index positions stay (Lance applies MaPE to edits only).
  std::vector<SeqPart> p{SeqPart::text(ids(5, 10)), SeqPart::text(ids(4, 20), kCaption), SeqPart::text(ids(3, 30)),
                         SeqPart::block(kNoiseTarget, {1, 2, 3}, SplitMode::Noise)};
  const GenLayout l = build_gen_layout(p, VS, VE, PAD);
  const T2iPrompt t = build_t2i_prompt(ids(5, 10), ids(4, 20), ids(3, 30), VS, VE, {1, 2, 3});
  std::vector<P> want = t.cond.prefix_positions;
  want.insert(want.end(), t.cond.noise_positions.begin(), t.cond.noise_positions.end());
  EXPECT_EQ(l.positions, want);
}

TEST(GenSequence, BranchesFollowTheKvCachePath) {
  const ConditionedPrompt cp(edit_parts(false), VS, VE, PAD);
  const T2iPrompt p = cp.sampler_prompt();
  // cond prefix: s1, source block, caption, s3 with their positions; noise block = the source's positions.
  EXPECT_EQ(p.cond.prefix_positions, cat<P>({text(0, 5), block123(5), text(10, 4), text(14, 3)}));
  EXPECT_EQ(p.cond.noise_positions, block123(5));
  // uncond prefix: the caption split dropped, the conditional positions kept (s3 stays at 14..16);
  // its noise block comes from the caption-free sequence (target at 13 there), where MaPE again copies
  // the source block's positions.
  EXPECT_EQ(p.uncond.prefix_positions, cat<P>({text(0, 5), block123(5), text(14, 3)}));
  EXPECT_EQ(p.uncond.noise_positions, block123(5));
  const GenLayout& u = cp.uncond();
  EXPECT_EQ(u.positions, cat<P>({text(0, 5), block123(5), text(10, 3), block123(5), text(18, 1)}));
  ASSERT_EQ(p.uncond.prefix_splits.size(), 3u);
  EXPECT_EQ(p.uncond.prefix_splits[1].mode, SplitMode::Full);
  EXPECT_EQ(p.cond.prefix_ids.size(), 20u);
  EXPECT_EQ(p.uncond.prefix_ids.size(), 16u);
}

TEST(GenSequence, RejectsBadParts) {
  std::vector<SeqPart> none{SeqPart::text(ids(3, 1))};
  EXPECT_THROW(ConditionedPrompt(none, VS, VE, PAD), lq::Error);
  std::vector<SeqPart> after{SeqPart::block(kNoiseTarget, {1, 1, 1}, SplitMode::Noise), SeqPart::block(kEditSource, {1, 1, 1}, SplitMode::Full)};
  EXPECT_THROW(ConditionedPrompt(after, VS, VE, PAD), lq::Error);
}

TEST(GenSequence, PrefixChunkRoutesCleanLatentsToGen) {
  lq::model::SynthOptions o;
  o.preset = "tiny";
  o.out_dir = lq::test::scratch_dir("gen_sequence_model");
  o.force = true;
  lq::model::synthesize(o);
  const Engine e = Engine::load(o.out_dir);
  const int64_t C = e.config().latent_channels, H = e.config().hidden_size;
  const ConditionedPrompt cp(edit_parts(false), 5, 6, 7);  // small token ids exist in any vocabulary
  const std::vector<float> src(size_t(6 * C), 0.25f);
  const Chunk c = cp.prefix_chunk(e, true, {&src}, {});
  ASSERT_EQ(c.rows(), 20);
  for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(c.paths[size_t(i)], i >= 6 && i < 12 ? Path::Gen : Path::Und) << i;
  // Latent rows are vae2llm(x) + TimeEmb(0) + LPE (tau = 0, the block's own grid).
  const std::vector<float> want = e.latent_embeddings(src.data(), {1, 2, 3}, 0.0);
  for (int64_t k = 0; k < 6 * H; ++k) ASSERT_EQ(c.embeddings[size_t(6 * H + k)], want[size_t(k)]);
  const Chunk u = cp.prefix_chunk(e, false, {&src}, {});
  EXPECT_EQ(u.rows(), 16);
  EXPECT_EQ(u.positions, cp.sampler_prompt().uncond.prefix_positions);
  EXPECT_THROW(cp.prefix_chunk(e, true, {}, {}), lq::Error);  // the source latents are required
}

// The edit with a ViT reference (validation_dataset.py tiv2v_sample: ViT block, then the clean source
// block, in the user turn): s1 0..4, ViT 5..10, source 11..18, caption 19..22, s3 23..25, target 26..33,
// tail 34. Uncond = the caption split dropped (i_sample_modality != 0), the ViT block kept.
TEST(GenSequence, EditWithVitReferenceBranches) {
  const ConditionedPrompt cp(edit_parts(true), VS, VE, PAD);
  const std::vector<P> vit{{1000, 5, 5}, {1001, 6, 6}, {1001, 6, 7}, {1001, 7, 6}, {1001, 7, 7}, {1003, 8, 8}};
  const T2iPrompt p = cp.sampler_prompt();
  EXPECT_EQ(p.cond.prefix_positions, cat<P>({text(0, 5), vit, block123(9), text(14, 4), text(18, 3)}));
  EXPECT_EQ(p.cond.noise_positions, block123(9));
  // uncond: prefix keeps the conditional positions (s3 at 18..20); the caption-free sequence puts s3 at
  // 14..16 and the target at 17, where MaPE again moves the ViT t axis to 1000 and copies the source.
  EXPECT_EQ(p.uncond.prefix_positions, cat<P>({text(0, 5), vit, block123(9), text(18, 3)}));
  EXPECT_EQ(cp.uncond().positions, cat<P>({text(0, 5), vit, block123(9), text(14, 3), block123(9), text(22, 1)}));
  EXPECT_EQ(p.uncond.noise_positions, block123(9));
  auto modes = [](const std::vector<Split>& v) {
    std::vector<std::pair<int64_t, SplitMode>> m;
    for (const Split& x : v) m.push_back({x.len, x.mode});
    return m;
  };
  using M = std::vector<std::pair<int64_t, SplitMode>>;
  EXPECT_EQ(modes(p.cond.prefix_splits), (M{{5, SplitMode::Causal}, {6, SplitMode::Full}, {8, SplitMode::Full}, {4, SplitMode::Causal}, {3, SplitMode::Causal}}));
  EXPECT_EQ(modes(p.uncond.prefix_splits), (M{{5, SplitMode::Causal}, {6, SplitMode::Full}, {8, SplitMode::Full}, {3, SplitMode::Causal}}));
  EXPECT_EQ(cp.cond().modality, cat<int8_t>({std::vector<int8_t>(5, -1), std::vector<int8_t>(6, 4), std::vector<int8_t>(8, 2),
                                             std::vector<int8_t>(4, 0), std::vector<int8_t>(3, -1), std::vector<int8_t>(8, 1),
                                             std::vector<int8_t>(1, -1)}));
}

// Lance's mask on the whole conditional sequence (k visible to q iff k <= q or same full/noise split,
// and not k in a noise split q is not in): the ViT block is bidirectional inside and does not see the
// source block after it; the source sees the ViT block; only the target sees itself.
TEST(GenSequence, EditWithVitReferenceMask) {
  const GenLayout l = build_gen_layout(edit_parts(true), VS, VE, PAD);
  ASSERT_EQ(l.rows(), 35);
  const AttentionLayout a = make_attention_layout(l.splits, 0, l.rows());
  auto visible = [&](int64_t q) {
    std::vector<KeyRange> r;
    a.visible(q, r);
    std::vector<bool> v(size_t(l.rows()), false);
    for (const KeyRange& k : r)
      for (int64_t i = k.begin; i < k.end; ++i) v[size_t(i)] = true;
    return v;
  };
  auto want = [&](std::initializer_list<std::pair<int64_t, int64_t>> ranges) {
    std::vector<bool> v(size_t(l.rows()), false);
    for (auto [b, e] : ranges)
      for (int64_t i = b; i < e; ++i) v[size_t(i)] = true;
    return v;
  };
  EXPECT_EQ(visible(3), want({{0, 4}}));             // s1: causal
  EXPECT_EQ(visible(5), want({{0, 11}}));            // ViT <|vision_start|>: its whole block
  EXPECT_EQ(visible(7), want({{0, 11}}));            // a ViT token: not the source block
  EXPECT_EQ(visible(10), want({{0, 11}}));           // ViT <|vision_end|>
  EXPECT_EQ(visible(11), want({{0, 19}}));           // source <|vision_start|>: ViT block + its own block
  EXPECT_EQ(visible(15), want({{0, 19}}));
  EXPECT_EQ(visible(20), want({{0, 21}}));           // caption: causal
  EXPECT_EQ(visible(26), want({{0, 34}}));           // target: everything before + its block
  EXPECT_EQ(visible(34), want({{0, 26}, {34, 35}})); // tail: not the target
}

TEST(GenSequence, PrefixChunkCarriesVitRows) {
  lq::model::SynthOptions o;
  o.preset = "tiny";
  o.out_dir = lq::test::scratch_dir("gen_sequence_vit_model");
  o.force = true;
  lq::model::synthesize(o);
  const Engine e = Engine::load(o.out_dir);
  const int64_t C = e.config().latent_channels, H = e.config().hidden_size;
  const ConditionedPrompt cp(edit_parts(true), 5, 6, 7);
  const std::vector<float> src(size_t(6 * C), 0.25f);
  VitReference ref;
  ref.grid = {1, 2, 2};
  for (int64_t k = 0; k < 4 * H; ++k) ref.embeddings.push_back(float(k % 97) * 0.01f - 0.3f);
  const Chunk c = cp.prefix_chunk(e, true, {&src}, {&ref});
  ASSERT_EQ(c.rows(), 26);
  // ViT block rows 5..10 (und), source latents 12..17 (gen).
  for (int64_t i = 0; i < 26; ++i) EXPECT_EQ(c.paths[size_t(i)], i >= 12 && i < 18 ? Path::Gen : Path::Und) << i;
  for (int64_t k = 0; k < 4 * H; ++k) ASSERT_EQ(c.embeddings[size_t(6 * H + k)], ref.embeddings[size_t(k)]);
  std::vector<float> marker(static_cast<size_t>(H));
  const int32_t vs = 5, ve = 6;
  e.embed_tokens(&vs, 1, marker.data());
  for (int64_t k = 0; k < H; ++k) ASSERT_EQ(c.embeddings[size_t(5 * H + k)], marker[size_t(k)]);
  e.embed_tokens(&ve, 1, marker.data());
  for (int64_t k = 0; k < H; ++k) ASSERT_EQ(c.embeddings[size_t(10 * H + k)], marker[size_t(k)]);
  const std::vector<float> lat = e.latent_embeddings(src.data(), {1, 2, 3}, 0.0);
  for (int64_t k = 0; k < 6 * H; ++k) ASSERT_EQ(c.embeddings[size_t(12 * H + k)], lat[size_t(k)]);
  EXPECT_EQ(c.positions, cp.sampler_prompt().cond.prefix_positions);
  const Chunk u = cp.prefix_chunk(e, false, {&src}, {&ref});
  EXPECT_EQ(u.rows(), 22);
  for (int64_t k = 0; k < 4 * H; ++k) ASSERT_EQ(u.embeddings[size_t(6 * H + k)], ref.embeddings[size_t(k)]);
  EXPECT_THROW(cp.prefix_chunk(e, true, {&src}, {}), lq::Error);  // the ViT rows are required
  VitReference bad = ref;
  bad.embeddings.pop_back();
  EXPECT_THROW(cp.prefix_chunk(e, true, {&src}, {&bad}), lq::Error);
}

// edit_prompt with the real template: the user turn is [ViT block][source block]{instruction}.
TEST(GenSequence, EditPromptPutsTheVitBlockBeforeTheSource) {
  if (lq::test::shared_dir().empty()) GTEST_SKIP() << "shared fixtures not found; skipping";
  const lq::tok::Tokenizer tok = lq::tok::Tokenizer::load(lq::test::lance_mini_dir());
  const int32_t vs = *tok.token_id("<|vision_start|>"), ve = *tok.token_id("<|vision_end|>"), pad = *tok.token_id("<|video_pad|>");
  const ConditionedPrompt with = edit_prompt(tok, "make it red", "SYS", {1, 2, 3}, LatentGrid{1, 2, 2});
  const ConditionedPrompt without = edit_prompt(tok, "make it red", "SYS", {1, 2, 3});
  const std::vector<int32_t> s1 = tok.encode("<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\n");
  const std::vector<int32_t> instr = tok.encode("make it red");
  std::vector<int32_t> want = s1;
  for (int32_t id : {vs, pad, pad, pad, pad, ve, vs, pad, pad, pad, pad, pad, pad, ve}) want.push_back(id);
  want.insert(want.end(), instr.begin(), instr.end());
  const auto& ids = with.cond().ids;
  ASSERT_GE(ids.size(), want.size());
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + int64_t(want.size())), want);
  EXPECT_EQ(ids.size(), without.cond().ids.size() + 6);
  EXPECT_EQ(with.cond().modality[s1.size()], kVitRef);
  EXPECT_EQ(with.cond().modality[s1.size() + 6], kEditSource);
  EXPECT_EQ(with.cond().positions[s1.size()][0], 1000);  // MaPE
}

}  // namespace
