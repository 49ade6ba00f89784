// Generation sequences with conditions (image / video editing), as Lance's reference builds them
// (data/datasets_custom/validation_dataset.py process_text_template, modeling/lance/lance.py
// validation_gen_KVcache, data/common.py shift_position_ids):
//   * parts: text (template or caption) and vision blocks; a vision block is <|vision_start|> + tokens +
//     <|vision_end|> and forms one split: Full for a ViT reference or a clean VAE condition
//     (Lance's "full" / "full_noise", masked alike), Noise for the target; text parts are causal splits;
//   * per-token modality codes: -1 template, 0 caption, 1 noise target, 2 edit-source VAE, 3 reference
//     VAE, 4 ViT reference (a vision block's markers carry its code);
//   * positions: get_rope_index (text consecutive from max + 1; a block whose <|vision_start|> sits at s
//     puts token (f, r, c) at (s + 1 + 2f, s + 1 + r, s + 1 + c), <|vision_end|> at max + 1), then MaPE
//     when any Full split exists: code 4 moves its t axis so its first token has t = 1000, code 3 to
//     2000, and when codes 1 and 2 have equal token counts the target copies the source's positions;
//   * the unconditional (text-free) branch drops the caption part: its cached prefix keeps the
//     conditional positions, its noise block takes the positions of the caption-free sequence.
// Clean VAE conditions enter with flow time tau = 0 and their own latent position-embedding grid.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "forward/forward.h"
#include "forward/t2i.h"

namespace lq::tok {
class Tokenizer;
}

namespace lq::fwd {

enum Modality : int8_t { kTemplate = -1, kCaption = 0, kNoiseTarget = 1, kEditSource = 2, kRefImage = 3, kVitRef = 4 };

struct SeqPart {
  bool vision = false;
  std::vector<int32_t> ids;        // text parts
  int8_t modality = kTemplate;     // text: kTemplate or kCaption; vision: kNoiseTarget .. kVitRef
  LatentGrid grid;                 // vision: LLM tokens t x h x w (a ViT block: its merged grid)
  SplitMode mode = SplitMode::Causal;  // vision: Full or Noise
  static SeqPart text(std::vector<int32_t> ids, int8_t modality = kTemplate) { return {false, std::move(ids), modality, {}, SplitMode::Causal}; }
  static SeqPart block(int8_t modality, const LatentGrid& g, SplitMode mode) { return {true, {}, modality, g, mode}; }
};

// One laid-out sequence. Vision rows hold `pad_id` in `ids`.
struct GenLayout {
  std::vector<int32_t> ids;
  std::vector<Position3> positions;
  std::vector<Split> splits;
  std::vector<int8_t> modality;
  std::vector<int64_t> part_begin;  // first row of each part (a block: its <|vision_start|>)
  std::vector<int64_t> part_rows;
  int64_t rows() const { return int64_t(ids.size()); }
};

// Lays the parts out with get_rope_index positions and (when `mape`) Lance's shifts.
GenLayout build_gen_layout(const std::vector<SeqPart>& parts, int32_t vision_start, int32_t vision_end, int32_t pad_id,
                           bool mape = true);
// Lance's shift_position_ids (pro_type 10) on a laid-out sequence; no-op without a Full split.
void apply_mape(GenLayout& l);

// The ViT reference of an edit (modality 4; vit/edit_reference.h makes it): its merged token grid and
// the merger's output rows [t h w, hidden]. Lance puts it right before the source VAE block.
struct VitReference {
  LatentGrid grid;
  std::vector<float> embeddings;
};

// A conditioned generation: parts (exactly one Noise block, last among the vision blocks) plus the
// conditioning rows. Builds both CFG branches' prefix chunks and the prompt the sampler runs.
class ConditionedPrompt {
 public:
  ConditionedPrompt(std::vector<SeqPart> parts, int32_t vision_start, int32_t vision_end, int32_t pad_id);
  const GenLayout& cond() const { return cond_; }
  const GenLayout& uncond() const { return uncond_; }
  const LatentGrid& target_grid() const { return target_; }
  // Prefix rows (everything before the target block) of a branch. `latents[k]`: the clean latents
  // [t h w, C] of the k-th Full VAE block in order, `vit[k]`: the k-th ViT block's rows.
  Chunk prefix_chunk(const Engine& e, bool cond, const std::vector<const std::vector<float>*>& latents,
                     const std::vector<const VitReference*>& vit) const;
  // The sampler's prompt: noise positions of each branch; prefix ids / positions / splits for sizes.
  T2iPrompt sampler_prompt() const;

 private:
  std::vector<SeqPart> parts_;
  int32_t vs_, ve_, pad_;
  GenLayout cond_, uncond_;
  LatentGrid target_;
  size_t target_part_ = 0;
};

// Lance's edit request: system prompt (edit instruction for `vision_type`), user turn = [ViT reference]
// + source block + instruction, assistant turn = the target block, same grid as the source.
// `vit_grid` set: a ViT block of that grid precedes the source block (its rows come with the request).
ConditionedPrompt edit_prompt(const tok::Tokenizer& tok, const std::string& instruction, const std::string& system,
                              const LatentGrid& grid, const std::optional<LatentGrid>& vit_grid = std::nullopt);

}  // namespace lq::fwd
