// `lance-quant eval BASE QUANT --out REPORT_DIR`: compares a quantized model with its original on
// held-out data (both paths) and writes report.md / report.json / plots (see src/eval/).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <unistd.h>

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
               "  --vit-quant int4      QUANT's ViT linears in 4-bit (RTN at load): the cost of a 4-bit ViT\n"
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

struct EvalCli {
  std::string base, quant, out, data_dir;
  eval::EvalData data;
  bool no_text = false, no_chat = false, no_t2i = false, quiet = false, force = false;
  eval::EvalOptions options;
  std::optional<int> steps;
  std::string fake_quant;
  fwd::WeightStorage storage = fwd::WeightStorage::F32;
  fwd::HeadFormat quant_head = fwd::HeadFormat::Stored;
  std::string vae;
  std::string x2t_image, x2t_video, vit, vit_quant;
  int x2t_resolution = 0, max_x2t = 0;
};

EvalCli parse(const Args& args) {
  EvalCli c;
  c.options.max_chat = 16;
  c.options.max_new_tokens = 48;
  c.options.max_t2i = 8;
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

std::string eval_data_dir(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* env = std::getenv("LQ_DATA_DIR")) return env;
  return eval::find_data_dir("eval");
}

void fill_default_data(EvalCli& c, const fwd::T2iSettings& t2i) {
  const bool need = (!c.no_text && c.data.text_files.empty()) || (!c.no_chat && c.data.chat_file.empty()) ||
                    (!c.no_t2i && c.data.t2i_file.empty());
  if (!need) return;
  const std::string dir = eval_data_dir(c.data_dir);
  if (dir.empty())
    fail("eval", "no evaluation data given and data/eval not found (pass --text/--chat/--t2i-prompts, --data-dir, "
                 "or set LQ_DATA_DIR)");
  auto file = [&](const char* name) {
    const fs::path p = fs::path(dir) / name;
    if (!fs::exists(p)) fail(p.string(), "default evaluation file is missing");
    return p.string();
  };
  if (!c.no_text && c.data.text_files.empty()) c.data.text_files.push_back(file("text.txt"));
  if (!c.no_chat && c.data.chat_file.empty()) c.data.chat_file = file("chat.jsonl");
  if (!c.no_t2i && c.data.t2i_file.empty()) c.data.t2i_file = file(t2i.has_toy_vae ? "t2i_toy_prompts.txt" : "t2i_prompts.txt");
}

}  // namespace

int cmd_eval(const Args& args) {
  for (const auto& a : args)
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
  EvalCli c = parse(args);
  io::require_directory(c.base, "BASE model directory");
  io::require_directory(c.quant, "QUANT model directory");
  const fwd::T2iSettings t2i = fwd::load_t2i_settings(c.base);
  fill_default_data(c, t2i);
  if (c.no_text) c.data.text_files.clear();
  if (c.no_chat) c.data.chat_file.clear();
  if (c.no_t2i) c.data.t2i_file.clear();
  if (!c.data.t2i_file.empty() && !t2i.grid_from_config)
    fail("eval", "BASE's lance_config.json has no t2i_latent_grid_thw; pass --no-t2i");
  c.options.sampler = t2i.sampler;
  if (c.steps) c.options.sampler.steps = *c.steps;
  // Inputs are checked before the engines load: text files are UTF-8, the report goes elsewhere.
  std::vector<std::string> text_files = {c.data.chat_file, c.data.t2i_file, c.x2t_image, c.x2t_video};
  for (const auto& f : c.data.text_files) text_files.push_back(f);
  std::vector<std::string> inputs = {c.base, c.quant, c.vae, c.vit};
  for (const auto& f : text_files)
    if (!f.empty()) {
      io::require_file(f, "evaluation file");
      io::check_text(io::read_file(f, "evaluation file"), f);
      inputs.push_back(f);
    }
  io::check_output_dir(c.out, c.force, inputs, "eval --out");

  // The VAE is checked before the long evaluation starts.
  std::optional<vae::WanVae> vae;
  if (!c.vae.empty()) vae.emplace(vae::WanVae::load(c.vae));
  const auto t0 = std::chrono::steady_clock::now();
  const tok::Tokenizer tok = tok::Tokenizer::load(c.base);
  fwd::LoadOptions load;
  load.storage = c.storage;
  fwd::Engine base = fwd::Engine::load(c.base, load);
  if (vae && vae->config().z_dim != base.config().latent_channels)
    fail(c.vae, "VAE latents have " + std::to_string(vae->config().z_dim) + " channels, the model's " +
                    std::to_string(base.config().latent_channels));
  fwd::LoadOptions quant_load = load;
  quant_load.head = c.quant_head;
  fwd::Engine quant = fwd::Engine::load(c.quant, quant_load);  // a quantized directory loads its own linears
  if (!c.fake_quant.empty()) eval::fake_quantize_engine(quant, eval::parse_fake_quant(c.fake_quant, "eval --fake-quant"));
  else c.options.quant_folds = formats::read_fold_scales(c.quant);  // AWQ checkpoints: per-linear errors in the original basis

  io::Progress progress("eval", 1, "units");
  if (!c.quiet)
    c.options.progress = [&progress](int64_t done, int64_t total, const std::string& stage) {
      progress.set_total(double(total));
      progress.update(double(done), stage);
    };
  // x2t items read (and their media checked) before the long work.
  std::vector<vit::X2tItem> x2t_items;
  if (!c.x2t_image.empty()) x2t_items = vit::read_x2t_jsonl(c.x2t_image, vit::MediaKind::Image);
  if (!c.x2t_video.empty())
    for (auto& it : vit::read_x2t_jsonl(c.x2t_video, vit::MediaKind::Video)) x2t_items.push_back(std::move(it));
  if (c.max_x2t > 0 && int(x2t_items.size()) > c.max_x2t) x2t_items.resize(size_t(c.max_x2t));
  std::optional<vit::Vit> base_vit, quant_vit;
  std::string vit_note;
  if (!x2t_items.empty()) {
    if (c.vit.empty() && !vit::model_has_vit(c.base))
      fail("eval", "x2t data needs the ViT: --vit DIR (vit.safetensors + config.json) or a BASE with vit_model.* tensors");
    vit::VitLoadOptions vo;
    vo.storage = c.storage;
    const std::string where = c.vit.empty() ? c.base : c.vit;
    base_vit.emplace(vit::Vit::load(where, vo));
    if (c.vit_quant == "int4") {
      quant_vit.emplace(vit::Vit::load(where, vo));
      vit_note = "ViT linears RTN INT4 at load (" + vit::quantize_linears_rtn_int4(*quant_vit) + ")";
    }
  } else if (!c.vit.empty() || !c.vit_quant.empty()) {
    fail("eval --vit", "only used with --x2t-image / --x2t-video");
  }
  eval::EvalResult r = eval::evaluate(base, quant, tok, t2i, c.data, c.options);
  if (!x2t_items.empty()) {
    vit::X2tSettings xs;
    if (c.x2t_resolution) xs.image_resolution = xs.video_resolution = c.x2t_resolution;
    int done = 0;
    r.x2t = eval::evaluate_x2t(base, quant, *base_vit, quant_vit ? *quant_vit : *base_vit, tok, x2t_items, xs,
                               vit::temporal_step(c.base, base_vit->config()), c.options.max_new_tokens, [&] {
                                 if (c.options.progress) c.options.progress(++done, int64_t(x2t_items.size()), "x2t");
                               });
    r.x2t.quant_vit_note = vit_note;
    r.has_x2t = true;
  }
  progress.finish();
  io::PartialOutputDir report_dir(c.out, "eval");  // every file of the report goes here first
  if (vae && r.has_gen) {
    eval::compare_pictures(*vae, r.gen, (report_dir.path() / "t2i_side_by_side.png").string());
  }

  eval::ReportMeta meta;
  meta.base_dir = c.base;
  meta.quant_dir = c.quant + (c.fake_quant.empty() ? "" : " (fake-quantized " + c.fake_quant + ")");
  meta.data = c.data;
  meta.options = c.options;
  meta.num_layers = base.num_layers();
  meta.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  meta.toy_vae = t2i.has_toy_vae;
  meta.t2i = t2i;
  eval::write_report(report_dir.path().string(), r, meta);
  report_dir.commit(nlohmann::json{{"base", c.base}, {"quant", c.quant}}.dump());

  if (r.has_und)
    std::printf("perplexity %.4f -> %.4f  KL mean %.4g p99 %.4g  top-1 %.2f%%\n", r.und.base_perplexity,
                r.und.quant_perplexity, r.und.kl_mean, r.und.kl_p99, 100 * r.und.top1_agreement);
  if (r.has_chat) std::printf("chat exact %.1f%%  Levenshtein %.4f\n", 100 * r.und.chat_exact_match, r.und.chat_levenshtein);
  if (r.has_x2t)
    std::printf("x2t exact %.1f%%  KL mean %.4g  top-1 %.2f%% (%zu questions%s)\n", 100 * r.x2t.exact_match, r.x2t.kl_mean,
                100 * r.x2t.top1, r.x2t.items.size(), vit_note.empty() ? "" : ", QUANT with a 4-bit ViT");
  if (r.has_gen) std::printf("t2i latent rel. error %.4g  PSNR %.2f dB\n", r.gen.latent_rel_error, r.gen.latent_psnr_db);
  if (r.has_gen && r.gen.has_pictures)
    std::printf("t2i pictures PSNR %.2f dB  SSIM %.4f\n", r.gen.image_psnr_db, r.gen.image_ssim);
  std::printf("report: %s\n", (fs::path(c.out) / "report.md").string().c_str());
  return 0;
}

}  // namespace lq::cli
