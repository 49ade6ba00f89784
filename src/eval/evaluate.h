// Evaluation of a quantized model (QUANT) against its original (BASE), both loaded as fwd::Engine:
//   und: perplexity of both on held-out text (non-overlapping windows, tokens 1.. of each window
//        scored, logits over the first len(tokenizer) columns), per-token KL(BASE || QUANT) and
//        top-1 agreement on the same positions; greedy chat answers of QUANT against BASE's
//        (exact match, Levenshtein similarity, word Jaccard);
//   gen: from identical initial noise, the guided velocity of both models on BASE's sampler
//        trajectory (cosine, relative error per step / tau bucket), then each model's own full CFG
//        sampler: final latents' relative error and PSNR (and, for a toy VAE, the decoded images);
//   layers: per-linear output error ||W_q x - W x|| / ||W x|| on BASE's inputs of each target
//        linear, and the residual-stream error per layer (und rows of a text window, gen rows of a
//        t2i sequence).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "formats/fold_scales.h"
#include "forward/forward.h"
#include "forward/prompts.h"
#include "eval/x2t_eval.h"

namespace lq::tok {
class Tokenizer;
}

namespace lq::eval {

struct EvalData {
  std::vector<std::string> text_files;  // perplexity / KL / top-1
  std::string chat_file;                // JSONL {"question", ...}; "" = skip
  std::string t2i_file;                 // captions, one per line; "" = skip
};

struct EvalOptions {
  int64_t window = 256;           // perplexity window (tokens)
  int64_t max_text_tokens = 0;    // per text file, 0 = all (whole windows only)
  int max_chat = 0;               // 0 = all prompts
  int max_new_tokens = 64;        // greedy answer length
  int max_t2i = 0;                // 0 = all prompts
  uint64_t seed = 0;              // t2i prompt k uses noise seed + k
  fwd::SamplerOptions sampler;    // steps, shift, CFG (from the model's settings)
  int tau_buckets = 5;            // equal-width tau' buckets over [0, 1]
  // QUANT's fold scales (formats/fold_scales.h): per-linear errors are measured in the original basis,
  // y = (W' (x / col) + b') / row. Empty: QUANT's linears are compared as they are.
  formats::FoldScaleMap quant_folds;
  // Progress: called after each unit of work (window, prompt, step evaluation).
  std::function<void(int64_t done, int64_t total, const std::string& stage)> progress;
};

struct TextFileResult {
  std::string path;
  int64_t tokens_total = 0, windows = 0, tokens_scored = 0;
  double base_nll_sum = 0, quant_nll_sum = 0;
  double base_perplexity = 0, quant_perplexity = 0;
  double kl_mean = 0, kl_p99 = 0, kl_max = 0, top1_agreement = 0;
};

struct ChatItem {
  std::string question, base_answer, quant_answer;
  bool exact = false;
  double levenshtein = 0, jaccard = 0;
};

struct UndResult {
  std::vector<TextFileResult> texts;
  int64_t tokens_scored = 0;
  double base_perplexity = 0, quant_perplexity = 0, kl_mean = 0, kl_p99 = 0, top1_agreement = 0;
  std::vector<ChatItem> chat;
  double chat_exact_match = 0, chat_levenshtein = 0, chat_jaccard = 0;
};

struct VelocityStep {
  int step = 0;
  double tau = 0;
  bool cfg = false;
  double cosine = 0, rel_error = 0;  // averaged over prompts
};

struct TauBucket {
  double lo = 0, hi = 0;
  int steps = 0;  // sampler steps (over all prompts) in the bucket
  double cosine = 0, rel_error = 0;
};

struct GenPrompt {
  std::string caption;
  uint64_t seed = 0;
  double latent_rel_error = 0, latent_psnr_db = 0;
  std::vector<float> base_latents, quant_latents;  // [K, C]
  // Decoded pictures (eval --vae, eval/pictures.h): 8-bit RGB of BASE vs QUANT, every frame.
  double image_psnr_db = 0, image_ssim = 0;
};

struct GenResult {
  fwd::LatentGrid grid;
  int steps = 0;
  std::vector<GenPrompt> prompts;
  std::vector<VelocityStep> velocity;  // per sampler step
  std::vector<TauBucket> buckets;
  double latent_rel_error = 0, latent_psnr_db = 0;  // means over prompts
  double velocity_cosine = 0, velocity_rel_error = 0;  // means over all step evaluations
  bool has_pictures = false;                          // decoded with the Wan2.2 VAE (eval --vae)
  double image_psnr_db = 0, image_ssim = 0;           // means over prompts
};

struct LinearError {
  fwd::LinearId id;
  std::string name;
  int64_t rows = 0;
  double rel_error = 0;
};

struct LayerResult {
  std::vector<LinearError> linears;      // every target linear seen on the probe inputs
  std::vector<double> und_hidden_error;  // [num_layers + 1]: residual stream, index 0 = input
  std::vector<double> gen_hidden_error;
  int64_t und_rows = 0, gen_rows = 0;
};

struct EvalResult {
  bool has_und = false, has_chat = false, has_gen = false, has_layers = false;
  bool has_x2t = false;  // filled by the caller (eval/x2t_eval.h) when x2t data is given
  X2tEvalResult x2t;
  UndResult und;
  GenResult gen;
  LayerResult layers;
};

// Runs every part the data allows. BASE and QUANT must share the architecture and tokenizer.
// `t2i` gives the latent grid, the instruction and (through options.sampler) the schedule.
// BASE is non-const only to attach an activation observer for the per-linear probe (removed again).
EvalResult evaluate(fwd::Engine& base, const fwd::Engine& quant, const tok::Tokenizer& tokenizer,
                    const fwd::T2iSettings& t2i, const EvalData& data, const EvalOptions& options);

// Pieces, exposed for tests.
// Non-overlapping windows of `window` tokens (tail dropped; a text shorter than one window is one
// window), at most max_tokens / window of them when max_tokens > 0.
std::vector<std::vector<int32_t>> text_windows(const std::vector<int32_t>& ids, int64_t window, int64_t max_tokens);
TextFileResult compare_text(const fwd::Engine& base, const fwd::Engine& quant,
                            const std::vector<std::vector<int32_t>>& windows, int64_t vocab_limit,
                            const std::function<void()>& on_window = {});
// Perplexity of one engine alone over the windows (the fixture's protocol).
double engine_perplexity(const fwd::Engine& e, const std::vector<std::vector<int32_t>>& windows, int64_t vocab_limit);
std::vector<std::string> read_nonempty_lines(const std::string& path);
std::vector<std::string> read_chat_questions(const std::string& path);

}  // namespace lq::eval
