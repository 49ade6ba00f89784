// Evaluation of image / video understanding (x2t): for each {image|video, question} the greedy answers of
// BASE and QUANT (exact match, Levenshtein similarity), and on BASE's answer (teacher forcing) the per-token
// KL(BASE || QUANT) and top-1 agreement of the next-token distributions. BASE's ViT features feed both
// models unless QUANT has its own ViT (e.g. 4-bit ViT linears), whose feature error is reported too.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "forward/forward.h"
#include "vit/x2t_input.h"

namespace lq::tok {
class Tokenizer;
}

namespace lq::eval {

struct X2tEvalItem {
  std::string kind, path, question, reference;  // reference: the file's "answer", if any
  std::string base_answer, quant_answer;
  bool exact = false;
  double levenshtein = 0;
  int64_t answer_tokens = 0;  // BASE's answer, the teacher-forced positions (with the closing <|im_end|>)
  double kl_mean = 0, kl_max = 0, top1 = 0;
  double vit_rel_error = 0;   // ||f_QUANT - f_BASE|| / ||f_BASE|| of the ViT rows (0 when shared)
  int64_t vit_tokens = 0;
};

struct X2tEvalResult {
  std::vector<X2tEvalItem> items;
  double exact_match = 0, levenshtein = 0, kl_mean = 0, top1 = 0, vit_rel_error = 0;
  int64_t tokens = 0;
  bool quant_vit = false;       // QUANT ran its own ViT
  std::string quant_vit_note;   // what that ViT is (e.g. "ViT linears RTN INT4 at load")
};

// `quant_vit` may be the same object as `base_vit`.
X2tEvalResult evaluate_x2t(const fwd::Engine& base, const fwd::Engine& quant, const vit::Vit& base_vit,
                           const vit::Vit& quant_vit, const tok::Tokenizer& tok, const std::vector<vit::X2tItem>& items,
                           const vit::X2tSettings& settings, int temporal_step, int max_new_tokens,
                           const std::function<void()>& on_item = {});

}  // namespace lq::eval
