#include "eval/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "eval/svg_chart.h"
#include "forward/toy_vae.h"
#include "io/error.h"
#include "io/png.h"
#include "model/spec.h"

namespace lq::eval {

namespace {

using nlohmann::json;

// JSON has no infinity: +inf (identical outputs, e.g. PSNR) becomes null.
json number(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

std::string path_label(fwd::Path p) { return model::path_name(p); }  // "und", "gen"
const char* const kKindNames[] = {"q", "k", "v", "o", "gate", "up", "down"};
std::string kind_name(fwd::LinearKind k) { return kKindNames[int(k)]; }

std::string f(double v, int digits = 4) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char b[64];
  std::snprintf(b, sizeof b, "%.*g", digits, v);
  return b;
}

std::string pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", v * 100);
  return b;
}

// One line of a Markdown table cell: no pipes or newlines, at most `n` characters.
std::string cell(std::string s, size_t n = 90) {
  for (char& c : s)
    if (c == '\n' || c == '\r' || c == '|') c = ' ';
  if (s.size() > n) s = s.substr(0, n) + "...";
  return s;
}

json linears_json(const LayerResult& l) {
  json a = json::array();
  for (const auto& e : l.linears)
    a.push_back({{"layer", e.id.layer}, {"path", path_label(e.id.path)}, {"kind", kind_name(e.id.kind)},
                 {"name", e.name}, {"rows", e.rows}, {"rel_error", number(e.rel_error)}});
  return a;
}

json data_json(const EvalResult& r, const ReportMeta& m) {
  json d = json::object();
  json texts = json::array();
  for (const auto& t : r.und.texts)
    texts.push_back({{"path", t.path}, {"tokens", t.tokens_total}, {"windows", t.windows}, {"tokens_scored", t.tokens_scored}});
  d["text"] = texts;
  d["window_tokens"] = m.options.window;
  if (r.has_chat) d["chat"] = {{"path", m.data.chat_file}, {"prompts", r.und.chat.size()}, {"max_new_tokens", m.options.max_new_tokens}};
  if (r.has_gen)
    d["t2i"] = {{"path", m.data.t2i_file}, {"prompts", r.gen.prompts.size()}, {"steps", r.gen.steps},
                {"seed_base", m.options.seed}, {"grid_thw", {r.gen.grid.t, r.gen.grid.h, r.gen.grid.w}},
                {"cfg_scale", m.options.sampler.cfg_scale}, {"shift", m.options.sampler.shift}};
  return d;
}

}  // namespace

std::string report_json(const EvalResult& r, const ReportMeta& m) {
  json j;
  j["base"] = m.base_dir;
  j["quant"] = m.quant_dir;
  j["seconds"] = m.seconds;
  j["data"] = data_json(r, m);
  if (r.has_und || r.has_chat) {
    json u = json::object();
    if (r.has_und) {
      u["tokens_scored"] = r.und.tokens_scored;
      u["base_perplexity"] = r.und.base_perplexity;
      u["quant_perplexity"] = r.und.quant_perplexity;
      u["kl_mean"] = r.und.kl_mean;
      u["kl_p99"] = r.und.kl_p99;
      u["top1_agreement"] = r.und.top1_agreement;
      json per = json::array();
      for (const auto& t : r.und.texts)
        per.push_back({{"path", t.path}, {"tokens_scored", t.tokens_scored}, {"base_perplexity", t.base_perplexity},
                       {"quant_perplexity", t.quant_perplexity}, {"kl_mean", t.kl_mean}, {"kl_p99", t.kl_p99},
                       {"kl_max", t.kl_max}, {"top1_agreement", t.top1_agreement}});
      u["texts"] = per;
    }
    if (r.has_chat) {
      json items = json::array();
      for (const auto& c : r.und.chat)
        items.push_back({{"question", c.question}, {"base_answer", c.base_answer}, {"quant_answer", c.quant_answer},
                         {"exact", c.exact}, {"levenshtein_similarity", c.levenshtein}, {"word_jaccard", c.jaccard}});
      u["chat"] = {{"prompts", r.und.chat.size()}, {"exact_match", r.und.chat_exact_match},
                   {"levenshtein_similarity", r.und.chat_levenshtein}, {"word_jaccard", r.und.chat_jaccard},
                   {"items", items}};
    }
    j["und"] = u;
  }
  if (r.has_x2t) {
    json items = json::array();
    for (const auto& it : r.x2t.items)
      items.push_back({{"kind", it.kind}, {"path", it.path}, {"question", it.question}, {"reference", it.reference},
                       {"base_answer", it.base_answer}, {"quant_answer", it.quant_answer}, {"exact", it.exact},
                       {"levenshtein_similarity", it.levenshtein}, {"vit_tokens", it.vit_tokens},
                       {"answer_tokens", it.answer_tokens}, {"kl_mean", it.kl_mean}, {"kl_max", it.kl_max},
                       {"top1_agreement", it.top1}, {"vit_rel_error", it.vit_rel_error}});
    j["x2t"] = {{"items", items}, {"exact_match", r.x2t.exact_match}, {"levenshtein_similarity", r.x2t.levenshtein},
                {"answer_tokens", r.x2t.tokens}, {"kl_mean", r.x2t.kl_mean}, {"top1_agreement", r.x2t.top1},
                {"quant_vit", r.x2t.quant_vit}, {"quant_vit_note", r.x2t.quant_vit_note},
                {"vit_rel_error", r.x2t.vit_rel_error}};
  }
  if (r.has_gen) {
    json g;
    g["prompts"] = r.gen.prompts.size();
    g["steps"] = r.gen.steps;
    g["latent_rel_error"] = number(r.gen.latent_rel_error);
    g["latent_psnr_db"] = number(r.gen.latent_psnr_db);
    g["velocity_cosine"] = r.gen.velocity_cosine;
    g["velocity_rel_error"] = number(r.gen.velocity_rel_error);
    if (r.gen.has_pictures) {
      g["image_psnr_db"] = number(r.gen.image_psnr_db);
      g["image_ssim"] = r.gen.image_ssim;
    }
    json steps = json::array(), buckets = json::array(), prompts = json::array();
    for (const auto& s : r.gen.velocity)
      steps.push_back({{"step", s.step}, {"tau", s.tau}, {"cfg", s.cfg}, {"cosine", s.cosine}, {"rel_error", number(s.rel_error)}});
    for (const auto& b : r.gen.buckets)
      buckets.push_back({{"tau_lo", b.lo}, {"tau_hi", b.hi}, {"evaluations", b.steps},
                         {"cosine", b.steps ? json(b.cosine) : json(nullptr)},
                         {"rel_error", b.steps ? number(b.rel_error) : json(nullptr)}});
    for (const auto& p : r.gen.prompts) {
      json pj = {{"caption", p.caption}, {"seed", p.seed}, {"latent_rel_error", number(p.latent_rel_error)},
                 {"latent_psnr_db", number(p.latent_psnr_db)}};
      if (r.gen.has_pictures) pj["image_psnr_db"] = number(p.image_psnr_db), pj["image_ssim"] = p.image_ssim;
      prompts.push_back(pj);
    }
    g["velocity_per_step"] = steps;
    g["velocity_per_tau_bucket"] = buckets;
    g["per_prompt"] = prompts;
    j["gen"] = g;
  }
  if (r.has_layers) {
    json hu = json::array(), hg = json::array();
    for (double v : r.layers.und_hidden_error) hu.push_back(number(v));
    for (double v : r.layers.gen_hidden_error) hg.push_back(number(v));
    j["layers"] = {{"und_probe_rows", r.layers.und_rows}, {"gen_probe_rows", r.layers.gen_rows},
                   {"und_hidden_rel_error", hu}, {"gen_hidden_rel_error", hg}, {"linears", linears_json(r.layers)}};
  }
  return j.dump(2) + "\n";
}

namespace {

// Per-linear error as one line per kind over layers, for one path.
std::string linear_plot(const LayerResult& l, fwd::Path path, int num_layers) {
  std::vector<ChartSeries> series;
  for (int k = 0; k < fwd::kNumLinearKinds; ++k) {
    ChartSeries s{kind_name(fwd::LinearKind(k)), {}, {}};
    for (const auto& e : l.linears)
      if (e.id.path == path && int(e.id.kind) == k) {
        s.x.push_back(e.id.layer);
        s.y.push_back(e.rel_error);
      }
    if (!s.x.empty()) series.push_back(s);
  }
  ChartSpec spec{"Per-linear output error, " + path_label(path) + " path", "layer",
                 "||W_q x - W x|| / ||W x||", true, {}, 820, 420};
  for (int i = 0; i < num_layers; ++i) spec.x_tick_labels.push_back(std::to_string(i));
  return line_chart_svg(spec, series);
}

std::string hidden_plot(const LayerResult& l) {
  std::vector<ChartSeries> series;
  auto add = [&](const std::string& name, const std::vector<double>& v) {
    ChartSeries s{name, {}, {}};
    for (size_t i = 0; i < v.size(); ++i) s.x.push_back(double(i)), s.y.push_back(v[i]);
    if (!v.empty()) series.push_back(s);
  };
  add("und rows (text)", l.und_hidden_error);
  add("gen rows (latents)", l.gen_hidden_error);
  ChartSpec spec{"Residual-stream error after each layer", "layer output (0 = input embeddings)",
                 "||h_q - h|| / ||h||", true, {}, 820, 420};
  for (size_t i = 0; i < std::max(l.und_hidden_error.size(), l.gen_hidden_error.size()); ++i)
    spec.x_tick_labels.push_back(std::to_string(i));
  return line_chart_svg(spec, series);
}

std::string velocity_plot(const GenResult& g) {
  ChartSeries rel{"relative error", {}, {}}, cos{"1 - cosine", {}, {}};
  for (const auto& s : g.velocity) {
    rel.x.push_back(s.tau), rel.y.push_back(s.rel_error);
    cos.x.push_back(s.tau), cos.y.push_back(1.0 - s.cosine);
  }
  ChartSpec spec{"Guided velocity error on BASE's trajectory (mean over prompts)", "tau' (1 = noise, 0 = clean)",
                 "error", true, {}, 820, 420};
  return line_chart_svg(spec, {rel, cos});
}

// Rows of [BASE | QUANT | 4 x |BASE - QUANT|] decoded toy images, 4x nearest upscale, gray gutters.
void write_side_by_side(const std::string& path, const GenResult& g, const fwd::T2iSettings& t2i) {
  const fwd::ToyVae vae{t2i.toy_patch, t2i.toy_mean, t2i.toy_std};
  const int scale = 4, gap = 8, w = g.grid.w * vae.patch * scale, h = g.grid.h * vae.patch * scale;
  const int W = 3 * w + 4 * gap, H = int(g.prompts.size()) * (h + gap) + gap;
  std::vector<uint8_t> img(size_t(W) * H * 3, 128);
  auto blit = [&](const std::vector<uint8_t>& rgb, int x0, int y0) {
    for (int y = 0; y < h; ++y)
      std::copy_n(rgb.begin() + long(size_t(y) * w * 3), w * 3, img.begin() + long((size_t(y0 + y) * W + x0) * 3));
  };
  for (size_t p = 0; p < g.prompts.size(); ++p) {
    const auto& gp = g.prompts[p];
    const std::vector<float> pb = fwd::toy_vae_decode(gp.base_latents.data(), g.grid, vae);
    const std::vector<float> pq = fwd::toy_vae_decode(gp.quant_latents.data(), g.grid, vae);
    std::vector<float> diff(pb.size());
    for (size_t i = 0; i < pb.size(); ++i) diff[i] = std::min(1.0f, 4.0f * std::fabs(pb[i] - pq[i]));
    const int y0 = gap + int(p) * (h + gap), pw = g.grid.w * vae.patch, ph = g.grid.h * vae.patch;
    blit(fwd::to_rgb8_upscaled(pb, pw, ph, scale), gap, y0);
    blit(fwd::to_rgb8_upscaled(pq, pw, ph, scale), 2 * gap + w, y0);
    blit(fwd::to_rgb8_upscaled(diff, pw, ph, scale), 3 * gap + 2 * w, y0);
  }
  io::write_png_rgb(path, img.data(), W, H);
}

void md_data(std::ostringstream& md, const EvalResult& r, const ReportMeta& m) {
  md << "## Data\n\n";
  // Only claim "held out" for the repository's evaluation set; other files are the user's to vouch for.
  bool shipped = true;
  auto check = [&](const std::string& p) { shipped = shipped && (p.empty() || p.find("data/eval/") != std::string::npos); };
  for (const auto& t : r.und.texts) check(t.path);
  check(r.has_chat ? m.data.chat_file : "");
  check(r.has_gen ? m.data.t2i_file : "");
  if (shipped)
    md << "Evaluation data is held out: the repository's `data/eval/` is written for the project and disjoint from "
          "the calibration data in `data/calib/` (see data/README.md). The files used here:\n\n";
  else
    md << "Files used (not all from the repository's held-out `data/eval/` set; whether they overlap the calibration "
          "data is not checked):\n\n";
  for (const auto& t : r.und.texts)
    md << "- text `" << t.path << "`: " << t.tokens_total << " tokens in " << t.windows << " windows of up to "
       << m.options.window << " tokens; " << t.tokens_scored << " tokens scored (positions 1.. of each window, logits "
       << "over the first len(tokenizer) columns)\n";
  if (r.has_chat)
    md << "- chat `" << m.data.chat_file << "`: " << r.und.chat.size() << " questions in the chat template, greedy, up to "
       << m.options.max_new_tokens << " new tokens, stop at `<|im_end|>`\n";
  if (r.has_gen)
    md << "- t2i `" << m.data.t2i_file << "`: " << r.gen.prompts.size() << " captions, latent grid " << r.gen.grid.t << "x"
       << r.gen.grid.h << "x" << r.gen.grid.w << ", " << r.gen.steps << " sampler steps, shift " << m.options.sampler.shift
       << ", CFG " << m.options.sampler.cfg_scale << " on " << m.options.sampler.cfg_min << " < tau' <= "
       << m.options.sampler.cfg_max << ", noise seed " << m.options.seed << " + prompt index\n";
  md << "\n";
}

void md_und(std::ostringstream& md, const EvalResult& r) {
  if (r.has_und) {
    md << "## Understanding path\n\n| text | tokens scored | BASE ppl | QUANT ppl | ppl change | KL mean | KL p99 | KL max | top-1 agreement |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (const auto& t : r.und.texts)
      md << "| `" << std::filesystem::path(t.path).filename().string() << "` | " << t.tokens_scored << " | "
         << f(t.base_perplexity, 5) << " | " << f(t.quant_perplexity, 5) << " | "
         << pct(t.quant_perplexity / t.base_perplexity - 1) << " | " << f(t.kl_mean) << " | " << f(t.kl_p99) << " | "
         << f(t.kl_max) << " | " << pct(t.top1_agreement) << " |\n";
    md << "| **all** | " << r.und.tokens_scored << " | " << f(r.und.base_perplexity, 5) << " | "
       << f(r.und.quant_perplexity, 5) << " | " << pct(r.und.quant_perplexity / r.und.base_perplexity - 1) << " | "
       << f(r.und.kl_mean) << " | " << f(r.und.kl_p99) << " | | " << pct(r.und.top1_agreement) << " |\n\n";
    md << "KL is KL(BASE || QUANT) in nats per scored token; top-1 agreement is the share of positions where both "
          "models' argmax (over len(tokenizer) columns) is the same token.\n\n";
  }
  if (r.has_chat) {
    md << "### Greedy chat answers (QUANT against BASE)\n\n| prompts | exact match | Levenshtein similarity | word Jaccard |\n"
          "|---:|---:|---:|---:|\n| "
       << r.und.chat.size() << " | " << pct(r.und.chat_exact_match) << " | " << f(r.und.chat_levenshtein) << " | "
       << f(r.und.chat_jaccard) << " |\n\n";
    md << "Levenshtein similarity = 1 - edit distance / longer length (Unicode characters); word Jaccard = shared "
          "words / all words (whitespace-split). Examples (least similar first):\n\n| question | BASE | QUANT | sim |\n|---|---|---|---:|\n";
    std::vector<const ChatItem*> items;
    for (const auto& c : r.und.chat) items.push_back(&c);
    std::stable_sort(items.begin(), items.end(), [](auto a, auto b) { return a->levenshtein < b->levenshtein; });
    for (size_t i = 0; i < items.size() && i < 5; ++i)
      md << "| " << cell(items[i]->question, 60) << " | " << cell(items[i]->base_answer) << " | "
         << cell(items[i]->quant_answer) << " | " << f(items[i]->levenshtein, 3) << " |\n";
    md << "\n";
  }
}

void md_x2t(std::ostringstream& md, const EvalResult& r) {
  if (!r.has_x2t) return;
  const auto& x = r.x2t;
  md << "## Image and video understanding (x2t)\n\n";
  md << "Each medium through " << (x.quant_vit ? "each model's own ViT (QUANT: " + x.quant_vit_note + ")" : "the same ViT")
     << " and Lance's x2t prompt; greedy answers of both models, and on BASE's answer (teacher forcing, with its "
        "closing `<|im_end|>`) KL(BASE || QUANT) per answer token and top-1 agreement.\n\n"
        "| items | answer tokens | exact match | Levenshtein sim. | KL mean | top-1 agreement |"
     << (x.quant_vit ? " ViT feature rel. error |" : "") << "\n|---:|---:|---:|---:|---:|---:|" << (x.quant_vit ? "---:|" : "")
     << "\n| " << x.items.size() << " | " << x.tokens << " | " << pct(x.exact_match) << " | " << f(x.levenshtein, 3) << " | "
     << f(x.kl_mean) << " | " << pct(x.top1) << " |";
  if (x.quant_vit) md << " " << f(x.vit_rel_error) << " |";
  md << "\n\n";
  md << "| medium | question | BASE | QUANT | KL mean | top-1 |\n|---|---|---|---|---:|---:|\n";
  for (const auto& it : x.items)
    md << "| " << it.kind << " `" << std::filesystem::path(it.path).filename().string() << "` (" << it.vit_tokens
       << " tokens) | " << cell(it.question, 60) << " | " << cell(it.base_answer) << " | " << cell(it.quant_answer) << " | "
       << f(it.kl_mean) << " | " << pct(it.top1) << " |\n";
  md << "\n";
}

void md_gen(std::ostringstream& md, const EvalResult& r, bool images) {
  if (!r.has_gen) return;
  const auto& g = r.gen;
  md << "## Generation path\n\n";
  md << "Final latents after the full CFG sampler from the same noise: relative error **" << f(g.latent_rel_error)
     << "**, PSNR **" << f(g.latent_psnr_db) << " dB** (mean over prompts; PSNR peak = range of BASE's latents; identical latents give inf here and null in "
        "report.json).\n\n";
  md << "Guided velocity (the one the sampler integrates: CFG-combined inside the CFG interval) of both models on "
        "BASE's trajectory: mean cosine "
     << f(g.velocity_cosine, 6) << ", mean relative error " << f(g.velocity_rel_error) << ".\n\n";
  md << "| tau' bucket | step evaluations | cosine | relative error |\n|---|---:|---:|---:|\n";
  for (const auto& b : g.buckets)
    md << "| " << f(b.lo, 2) << " - " << f(b.hi, 2) << " | " << b.steps << " | " << (b.steps ? f(b.cosine, 6) : "-")
       << " | " << (b.steps ? f(b.rel_error) : "-") << " |\n";
  md << "\n![velocity error per tau](velocity_per_tau.svg)\n\n";
  if (g.has_pictures) {
    md << "Decoded pictures (Wan2.2 VAE, 8-bit RGB as saved): PSNR **" << f(g.image_psnr_db) << " dB**, SSIM **"
       << f(g.image_ssim, 4) << "** (means over prompts; SSIM of Wang et al. with an 11 x 11 Gaussian window, as "
          "scikit-image computes it, averaged over frames and colour channels).\n\n";
    md << "| caption | seed | latent rel. error | latent PSNR dB | image PSNR dB | SSIM |\n|---|---:|---:|---:|---:|---:|\n";
    for (const auto& p : g.prompts)
      md << "| " << cell(p.caption) << " | " << p.seed << " | " << f(p.latent_rel_error) << " | " << f(p.latent_psnr_db) << " | "
         << f(p.image_psnr_db) << " | " << f(p.image_ssim, 4) << " |\n";
  } else {
    md << "| caption | seed | latent rel. error | PSNR dB |\n|---|---:|---:|---:|\n";
    for (const auto& p : g.prompts)
      md << "| " << cell(p.caption) << " | " << p.seed << " | " << f(p.latent_rel_error) << " | " << f(p.latent_psnr_db) << " |\n";
  }
  md << "\n";
  if (images)
    md << "Decoded with " << (g.has_pictures ? "the Wan2.2 VAE (first frame)" : "the toy VAE")
       << ", one row per caption in the table's order: **BASE | QUANT | 4 x |BASE - QUANT|**.\n\n"
          "![side by side](t2i_side_by_side.png)\n\n";
}

void md_layers(std::ostringstream& md, const EvalResult& r, const ReportMeta& m) {
  if (!r.has_layers) return;
  const auto& l = r.layers;
  md << "## Where the error comes from\n\n";
  md << "Each target linear gets BASE's own input rows for a probe (" << l.und_rows << " text tokens";
  if (l.gen_rows) md << "; " << l.gen_rows << " latent rows of the first caption half-way through BASE's trajectory";
  md << "); the error is ||W_q x - W x|| / ||W x|| over those rows, so it isolates each linear's weights.\n\n";
  if (!m.options.quant_folds.empty())
    md << "QUANT folds activation-aware scales into neighbouring weights (input norm -> q/k/v, post-attention norm -> "
          "gate/up, v -> o, up -> down); its fold scales (`" << formats::kFoldScalesFile << "`, " << m.options.quant_folds.size()
       << " linears) put every linear back in the original basis: x / col_scale in, / row_scale out.\n\n";
  else
    md << "Caveat: QUANT has no fold-scale file. A checkpoint from another tool that folded scales into neighbouring "
          "weights (AWQ) computes a different function per linear by design, and its per-linear numbers would mix "
          "the fold with the rounding error; the residual-stream error below is not affected.\n\n";
  md << "![per-linear und](linear_error_und.svg)\n\n";
  if (l.gen_rows) md << "![per-linear gen](linear_error_gen.svg)\n\n";
  std::vector<LinearError> worst = l.linears;
  std::stable_sort(worst.begin(), worst.end(), [](const auto& a, const auto& b) { return a.rel_error > b.rel_error; });
  md << "Linears that hurt most:\n\n| rank | linear | layer | path | kind | rows | rel. error |\n|---:|---|---:|---|---|---:|---:|\n";
  for (size_t i = 0; i < worst.size() && i < 10; ++i)
    md << "| " << i + 1 << " | `" << worst[i].name << "` | " << worst[i].id.layer << " | " << path_label(worst[i].id.path)
       << " | " << kind_name(worst[i].id.kind) << " | " << worst[i].rows << " | " << f(worst[i].rel_error) << " |\n";
  md << "\nResidual stream (output of each layer, same probes, each model running its own weights):\n\n"
        "![hidden error](hidden_error.svg)\n\n| layer output | und rel. error | gen rel. error |\n|---:|---:|---:|\n";
  const size_t n = std::max(l.und_hidden_error.size(), l.gen_hidden_error.size());
  for (size_t i = 0; i < n; ++i)
    md << "| " << i << " | " << (i < l.und_hidden_error.size() ? f(l.und_hidden_error[i]) : "-") << " | "
       << (i < l.gen_hidden_error.size() ? f(l.gen_hidden_error[i]) : "-") << " |\n";
  md << "\nAll linears (layer, path, kind, relative error) are in report.json under `layers.linears`.\n\n";
}

}  // namespace

std::vector<std::string> write_report(const std::string& out_dir, const EvalResult& r, const ReportMeta& m) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) fail(out_dir, "cannot create report directory: " + ec.message());
  std::vector<std::string> written;
  auto put = [&](const std::string& name, const std::string& text) {
    write_text_file((fs::path(out_dir) / name).string(), text);
    written.push_back(name);
  };
  const bool toy_images = r.has_gen && m.toy_vae && !r.gen.has_pictures && !r.gen.prompts.empty() && r.gen.grid.t == 1;
  const bool images = toy_images || (r.has_gen && r.gen.has_pictures);
  if (r.has_layers) {
    put("linear_error_und.svg", linear_plot(r.layers, fwd::Path::Und, m.num_layers));
    if (r.layers.gen_rows) put("linear_error_gen.svg", linear_plot(r.layers, fwd::Path::Gen, m.num_layers));
    put("hidden_error.svg", hidden_plot(r.layers));
  }
  if (r.has_gen) put("velocity_per_tau.svg", velocity_plot(r.gen));
  if (toy_images) write_side_by_side((fs::path(out_dir) / "t2i_side_by_side.png").string(), r.gen, m.t2i);
  if (images) written.push_back("t2i_side_by_side.png");  // the Wan2.2 pictures: written by compare_pictures
  std::ostringstream md;
  md << "# lance-quant evaluation report\n\n- BASE: `" << m.base_dir << "`\n- QUANT: `" << m.quant_dir << "`\n- run time: "
     << f(m.seconds, 3) << " s\n\n";
  md << "## Summary\n\n| metric | value |\n|---|---:|\n";
  if (r.has_und)
    md << "| perplexity BASE -> QUANT | " << f(r.und.base_perplexity, 5) << " -> " << f(r.und.quant_perplexity, 5) << " ("
       << pct(r.und.quant_perplexity / r.und.base_perplexity - 1) << ") |\n| KL mean / p99 (nats/token) | "
       << f(r.und.kl_mean) << " / " << f(r.und.kl_p99) << " |\n| top-1 agreement | " << pct(r.und.top1_agreement) << " |\n";
  if (r.has_chat)
    md << "| chat exact match / Levenshtein sim. | " << pct(r.und.chat_exact_match) << " / " << f(r.und.chat_levenshtein, 3)
       << " |\n";
  if (r.has_x2t)
    md << "| x2t exact match / KL mean / top-1 (" << r.x2t.items.size() << " questions) | " << pct(r.x2t.exact_match) << " / "
       << f(r.x2t.kl_mean) << " / " << pct(r.x2t.top1) << " |\n";
  if (r.has_gen)
    md << "| t2i final latent rel. error / PSNR | " << f(r.gen.latent_rel_error) << " / " << f(r.gen.latent_psnr_db)
       << " dB |\n| t2i velocity cosine (mean) | " << f(r.gen.velocity_cosine, 6) << " |\n";
  if (r.has_gen && r.gen.has_pictures)
    md << "| t2i decoded pictures PSNR / SSIM | " << f(r.gen.image_psnr_db) << " dB / " << f(r.gen.image_ssim, 4) << " |\n";
  md << "\n";
  md_data(md, r, m);
  md_und(md, r);
  md_x2t(md, r);
  md_gen(md, r, images);
  md_layers(md, r, m);
  put("report.json", report_json(r, m));
  put("report.md", md.str());
  return written;
}

}  // namespace lq::eval
