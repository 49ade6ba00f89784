// `lance-quant run MODEL --task text|t2i`: greedy text answers (KV cache) and text-to-image
// sampling (rectified flow + CFG) on the native forward.
#include <cstdio>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>

#include "api/api.h"
#include "cli/commands.h"
#include "forward/forward.h"
#include "forward/prompts.h"
#include "forward/t2i.h"
#include "forward/toy_vae.h"
#include "io/error.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "kernels/parallel.h"

namespace lq::cli {

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: lance-quant run MODEL --task text --prompt TEXT [--max-new-tokens N] [--raw] [--json]\n"
               "       lance-quant run MODEL --task t2i --prompt CAPTION --seed S --out FILE.safetensors [--png FILE.png]\n"
               "                             [--steps 30] [--shift 3.5] [--cfg 4.0] [--cfg-interval 0.4,1.0]\n"
               "                             [--height H --width W]   (pixels; latent grid h = H/16, when\n"
               "                                                       lance_config.json has no t2i_latent_grid_thw)\n"
               "common: [--dtype f32|bf16] (weight storage, default f32) [--threads N]\n"
               "        [--head stored|int4] (int4: the lm_head quantized at load, RTN INT4 g64, for faster decoding)\n\n"
               "text: Qwen chat template (unless --raw), greedy decoding with a KV cache, stops at <|im_end|>.\n"
               "t2i:  writes the final latents [t, h, w, C]; --png decodes them with the toy VAE of lance-mini\n"
               "      (4x nearest upscale).\n");
}

struct RunOptions {
  std::string model, task, prompt, out, png, logits;
  int max_new_tokens = 256;
  bool raw = false, json = false;
  uint64_t seed = 0;
  bool have_seed = false;
  fwd::WeightStorage storage = fwd::WeightStorage::F32;
  fwd::HeadFormat head = fwd::HeadFormat::Stored;
  // Sampler overrides (unset: lance_config.json / Lance defaults).
  std::optional<int> steps;
  std::optional<double> shift, cfg, cfg_min, cfg_max;
  int height = 0, width = 0;
};

long long parse_int(const std::string& flag, const std::string& v) {
  try {
    size_t used = 0;
    const long long x = std::stoll(v, &used);
    if (used == v.size()) return x;
  } catch (const std::exception&) {
  }
  fail(flag, "expected an integer, got '" + v + "'");
}

double parse_double(const std::string& flag, const std::string& v) {
  try {
    size_t used = 0;
    const double x = std::stod(v, &used);
    if (used == v.size()) return x;
  } catch (const std::exception&) {
  }
  fail(flag, "expected a number, got '" + v + "'");
}

RunOptions parse(const Args& args) {
  RunOptions o;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) fail(a, "needs a value");
      return args[++i];
    };
    if (a == "--task") o.task = value();
    else if (a == "--prompt") o.prompt = value();
    else if (a == "--max-new-tokens") o.max_new_tokens = int(parse_int(a, value()));
    else if (a == "--raw") o.raw = true;
    else if (a == "--json") o.json = true;
    else if (a == "--seed") { o.seed = uint64_t(parse_int(a, value())); o.have_seed = true; }
    else if (a == "--steps") o.steps = int(parse_int(a, value()));
    else if (a == "--shift") o.shift = parse_double(a, value());
    else if (a == "--cfg") o.cfg = parse_double(a, value());
    else if (a == "--cfg-interval") {
      const std::string v = value();
      const size_t comma = v.find(',');
      if (comma == std::string::npos) fail(a, "expected MIN,MAX, got '" + v + "'");
      o.cfg_min = parse_double(a, v.substr(0, comma));
      o.cfg_max = parse_double(a, v.substr(comma + 1));
    } else if (a == "--out") o.out = value();
    else if (a == "--png") o.png = value();
    else if (a == "--logits") o.logits = value();
    else if (a == "--height") o.height = int(parse_int(a, value()));
    else if (a == "--width") o.width = int(parse_int(a, value()));
    else if (a == "--threads") kernels::set_num_threads(int(parse_int(a, value())));
    else if (a == "--dtype") {
      const std::string v = value();
      if (v == "f32") o.storage = fwd::WeightStorage::F32;
      else if (v == "bf16") o.storage = fwd::WeightStorage::BF16;
      else fail(a, "expected f32 or bf16, got '" + v + "'");
    } else if (a == "--head") o.head = fwd::parse_head_format(value());
    else if (!a.empty() && a[0] == '-') fail(a, "unknown option (see --help)");
    else if (o.model.empty()) o.model = a;
    else fail(a, "unexpected argument (MODEL already given as '" + o.model + "')");
  }
  if (o.model.empty()) fail("run", "missing MODEL directory");
  if (o.task != "text" && o.task != "t2i") fail("--task", "expected text or t2i, got '" + o.task + "'");
  if (o.prompt.empty()) fail("--prompt", "missing or empty");
  if (o.max_new_tokens < 1) fail("--max-new-tokens", "must be >= 1");
  return o;
}

fwd::LoadOptions load_options(const RunOptions& o) {
  fwd::LoadOptions lo;
  lo.storage = o.storage;
  lo.head = o.head;
  return lo;
}

int run_text(const RunOptions& o) {
  const api::Model m = api::load_model(o.model, load_options(o));
  if (!o.logits.empty()) {
    const std::vector<int32_t> ids = api::prompt_ids(m, o.prompt, o.raw);
    const std::vector<float> lg = api::logits(m, ids);
    io::SafetensorsWriter w(o.logits, {{"prompt", o.prompt}, {"producer", "lance-quant run"}});
    w.declare("ids", io::DType::I32, {int64_t(ids.size())});
    w.declare("logits", io::DType::F32, {int64_t(ids.size()), int64_t(m.engine.config().vocab_size)});
    w.write(ids.data(), ids.size() * sizeof(int32_t));
    w.write(lg.data(), lg.size() * sizeof(float));
    w.finish();
  }
  api::TextRequest r;
  r.prompt = o.prompt;
  r.max_new_tokens = o.max_new_tokens;
  r.raw = o.raw;
  const api::TextResult res = api::generate(m, r);
  if (o.json) std::printf("%s\n", res.to_json().dump().c_str());
  else std::printf("%s\n", res.text.c_str());
  return 0;
}

void write_latents(const std::string& path, const std::vector<float>& x, const fwd::LatentGrid& g, int channels,
                   const RunOptions& o) {
  io::SafetensorsWriter w(path, {{"prompt", o.prompt}, {"seed", std::to_string(o.seed)}, {"producer", "lance-quant run"}});
  w.declare("latents", io::DType::F32, {g.t, g.h, g.w, channels});
  w.write(x.data(), x.size() * sizeof(float));
  w.finish();
}

api::T2iRequest t2i_request(const RunOptions& o) {
  api::T2iRequest r;
  r.prompt = o.prompt;
  r.seed = o.seed;
  r.steps = o.steps;
  r.shift = o.shift;
  r.cfg = o.cfg;
  r.cfg_min = o.cfg_min;
  r.cfg_max = o.cfg_max;
  r.height = o.height;
  r.width = o.width;
  return r;
}

int run_t2i(const RunOptions& o) {
  if (!o.have_seed) fail("--seed", "t2i needs a noise seed");
  if (o.out.empty()) fail("--out", "t2i needs an output .safetensors path");
  const api::T2iRequest req = t2i_request(o);
  const api::T2iPlan plan = api::plan_t2i(o.model, req);
  const fwd::T2iSettings& s = plan.settings;
  if (!o.png.empty() && !s.has_toy_vae)
    fail("--png", "this model has no toy VAE (lance_config.json \"toy_vae\"); decode the latents with the Wan2.2 VAE");
  const api::Model m = api::load_model(o.model, load_options(o));
  const api::T2iResult res = api::text_to_image(m, req);
  const fwd::LatentGrid& grid = res.grid;
  const std::vector<float>& x = res.latents;
  const int channels = res.channels;
  write_latents(o.out, x, grid, channels, o);
  if (!o.png.empty()) {
    const fwd::ToyVae vae{s.toy_patch, s.toy_mean, s.toy_std};
    if (vae.patch * vae.patch * 3 != channels) fail("--png", "toy VAE patch does not match the latent channels");
    const auto pixels = fwd::toy_vae_decode(x.data(), grid, vae);
    constexpr int kScale = 4;  // so a person can see a 32x32 image
    const int w = grid.w * vae.patch, h = grid.h * vae.patch;
    const auto rgb = fwd::to_rgb8_upscaled(pixels, w, h, kScale);
    io::write_png_rgb(o.png, rgb.data(), w * kScale, h * kScale);
  }
  if (o.json) {
    nlohmann::json j = {{"latents", o.out}, {"grid_thw", {grid.t, grid.h, grid.w}}, {"steps", res.steps},
                        {"seconds", res.seconds}};
    if (!o.png.empty()) j["png"] = o.png;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("wrote %s (%dx%dx%d latents, %d steps, %.2f s)%s%s\n", o.out.c_str(), grid.t, grid.h, grid.w, res.steps,
                res.seconds, o.png.empty() ? "" : " and ", o.png.c_str());
  }
  return 0;
}

}  // namespace

int cmd_run(const Args& args) {
  for (const auto& a : args)
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
  if (args.empty()) {
    usage(stderr);
    return 2;
  }
  const RunOptions o = parse(args);
  return o.task == "text" ? run_text(o) : run_t2i(o);
}

}  // namespace lq::cli
