#include "forward/gen_sequence.h"

#include <algorithm>

#include "io/error.h"
#include "tokenizer/tokenizer.h"

namespace lq::fwd {

GenLayout build_gen_layout(const std::vector<SeqPart>& parts, int32_t vision_start, int32_t vision_end, int32_t pad_id,
                           bool mape) {
  GenLayout l;
  int32_t next = 0;  // get_rope_index: every new text run starts at (max position so far) + 1
  for (const SeqPart& p : parts) {
    l.part_begin.push_back(l.rows());
    if (!p.vision) {
      for (int32_t id : p.ids) {
        l.ids.push_back(id);
        l.positions.push_back({next, next, next});
        l.modality.push_back(p.modality);
        ++next;
      }
      if (!p.ids.empty()) l.splits.push_back({int64_t(p.ids.size()), SplitMode::Causal});
    } else {
      if (p.grid.t < 1 || p.grid.h < 1 || p.grid.w < 1) fail("generation sequence", "vision block with an empty grid");
      const std::vector<Position3> pos = noise_block_positions(next, p.grid);
      l.ids.push_back(vision_start);
      l.ids.insert(l.ids.end(), size_t(p.grid.tokens()), pad_id);
      l.ids.push_back(vision_end);
      l.positions.insert(l.positions.end(), pos.begin(), pos.end());
      l.modality.insert(l.modality.end(), pos.size(), p.modality);
      l.splits.push_back({int64_t(pos.size()), p.mode});
      next = pos.back()[0] + 1;
    }
    l.part_rows.push_back(l.rows() - l.part_begin.back());
  }
  if (mape) apply_mape(l);
  return l;
}

void apply_mape(GenLayout& l) {
  const bool has_full = std::any_of(l.splits.begin(), l.splits.end(), [](const Split& s) { return s.mode == SplitMode::Full; });
  if (!has_full) return;
  auto rows_of = [&](int8_t m) {
    std::vector<size_t> r;
    for (size_t i = 0; i < l.modality.size(); ++i)
      if (l.modality[i] == m) r.push_back(i);
    return r;
  };
  auto sum = [&](const std::vector<size_t>& r) {
    int64_t s = 0;
    for (size_t i : r) s += int64_t(l.positions[i][0]) + l.positions[i][1] + l.positions[i][2];
    return s;
  };
  // The reference shifts only the temporal axis (position_ids[0]) of references.
  for (auto [m, target] : {std::pair<int8_t, int32_t>{kVitRef, 1000}, {kRefImage, 2000}}) {
    const auto r = rows_of(m);
    if (r.empty() || sum(r) == 0) continue;
    const int32_t delta = target - l.positions[r.front()][0];
    for (size_t i : r) l.positions[i][0] += delta;
  }
  const auto src = rows_of(kEditSource), tgt = rows_of(kNoiseTarget);
  if (!src.empty() && sum(src) != 0 && src.size() == tgt.size())
    for (size_t k = 0; k < tgt.size(); ++k) l.positions[tgt[k]] = l.positions[src[k]];
}

ConditionedPrompt::ConditionedPrompt(std::vector<SeqPart> parts, int32_t vision_start, int32_t vision_end, int32_t pad_id)
    : parts_(std::move(parts)), vs_(vision_start), ve_(vision_end), pad_(pad_id) {
  int noise_blocks = 0;
  for (size_t i = 0; i < parts_.size(); ++i) {
    const SeqPart& p = parts_[i];
    if (p.vision && p.mode == SplitMode::Noise) {
      ++noise_blocks;
      target_part_ = i;
    }
  }
  if (noise_blocks != 1) fail("generation sequence", "needs exactly one noise (target) block, got " + std::to_string(noise_blocks));
  for (size_t i = target_part_ + 1; i < parts_.size(); ++i)
    if (parts_[i].vision) fail("generation sequence", "the target block must be the last vision block");
  target_ = parts_[target_part_].grid;
  cond_ = build_gen_layout(parts_, vs_, ve_, pad_);
  std::vector<SeqPart> no_caption;
  for (const SeqPart& p : parts_)
    if (p.vision || p.modality != kCaption) no_caption.push_back(p);
  uncond_ = build_gen_layout(no_caption, vs_, ve_, pad_);
}

namespace {

// Part index of the uncond layout that corresponds to cond part `i` (caption parts removed).
size_t uncond_index(const std::vector<SeqPart>& parts, size_t i) {
  size_t k = 0;
  for (size_t j = 0; j < i; ++j)
    if (parts[j].vision || parts[j].modality != kCaption) ++k;
  return k;
}

}  // namespace

T2iPrompt ConditionedPrompt::sampler_prompt() const {
  T2iPrompt p;
  p.grid = target_;
  p.vision_start = vs_;
  p.vision_end = ve_;
  for (bool cond : {true, false}) {
    T2iBranch& b = cond ? p.cond : p.uncond;
    for (size_t i = 0; i < target_part_; ++i) {
      if (!cond && !parts_[i].vision && parts_[i].modality == kCaption) continue;
      const int64_t begin = cond_.part_begin[i], n = cond_.part_rows[i];
      b.prefix_ids.insert(b.prefix_ids.end(), cond_.ids.begin() + begin, cond_.ids.begin() + begin + n);
      b.prefix_positions.insert(b.prefix_positions.end(), cond_.positions.begin() + begin, cond_.positions.begin() + begin + n);
      if (n > 0) b.prefix_splits.push_back({n, parts_[i].vision ? parts_[i].mode : SplitMode::Causal});
    }
    const GenLayout& l = cond ? cond_ : uncond_;
    const size_t ti = cond ? target_part_ : uncond_index(parts_, target_part_);
    const int64_t begin = l.part_begin[ti], n = l.part_rows[ti];
    b.noise_positions.assign(l.positions.begin() + begin, l.positions.begin() + begin + n);
  }
  return p;
}

Chunk ConditionedPrompt::prefix_chunk(const Engine& e, bool cond, const std::vector<const std::vector<float>*>& latents,
                                      const std::vector<const VitReference*>& vit) const {
  const int64_t H = e.config().hidden_size, C = e.config().latent_channels;
  Chunk c;
  size_t next_latent = 0, next_vit = 0;
  for (size_t i = 0; i < target_part_; ++i) {
    const SeqPart& p = parts_[i];
    if (!cond && !p.vision && p.modality == kCaption) continue;
    const int64_t begin = cond_.part_begin[i], n = cond_.part_rows[i];
    if (n == 0) continue;
    const size_t row0 = size_t(c.rows());
    c.embeddings.resize((row0 + size_t(n)) * size_t(H));
    float* out = c.embeddings.data() + row0 * size_t(H);
    c.positions.insert(c.positions.end(), cond_.positions.begin() + begin, cond_.positions.begin() + begin + n);
    c.splits.push_back({n, p.vision ? p.mode : SplitMode::Causal});
    if (!p.vision) {
      e.embed_tokens(cond_.ids.data() + begin, n, out);
      c.paths.insert(c.paths.end(), size_t(n), Path::Und);
      continue;
    }
    const int64_t K = p.grid.tokens();
    e.embed_tokens(&vs_, 1, out);
    e.embed_tokens(&ve_, 1, out + (K + 1) * H);
    if (p.modality == kVitRef) {
      if (next_vit >= vit.size() || !vit[next_vit]) fail("generation sequence", "a ViT block has no reference rows");
      const VitReference& r = *vit[next_vit++];
      if (int64_t(r.embeddings.size()) != K * H)
        fail("generation sequence", "ViT reference rows: " + std::to_string(r.embeddings.size()) + " values, expected " + std::to_string(K * H));
      std::copy(r.embeddings.begin(), r.embeddings.end(), out + H);
      c.paths.insert(c.paths.end(), size_t(n), Path::Und);
      continue;
    }
    if (next_latent >= latents.size() || !latents[next_latent]) fail("generation sequence", "a VAE condition block has no latents");
    const std::vector<float>& x = *latents[next_latent++];
    if (int64_t(x.size()) != K * C)
      fail("generation sequence", "condition latents: " + std::to_string(x.size()) + " values, expected " + std::to_string(K * C));
    const std::vector<float> emb = e.latent_embeddings(x.data(), p.grid.thw(), 0.0);  // clean: tau = 0
    std::copy(emb.begin(), emb.end(), out + H);
    c.paths.push_back(Path::Und);
    c.paths.insert(c.paths.end(), size_t(K), Path::Gen);
    c.paths.push_back(Path::Und);
  }
  return c;
}

ConditionedPrompt edit_prompt(const tok::Tokenizer& tok, const std::string& instruction, const std::string& system,
                              const LatentGrid& grid, const std::optional<LatentGrid>& vit_grid) {
  auto special = [&](const char* t) {
    auto id = tok.token_id(t);
    if (!id) fail("tokenizer", std::string("has no special token ") + t);
    return *id;
  };
  if (instruction.empty()) fail("edit", "the instruction is empty");
  std::vector<SeqPart> parts;
  parts.push_back(SeqPart::text(tok.encode("<|im_start|>system\n" + system + "<|im_end|>\n<|im_start|>user\n")));
  if (vit_grid) parts.push_back(SeqPart::block(kVitRef, *vit_grid, SplitMode::Full));
  parts.push_back(SeqPart::block(kEditSource, grid, SplitMode::Full));
  parts.push_back(SeqPart::text(tok.encode(instruction), kCaption));
  parts.push_back(SeqPart::text(tok.encode("<|im_end|>\n<|im_start|>assistant\n")));
  parts.push_back(SeqPart::block(kNoiseTarget, grid, SplitMode::Noise));
  parts.push_back(SeqPart::text(tok.encode("<|im_end|>")));
  return ConditionedPrompt(std::move(parts), special("<|vision_start|>"), special("<|vision_end|>"), special("<|video_pad|>"));
}

}  // namespace lq::fwd
