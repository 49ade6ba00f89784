#include "api/api.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "eval/fake_quant.h"
#include "eval/locate.h"
#include "eval/report.h"
#include "formats/fold_scales.h"
#include "forward/text.h"
#include "io/error.h"

namespace lq::api {

namespace fs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

tok::Tokenizer load_tokenizer(const std::string& dir) {
  const bool has = fs::exists(fs::path(dir) / "tokenizer.json") ||
                   (fs::exists(fs::path(dir) / "vocab.json") && fs::exists(fs::path(dir) / "merges.txt"));
  if (!has) fail(dir, "model directory has no tokenizer (tokenizer.json, or vocab.json + merges.txt)");
  return tok::Tokenizer::load(dir);
}

Model load_model(const std::string& dir, const fwd::LoadOptions& options) {
  tok::Tokenizer tokenizer = load_tokenizer(dir);
  fwd::Engine engine = fwd::Engine::load(dir, options);
  return Model{dir, std::move(tokenizer), std::move(engine)};
}

// ---- text ----------------------------------------------------------------------------------------

nlohmann::json TextResult::to_json() const {
  return {{"prompt_tokens", prompt_ids.size()}, {"generated_ids", generated_ids}, {"text", text}, {"seconds", seconds}};
}

std::vector<int32_t> prompt_ids(const Model& m, const std::string& prompt, bool raw) {
  return m.tokenizer.encode(raw ? prompt : fwd::chat_prompt(prompt));
}

TextResult generate(const Model& m, const TextRequest& r) {
  if (r.prompt.empty()) fail("--prompt", "missing or empty");
  if (r.max_new_tokens < 1) fail("--max-new-tokens", "must be >= 1");
  TextResult out;
  out.prompt_ids = prompt_ids(m, r.prompt, r.raw);
  const int64_t limit = m.engine.config().max_position_embeddings;
  if (int64_t(out.prompt_ids.size()) >= limit)
    fail("--prompt", "prompt is " + std::to_string(out.prompt_ids.size()) + " tokens; the model's position limit " +
                         "(max_position_embeddings) is " + std::to_string(limit));
  fwd::GreedyOptions g;
  g.max_new_tokens = r.max_new_tokens;
  g.vocab_limit = m.engine.config().len_tokenizer;
  if (const auto end = m.tokenizer.token_id("<|im_end|>")) g.stop_id = *end;
  const auto t0 = std::chrono::steady_clock::now();
  out.generated_ids = fwd::greedy_decode(m.engine, out.prompt_ids, g);
  out.seconds = seconds_since(t0);
  out.text = m.tokenizer.decode(out.generated_ids);
  return out;
}

std::vector<float> logits(const Model& m, const std::vector<int32_t>& ids) {
  const int64_t n = int64_t(ids.size());
  if (n == 0) fail("logits", "no token ids given");
  const int64_t limit = m.engine.config().max_position_embeddings;
  if (n > limit)
    fail("logits", std::to_string(n) + " tokens exceed the model's position limit (max_position_embeddings) " +
                       std::to_string(limit));
  const fwd::Chunk chunk = fwd::text_chunk(m.engine, ids, fwd::text_positions(n), {{n, fwd::SplitMode::Causal}});
  const std::vector<float> normed = m.engine.forward(chunk, nullptr, fwd::CacheWrite::No);
  return m.engine.logits(normed.data(), n);
}

// ---- text-to-image -------------------------------------------------------------------------------

T2iPlan plan_t2i(const std::string& model_dir, const T2iRequest& r) {
  T2iPlan p;
  p.settings = fwd::load_t2i_settings(model_dir);
  if (r.height > 0 || r.width > 0) {
    if (r.height <= 0 || r.width <= 0 || r.height % 16 || r.width % 16)
      fail("--height/--width", "both needed, positive multiples of 16 (latent grid = size / 16)");
    p.grid = {1, r.height / 16, r.width / 16};
  } else {
    if (!p.settings.grid_from_config)
      fail("t2i", "lance_config.json has no t2i_latent_grid_thw: give --height and --width in pixels");
    p.grid = p.settings.grid;
  }
  return p;
}

T2iResult text_to_image(const Model& m, const T2iRequest& r) {
  if (r.prompt.empty()) fail("--prompt", "missing or empty");
  const T2iPlan plan = plan_t2i(m.dir, r);
  const fwd::Engine& e = m.engine;
  fwd::check_latent_grid(plan.grid, e.config());
  fwd::SamplerOptions so = plan.settings.sampler;
  if (r.steps) so.steps = *r.steps;
  if (r.shift) so.shift = *r.shift;
  if (r.cfg) so.cfg_scale = *r.cfg;
  if (r.cfg_min) so.cfg_min = *r.cfg_min;
  if (r.cfg_max) so.cfg_max = *r.cfg_max;
  if (so.steps < 1) fail("--steps", "must be >= 1");
  if (r.on_step) {
    const int steps = so.steps;
    so.on_step = [&r, steps](int step, double) { r.on_step(step, steps); };
  }
  fwd::T2iPrompt prompt = fwd::t2i_prompt(m.tokenizer, r.prompt, plan.settings.instruction, plan.grid);
  const int64_t needed = prompt.cond.noise_positions.back()[0] + 1;
  if (needed > e.config().max_position_embeddings)
    fail("--prompt", "the t2i sequence needs positions up to " + std::to_string(needed) +
                         ", beyond max_position_embeddings = " + std::to_string(e.config().max_position_embeddings));
  T2iResult out;
  out.grid = plan.grid;
  out.channels = e.config().latent_channels;
  out.steps = so.steps;
  const auto t0 = std::chrono::steady_clock::now();
  fwd::T2iSampler sampler(e, std::move(prompt));
  out.latents = sampler.sample(fwd::normal_noise(r.seed, plan.grid.tokens() * out.channels), so);
  out.seconds = seconds_since(t0);
  return out;
}

// ---- calibration ---------------------------------------------------------------------------------

namespace {

// Rows seen per target linear, summarised per path ("und" / "gen").
std::map<std::string, PathCoverage> coverage(const calib::StatsFile& s, const std::vector<std::string>& uncovered) {
  std::map<std::string, PathCoverage> out;
  for (const auto& [name, st] : s.linears) {
    auto& c = out[name.find("_moe_gen") != std::string::npos ? "gen" : "und"];
    ++c.linears;
    c.covered += st.all.count > 0;
    c.min_rows = c.min_rows < 0 ? st.all.count : std::min(c.min_rows, st.all.count);
    c.max_rows = std::max(c.max_rows, st.all.count);
  }
  for (const auto& name : uncovered) {
    auto& c = out[name.find("_moe_gen") != std::string::npos ? "gen" : "und"];
    if (!s.linears.count(name)) ++c.linears, c.min_rows = 0;
  }
  return out;
}

void check_output(const std::string& out, bool force) {
  if (out.empty()) fail("--out", "an output file is required");
  if (fs::exists(out) && !force) fail(out, "already exists (use --force to overwrite)");
}

}  // namespace

nlohmann::json CalibrateResult::to_json() const {
  nlohmann::json j = {{"out", out}, {"seconds", seconds}, {"forward_seconds", forward_seconds}, {"sources", sources},
                      {"model_fingerprint", model_fingerprint}, {"uncovered", uncovered}};
  for (const auto& [path, c] : coverage)
    j["coverage"][path] = {{"linears", c.linears}, {"covered", c.covered}, {"min_rows", c.min_rows}, {"max_rows", c.max_rows}};
  return j;
}

CalibrateResult calibrate(const CalibrateRequest& r, const std::function<void(int64_t, int64_t)>& progress) {
  if (r.model_dir.empty()) fail("calibrate", "a MODEL directory is required (see --help)");
  if (r.sources.empty()) fail("calibrate", "at least one --calib KIND:FILE is required");
  calib::CalibOptions o = r.options;
  if (o.capture) check_output(r.out, r.force);

  const auto t0 = std::chrono::steady_clock::now();
  fwd::Engine engine = fwd::Engine::load(r.model_dir, r.load);
  const tok::Tokenizer tokenizer = tok::Tokenizer::load(r.model_dir);
  o.sampler = fwd::load_t2i_settings(r.model_dir).sampler;
  if (r.steps > 0) o.sampler.steps = r.steps;
  o.progress = progress;
  const auto t_run = std::chrono::steady_clock::now();
  calib::StatsFile stats = calib::calibrate(r.model_dir, engine, tokenizer, r.sources, o);
  CalibrateResult res;
  res.out = r.out;
  res.forward_seconds = seconds_since(t_run);
  if (!o.capture) return res;
  res.uncovered = calib::uncovered_linears(stats, r.model_dir);
  res.coverage = coverage(stats, res.uncovered);
  res.seconds = seconds_since(t0);
  res.sources = stats.data_sources;
  res.model_fingerprint = stats.model_fingerprint;

  if (!res.uncovered.empty() && !r.allow_partial) {
    std::string list;
    for (size_t i = 0; i < res.uncovered.size() && i < 8; ++i) list += "\n  " + res.uncovered[i];
    if (res.uncovered.size() > 8) list += "\n  ... (" + std::to_string(res.uncovered.size() - 8) + " more)";
    fail(r.model_dir, std::to_string(res.uncovered.size()) + " target linears saw no calibration rows (use a source for that path, "
                      "e.g. t2i:FILE for the gen path, or --allow-partial):" + list);
  }
  if (!res.uncovered.empty()) stats.extra_metadata["partial"] = "true";
  stats.save(r.out);
  res.written = true;
  return res;
}

// ---- quantization --------------------------------------------------------------------------------

pipeline::QuantizeOptions quantize_options(pipeline::QuantizeOptions o, const std::string& scheme, int64_t group,
                                           bool sym, const std::string& gen_scheme,
                                           const std::vector<std::string>& overrides) {
  if (o.model_dir.empty()) fail("quantize", "a MODEL directory is required (see --help)");
  o.scheme = pipeline::parse_scheme_choice(scheme, group, sym);
  if (!gen_scheme.empty()) o.gen_format = pipeline::parse_format_spec(gen_scheme, group, sym, "--gen-scheme");
  for (const auto& ov : overrides) o.overrides.push_back(pipeline::parse_override(ov, group, sym));
  // lance-quant-v1 stores NVFP4 block scales as bf16 without a tensor scale: e4m3 * tensor scale must be
  // exact in bf16, which a power-of-two tensor scale guarantees.
  if (o.scheme.params.scheme == quant::Scheme::NvFp4 && o.format == formats::FormatId::LanceQuantV1)
    o.scheme.params.nvfp4_pow2_tensor_scale = true;
  return o;
}

pipeline::QuantizeReport quantize(const pipeline::QuantizeOptions& o) {
  pipeline::check_output_dir(o.out_dir, o.force);  // before any slow work
  return pipeline::quantize_model(o);
}

// ---- evaluation ----------------------------------------------------------------------------------

eval::EvalOptions EvalRequest::default_eval_options() {
  eval::EvalOptions o;
  o.max_chat = 16;
  o.max_new_tokens = 48;
  o.max_t2i = 8;
  return o;
}

namespace {

std::string eval_data_dir(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* env = std::getenv("LQ_DATA_DIR")) return env;
  return eval::find_data_dir("eval");
}

void fill_default_data(EvalRequest& c, const fwd::T2iSettings& t2i) {
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

EvalOutcome evaluate(EvalRequest c) {
  if (c.base.empty() || c.quant.empty()) fail("eval", "needs BASE and QUANT model directories (see --help)");
  if (c.out.empty()) fail("eval", "needs --out REPORT_DIR");
  if (c.options.window < 2) fail("eval --window", "must be >= 2");
  const fwd::T2iSettings t2i = fwd::load_t2i_settings(c.base);
  fill_default_data(c, t2i);
  if (c.no_text) c.data.text_files.clear();
  if (c.no_chat) c.data.chat_file.clear();
  if (c.no_t2i) c.data.t2i_file.clear();
  if (!c.data.t2i_file.empty() && !t2i.grid_from_config)
    fail("eval", "BASE's lance_config.json has no t2i_latent_grid_thw; pass --no-t2i");
  c.options.sampler = t2i.sampler;
  if (c.steps) c.options.sampler.steps = *c.steps;

  const auto t0 = std::chrono::steady_clock::now();
  const tok::Tokenizer tok = tok::Tokenizer::load(c.base);
  fwd::LoadOptions load;
  load.storage = c.storage;
  fwd::Engine base = fwd::Engine::load(c.base, load);
  fwd::LoadOptions quant_load = load;
  quant_load.head = c.quant_head;
  fwd::Engine quant = fwd::Engine::load(c.quant, quant_load);  // a quantized directory loads its own linears
  if (!c.fake_quant.empty()) eval::fake_quantize_engine(quant, eval::parse_fake_quant(c.fake_quant, "eval --fake-quant"));
  else c.options.quant_folds = formats::read_fold_scales(c.quant);  // AWQ checkpoints: per-linear errors in the original basis

  EvalOutcome out;
  out.result = eval::evaluate(base, quant, tok, t2i, c.data, c.options);

  eval::ReportMeta meta;
  meta.base_dir = c.base;
  meta.quant_dir = c.quant + (c.fake_quant.empty() ? "" : " (fake-quantized " + c.fake_quant + ")");
  meta.data = c.data;
  meta.options = c.options;
  meta.num_layers = base.num_layers();
  meta.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  meta.toy_vae = t2i.has_toy_vae;
  meta.t2i = t2i;
  eval::write_report(c.out, out.result, meta);
  std::ifstream written(fs::path(c.out) / "report.json");  // exactly what the CLI leaves behind
  out.report = nlohmann::json::parse(written);
  out.report_md = (fs::path(c.out) / "report.md").string();
  return out;
}

}  // namespace lq::api
