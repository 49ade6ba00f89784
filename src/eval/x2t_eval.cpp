#include "eval/x2t_eval.h"

#include <cmath>

#include "eval/metrics.h"
#include "forward/text.h"
#include "io/error.h"
#include "tokenizer/tokenizer.h"

namespace lq::eval {

namespace {

// Final-normed rows of `prompt` followed by `answer` (one causal continuation), logits of the rows that
// predict each answer token: [answer.size(), vocab].
std::vector<float> answer_logits(const fwd::Engine& e, const vit::X2tSample& s, const std::vector<int32_t>& answer) {
  const int64_t H = e.config().hidden_size, n0 = s.chunk.rows(), na = int64_t(answer.size());
  fwd::Chunk c = s.chunk;
  c.embeddings.resize(size_t((n0 + na) * H));
  e.embed_tokens(answer.data(), na, c.embeddings.data() + n0 * H);
  c.paths.resize(size_t(n0 + na), fwd::Path::Und);
  const auto pos = fwd::text_positions(na, s.prompt.next_position);
  c.positions.insert(c.positions.end(), pos.begin(), pos.end());
  c.splits.back().len += na;
  const std::vector<float> normed = e.forward(c, nullptr, fwd::CacheWrite::No);
  return e.logits(normed.data() + (n0 - 1) * H, na);  // row n0 - 1 + i predicts answer[i]
}

double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : 0.0;
}

}  // namespace

X2tEvalResult evaluate_x2t(const fwd::Engine& base, const fwd::Engine& quant, const vit::Vit& base_vit,
                           const vit::Vit& quant_vit, const tok::Tokenizer& tok, const std::vector<vit::X2tItem>& items,
                           const vit::X2tSettings& settings, int temporal_step, int max_new_tokens,
                           const std::function<void()>& on_item) {
  vit::check_vit_matches(base_vit, base);
  vit::check_vit_matches(quant_vit, quant);
  X2tEvalResult r;
  r.quant_vit = &base_vit != &quant_vit;
  vit::FeatureCache fb(base_vit, settings), fq(quant_vit, settings);
  fwd::GreedyOptions g;
  g.max_new_tokens = max_new_tokens;
  g.vocab_limit = base.config().len_tokenizer;
  const auto end = tok.token_id("<|im_end|>");
  if (end) g.stop_id = *end;
  const int64_t V = base.config().vocab_size;
  const int64_t limit = g.vocab_limit > 0 ? std::min<int64_t>(g.vocab_limit, V) : V;
  double kl_sum = 0, lev = 0, exact = 0, vit_err = 0;
  int64_t agree = 0;
  for (const auto& item : items) {
    const vit::VitFeatures& b = fb.get(item.kind, item.path);
    const vit::VitFeatures& q = r.quant_vit ? fq.get(item.kind, item.path) : b;
    const vit::X2tSample sb = vit::x2t_sample(base, tok, b, item, temporal_step);
    const vit::X2tSample sq = vit::x2t_sample(quant, tok, q, item, temporal_step);
    X2tEvalItem it;
    it.kind = vit::media_kind_name(item.kind);
    it.path = item.path;
    it.question = item.question;
    it.reference = item.answer;
    it.vit_tokens = b.tokens();
    it.vit_rel_error = r.quant_vit ? rel_error(q.rows, b.rows) : 0.0;
    const std::vector<int32_t> ab = fwd::greedy_decode_chunk(base, sb.chunk, sb.prompt.next_position, g);
    const std::vector<int32_t> aq = &base == &quant && !r.quant_vit ? ab : fwd::greedy_decode_chunk(quant, sq.chunk, sq.prompt.next_position, g);
    it.base_answer = tok.decode(ab, true);
    it.quant_answer = tok.decode(aq, true);
    it.exact = ab == aq;
    it.levenshtein = levenshtein_similarity(it.base_answer, it.quant_answer);
    // Teacher forcing on BASE's answer and the <|im_end|> that closed it (when it did).
    std::vector<int32_t> forced = ab;
    if (end && int(ab.size()) < max_new_tokens) forced.push_back(*end);
    if (!forced.empty()) {
      const std::vector<float> lb = answer_logits(base, sb, forced), lq = answer_logits(quant, sq, forced);
      double sum = 0, mx = 0;
      int64_t same = 0;
      for (size_t i = 0; i < forced.size(); ++i) {
        const double kl = kl_divergence(lb.data() + i * size_t(V), lq.data() + i * size_t(V), limit);
        sum += kl;
        mx = std::max(mx, kl);
        same += fwd::argmax_masked(lb.data() + i * size_t(V), V, limit) == fwd::argmax_masked(lq.data() + i * size_t(V), V, limit);
      }
      it.answer_tokens = int64_t(forced.size());
      it.kl_mean = sum / double(forced.size());
      it.kl_max = mx;
      it.top1 = double(same) / double(forced.size());
      kl_sum += sum;
      agree += same;
      r.tokens += it.answer_tokens;
    }
    exact += it.exact;
    lev += it.levenshtein;
    vit_err += it.vit_rel_error;
    r.items.push_back(std::move(it));
    if (on_item) on_item();
  }
  const double n = double(std::max<size_t>(1, items.size()));
  r.exact_match = exact / n;
  r.levenshtein = lev / n;
  r.vit_rel_error = vit_err / n;
  r.kl_mean = r.tokens ? kl_sum / double(r.tokens) : 0.0;
  r.top1 = r.tokens ? double(agree) / double(r.tokens) : 0.0;
  return r;
}

}  // namespace lq::eval
