#include "forward/x2t.h"

#include <algorithm>

#include "io/error.h"
#include "tokenizer/tokenizer.h"

namespace lq::fwd {

X2tPrompt build_x2t_prompt(const std::vector<int32_t>& prefix, const std::vector<int32_t>& rest, int32_t vision_start,
                           int32_t pad, int32_t vision_end, std::array<int, 3> g, int temporal_step) {
  if (prefix.empty() || rest.empty()) fail("x2t prompt", "the prefix and the question part must be non-empty");
  if (g[0] < 1 || g[1] < 1 || g[2] < 1) fail("x2t prompt", "empty vision grid");
  X2tPrompt p;
  const int64_t K = int64_t(g[0]) * g[1] * g[2], P = int64_t(prefix.size());
  p.vision_tokens = K;
  p.vision_begin = P + 1;
  p.ids = prefix;
  p.ids.push_back(vision_start);
  p.ids.insert(p.ids.end(), size_t(K), pad);
  p.ids.push_back(vision_end);
  p.ids.insert(p.ids.end(), rest.begin(), rest.end());
  // Positions (get_rope_index): prefix and <|vision_start|> are text 0..P, the grid starts at b = P + 1.
  p.positions = text_positions(P + 1, 0);
  const int32_t b = int32_t(P + 1);
  for (int f = 0; f < g[0]; ++f)
    for (int r = 0; r < g[1]; ++r)
      for (int c = 0; c < g[2]; ++c) p.positions.push_back({b + temporal_step * f, b + r, b + c});
  const int32_t after = b + std::max({temporal_step * (g[0] - 1), g[1] - 1, g[2] - 1}) + 1;
  const auto tail = text_positions(int64_t(rest.size()) + 1, after);  // <|vision_end|> + rest
  p.positions.insert(p.positions.end(), tail.begin(), tail.end());
  p.next_position = after + int32_t(rest.size()) + 1;
  p.splits = {{P, SplitMode::Causal}, {K + 2, SplitMode::Full}, {int64_t(rest.size()), SplitMode::Causal}};
  return p;
}

namespace {
int32_t special(const tok::Tokenizer& t, const char* s) {
  const auto id = t.token_id(s);
  if (!id) fail("tokenizer", std::string("has no special token ") + s + " (needed for x2t)");
  return *id;
}
}  // namespace

X2tPrompt x2t_prompt(const tok::Tokenizer& t, const std::string& system, const std::string& question,
                     std::array<int, 3> merged_grid, int temporal_step) {
  const auto prefix = t.encode("<|im_start|>system\n" + system + "<|im_end|>\n<|im_start|>user\n");
  const auto rest = t.encode(question + "<|im_end|>\n<|im_start|>assistant\n");
  return build_x2t_prompt(prefix, rest, special(t, "<|vision_start|>"), special(t, "<|video_pad|>"),
                          special(t, "<|vision_end|>"), merged_grid, temporal_step);
}

Chunk x2t_chunk(const Engine& e, const X2tPrompt& p, const float* vit_rows) {
  const int64_t H = e.config().hidden_size, n = int64_t(p.ids.size());
  Chunk c;
  c.embeddings.resize(size_t(n * H));
  e.embed_tokens(p.ids.data(), p.vision_begin, c.embeddings.data());
  std::copy(vit_rows, vit_rows + p.vision_tokens * H, c.embeddings.begin() + p.vision_begin * H);
  const int64_t after = p.vision_begin + p.vision_tokens;
  e.embed_tokens(p.ids.data() + after, n - after, c.embeddings.data() + after * H);
  c.paths.assign(size_t(n), Path::Und);
  c.positions = p.positions;
  c.splits = p.splits;
  return c;
}

}  // namespace lq::fwd
