// Understanding of an image or video (x2t) on the backbone: Lance's prompt layout, split mask and
// get_rope_index positions (validation_dataset.py x2t_sample with text_template, lance.py
// validation_und_KVcache, qwen2_navit.py get_rope_index).
//
// Tokens: <|im_start|>system\n{SYS}<|im_end|>\n<|im_start|>user\n | <|vision_start|> K x <|video_pad|>
// <|vision_end|> | {question}<|im_end|>\n<|im_start|>assistant\n   (Lance uses <|video_pad|> for images too)
// Splits: causal [prefix], full [vision_start .. vision_end] (bidirectional inside, causal to the prefix),
//         causal [question .. assistant\n]; the answer continues causally. All rows are und.
// Positions: the prefix and <|vision_start|> count 0, 1, ..., b - 1; merged grid token (f, r, c) at
//         (b + step * f, b + r, b + c) with step = tokens_per_second x 1 s per temporal patch (2 for Lance);
//         <|vision_end|> and everything after continue from the block's largest position + 1.
// The ViT rows replace the <|video_pad|> embeddings in order (masked_scatter); there is no connector.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "forward/forward.h"

namespace lq::tok {
class Tokenizer;
}

namespace lq::fwd {

// Lance's instructions in its x2t examples (config/examples/x2t_*_example.json).
inline constexpr const char* kX2tImageSystem = "Look at the image carefully and answer the question.";
inline constexpr const char* kX2tVideoSystem = "Watch the video carefully and answer the question.";

struct X2tPrompt {
  std::vector<int32_t> ids;          // the whole prompt, the vision block expanded
  std::vector<Position3> positions;  // one per id
  std::vector<Split> splits;         // causal, full, causal
  int64_t vision_begin = 0;          // index of the first <|video_pad|> (first ViT row)
  int64_t vision_tokens = 0;         // K = t * h * w of the merged grid
  int32_t next_position = 0;         // position of the first generated token
};

// From token ids: prefix (through "user\n"), rest (question through "assistant\n"), the three special
// ids, the merged grid (t, h, w) and the temporal step.
X2tPrompt build_x2t_prompt(const std::vector<int32_t>& prefix, const std::vector<int32_t>& rest, int32_t vision_start,
                           int32_t pad, int32_t vision_end, std::array<int, 3> merged_grid, int temporal_step = 2);

// From text, with the model's tokenizer (pieces split at special tokens tokenize as the whole does).
X2tPrompt x2t_prompt(const tok::Tokenizer& tokenizer, const std::string& system, const std::string& question,
                     std::array<int, 3> merged_grid, int temporal_step = 2);

// The prompt's rows with vit_rows [K, hidden] in place of the pads (routing all und).
Chunk x2t_chunk(const Engine& e, const X2tPrompt& p, const float* vit_rows);

}  // namespace lq::fwd
