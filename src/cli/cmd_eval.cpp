// `lance-quant eval BASE QUANT --out REPORT_DIR`: compares a quantized model with its original on
// held-out data (both paths) and writes report.md / report.json / plots (see src/eval/).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <unistd.h>

#include "api/api.h"
#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "formats/fold_scales.h"
#include "eval/evaluate.h"
#include "eval/fake_quant.h"
#include "eval/locate.h"
#include "eval/pictures.h"
#include "eval/report.h"
#include "forward/prompts.h"
#include "io/error.h"
#include "io/output.h"
#include "io/progress.h"
#include "io/text_file.h"
#include "kernels/parallel.h"
#include "tokenizer/tokenizer.h"
#include "vae/wan_vae.h"
#include "vit/x2t_input.h"

namespace lq::cli {

namespace {

namespace fs = std::filesystem;

void usage(FILE* out) {
  std::fprintf(out,
               "usage: lance-quant eval BASE QUANT --out REPORT_DIR [options]\n"
               "  BASE, QUANT           model directories the engine loads (original or quantized)\n"
               "data (default: the repository's held-out data/eval/ set; a toy-VAE model uses t2i_toy_prompts.txt):\n"
               "  --text FILE           perplexity / KL / top-1 text (repeatable)\n"
               "  --chat FILE           JSONL {\"question\": ...} prompts for greedy answers\n"
               "  --t2i-prompts FILE    captions, one per line\n"
               "  --no-text | --no-chat | --no-t2i   skip a part\n"
               "  --x2t-image FILE      JSONL {\"image\", \"question\"}: answers about images, KL on answer tokens\n"
               "  --x2t-video FILE      JSONL {\"video\", \"question\"} (both need the ViT: --vit DIR or vit_model.* in BASE)\n"
               "  --vit DIR             the ViT (vit.safetensors + config.json)   --x2t-resolution R   --max-x2t N\n"
               "  --vit-quant int4      QUANT's ViT linears in 4-bit (RTN at load): the cost of a 4-bit ViT. A QUANT written\n"
               "                        by `quantize --vit` runs its own 4-bit ViT and reports that cost by itself (then\n"
               "                        --vit-quant is an error)\n"
               "  --data-dir DIR        where the defaults live (else $LQ_DATA_DIR, else data/eval found above\n"
               "                        the executable or the working directory)\n"
               "bounds:\n"
               "  --max-text-tokens N   per text file (whole %s-token windows; default all)\n"
               "  --max-chat N          chat prompts (default 16)     --max-new-tokens N (default 48)\n"
               "  --max-t2i N           t2i prompts (default 8)       --steps N (sampler steps, default the model's)\n"
               "  --window N            perplexity window (default 256)  --seed S (noise seed base, default 0)\n"
               "other:\n"
               "  --fake-quant SCHEME[:GROUP]  replace QUANT's linears by fake-quantized dense weights\n"
               "                        (int4_asym:64, int4_sym:128, int8_sym:0, nvfp4): a what-if without a checkpoint\n"
               "  --dtype f32|bf16      weight storage of both engines   --threads N   --quiet (no progress line)\n"
               "  --head stored|int8|int4  QUANT's lm_head as stored, or quantized at load (run --head)\n"
               "  --vae PATH            the Wan2.2 VAE: decode both models' t2i results and compare pictures (PSNR,\n"
               "                        SSIM, side-by-side PNG), not only latents\n"
               "  --force               replace an existing REPORT_DIR that lance-quant wrote\n"
               "REPORT_DIR is written as REPORT_DIR.lq-partial-PID and renamed at the end; it must not be an input.\n",
               "256");
}

struct EvalCli : api::EvalRequest {
  bool quiet = false;
};

EvalCli parse(const Args& args) {
  EvalCli c;  // options start from the CLI defaults: 16 chat prompts, 48 new tokens, 8 t2i prompts
  ArgReader r(args, "eval");
  auto positive = [&](int64_t v, const char* flag) {
    if (v < 1) fail(std::string("eval ") + flag, "must be >= 1");
    return v;
  };
  while (r.next()) {
    if (r.is("--out")) c.out = r.value();
    else if (r.is("--text")) c.data.text_files.push_back(r.value());
    else if (r.is("--chat")) c.data.chat_file = r.value();
    else if (r.is("--t2i-prompts")) c.data.t2i_file = r.value();
    else if (r.is("--no-text")) c.no_text = true;
    else if (r.is("--no-chat")) c.no_chat = true;
    else if (r.is("--no-t2i")) c.no_t2i = true;
    else if (r.is("--data-dir")) c.data_dir = r.value();
    else if (r.is("--max-text-tokens")) c.options.max_text_tokens = positive(r.int_value(), "--max-text-tokens");
    else if (r.is("--max-chat")) c.options.max_chat = int(positive(r.int_value(), "--max-chat"));
    else if (r.is("--max-new-tokens")) c.options.max_new_tokens = int(positive(r.int_value(), "--max-new-tokens"));
    else if (r.is("--max-t2i")) c.options.max_t2i = int(positive(r.int_value(), "--max-t2i"));
    else if (r.is("--steps")) c.steps = int(positive(r.int_value(), "--steps"));
    else if (r.is("--window")) c.options.window = positive(r.int_value(), "--window");
    else if (r.is("--seed")) c.options.seed = uint64_t(r.int_value());
    else if (r.is("--fake-quant")) c.fake_quant = r.value();
    else if (r.is("--threads")) kernels::set_num_threads(int(positive(r.int_value(), "--threads")));
    else if (r.is("--quiet")) c.quiet = true;
    else if (r.is("--force")) c.force = true;
    else if (r.is("--head")) c.quant_head = fwd::parse_head_format(r.value());
    else if (r.is("--vae")) c.vae = r.value();
    else if (r.is("--x2t-image")) c.x2t_image = r.value();
    else if (r.is("--x2t-video")) c.x2t_video = r.value();
    else if (r.is("--vit")) c.vit = r.value();
    else if (r.is("--x2t-resolution")) c.x2t_resolution = int(positive(r.int_value(), "--x2t-resolution"));
    else if (r.is("--max-x2t")) c.max_x2t = int(positive(r.int_value(), "--max-x2t"));
    else if (r.is("--vit-quant")) {
      c.vit_quant = r.value();
      if (c.vit_quant != "int4") fail("eval --vit-quant", "expected int4, got '" + c.vit_quant + "'");
    }
    else if (r.is("--dtype")) {
      const std::string v = r.value();
      if (v == "f32") c.storage = fwd::WeightStorage::F32;
      else if (v == "bf16") c.storage = fwd::WeightStorage::BF16;
      else fail("eval --dtype", "expected f32 or bf16, got '" + v + "'");
    } else if (r.positional()) {
      if (c.base.empty()) c.base = r.current();
      else if (c.quant.empty()) c.quant = r.current();
      else fail("eval", "unexpected argument '" + r.current() + "' (BASE and QUANT already given)");
    } else r.unknown();
  }
  if (c.base.empty() || c.quant.empty()) fail("eval", "needs BASE and QUANT model directories (see --help)");
  if (c.out.empty()) fail("eval", "needs --out REPORT_DIR");
  if (c.options.window < 2) fail("eval --window", "must be >= 2");
  return c;
}

}  // namespace

int cmd_eval(const Args& args) {
  for (const auto& a : args)
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
  EvalCli c = parse(args);
  io::Progress progress("eval", 1, "units");
  if (!c.quiet)
    c.options.progress = [&progress](int64_t done, int64_t total, const std::string& stage) {
      progress.set_total(double(total));
      progress.update(double(done), stage);
    };
  const api::EvalOutcome outcome = api::evaluate(c);
  progress.finish();
  const eval::EvalResult& r = outcome.result;

  if (r.has_und)
    std::printf("perplexity %.4f -> %.4f  KL mean %.4g p99 %.4g  top-1 %.2f%%\n", r.und.base_perplexity,
                r.und.quant_perplexity, r.und.kl_mean, r.und.kl_p99, 100 * r.und.top1_agreement);
  if (r.has_chat) std::printf("chat exact %.1f%%  Levenshtein %.4f\n", 100 * r.und.chat_exact_match, r.und.chat_levenshtein);
  if (r.has_x2t)
    std::printf("x2t exact %.1f%%  KL mean %.4g  top-1 %.2f%% (%zu questions%s)\n", 100 * r.x2t.exact_match, r.x2t.kl_mean,
                100 * r.x2t.top1, r.x2t.items.size(),
                r.x2t.quant_vit ? (", QUANT's ViT: " + r.x2t.quant_vit_note + ", feature rel. error " +
                                   std::to_string(r.x2t.vit_rel_error)).c_str()
                                : "");
  if (r.has_gen) std::printf("t2i latent rel. error %.4g  PSNR %.2f dB\n", r.gen.latent_rel_error, r.gen.latent_psnr_db);
  if (r.has_gen && r.gen.has_pictures)
    std::printf("t2i pictures PSNR %.2f dB  SSIM %.4f\n", r.gen.image_psnr_db, r.gen.image_ssim);
  std::printf("report: %s\n", (fs::path(c.out) / "report.md").string().c_str());
  return 0;
}

}  // namespace lq::cli
