// `lance-quant run MODEL --task text|t2i|t2v|edit|x2t`: greedy text answers (KV cache), text-to-image /
// text-to-video sampling (rectified flow + CFG), image / video editing, and answers about an image or video
// (ViT + x2t prompt) on the native forward; the Wan2.2 VAE (--vae) turns latents into pictures and videos and
// encodes an edit's source.
#include <cstdio>
#include <filesystem>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>

#include "api/api.h"
#include "cli/commands.h"
#include "forward/edit_source.h"
#include "forward/forward.h"
#include "io/error.h"
#include "io/output.h"
#include "io/text_file.h"
#include "io/png.h"
#include "io/progress.h"
#include "io/safetensors.h"
#include "kernels/parallel.h"

namespace lq::cli {

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: lance-quant run MODEL --task text --prompt TEXT [--max-new-tokens N] [--raw] [--json]\n"
               "                             [--logits FILE.safetensors]   (ids + logits of every prompt position)\n"
               "       lance-quant run MODEL --task t2i --prompt CAPTION --seed S --out FILE.safetensors [--png FILE.png]\n"
               "                             [--steps 30] [--shift 3.5] [--cfg 4.0] [--cfg-interval 0.4,1.0]\n"
               "                             [--height H --width W]   (pixels; latent grid h = H/16, when\n"
               "                                                       lance_config.json has no t2i_latent_grid_thw)\n"
               "       lance-quant run MODEL --task t2v --prompt CAPTION --seed S --frames N --vae VAE --mp4 FILE.mp4\n"
               "                             [--frames-dir DIR] [--fps 12] [--out FILE.safetensors] (+ the t2i options)\n"
               "       lance-quant run MODEL --task edit (--image SRC | --video SRC) --prompt INSTRUCTION --seed S --vae VAE\n"
               "                             (--png OUT.png | --mp4 OUT.mp4 | --frames-dir DIR) [--resolution R] [--max-frames N]\n"
               "                             [--vit DIR] [--vit-resolution R] [--no-vit-reference]\n"
               "       lance-quant run MODEL --task x2t (--image FILE | --video FILE|DIR) --prompt QUESTION [--vit DIR]\n"
               "                             [--system TEXT] [--resolution R] [--fps F] [--max-new-tokens N]\n"
               "common: [--dtype f32|bf16] (weight storage, default f32) [--threads N]\n"
               "        [--head stored|int8|int4] (the lm_head quantized at load: RTN INT8 / INT4 g64, for faster decoding)\n\n"
               "text: Qwen chat template (unless --raw), greedy decoding with a KV cache, stops at <|im_end|>.\n"
               "t2i:  writes the final latents [t, h, w, C]; --png decodes them with the Wan2.2 VAE given by --vae\n"
               "      (a diffusers directory, Wan2.2_VAE.pth, or `synth-vae` output), or with lance-mini's toy VAE\n"
               "      (4x nearest upscale) when the model has one.\n"
               "t2v:  --frames N pixel frames: latent grid t = (N - 1) / 4 + 1 (Lance), 4 (t - 1) + 1 frames decoded;\n"
               "      --mp4 writes H.264 at --fps (default 12, as Lance saves), --frames-dir every frame as PNG, --png the first.\n"
               "edit: the source is resized to Lance's bucket near --resolution^2 pixels (default 768 for images,\n"
               "      640 for videos; sides multiples of 16), a video sampled at 12 fps over at most 6 s (4k + 1\n"
               "      frames, --max-frames caps them), VAE-encoded (reparameterised sample, noise seeded from --seed)\n"
               "      and given as a clean condition block; the target has the source's size. As in Lance, the same\n"
               "      frames also go through the ViT (--vit DIR, or the checkpoint's vit_model.* tensors) as a reference\n"
               "      block before the source block, at the ViT resolution Lance pairs with the VAE's (768 -> 672,\n"
               "      640 -> 616, 512 -> 448, 480 -> 476, 256 -> 224, else 7/8 of it; --vit-resolution overrides).\n"
               "      Without a ViT the edit is refused; --no-vit-reference runs it without the reference (not Lance's\n"
               "      sequence: the result is conditioned on the VAE block only).\n"
               "x2t:  Lance's understanding prompt: the ViT's tokens in a bidirectional block, greedy answer with a KV\n"
               "      cache. The ViT comes from --vit DIR (vit.safetensors + config.json) or the checkpoint's vit_model.*\n"
               "      tensors. Images: bucket resize at R = 672 (--resolution), 2 frames; video files or folders of\n"
               "      frames (--fps: the folder's frame rate, default 24): 12 fps, <= 6 s, 4k+1 frames, R = 616.\n"
               "      --system defaults to Lance's instruction for the kind.\n"
               "--vae-conv auto|gemm|dnnl chooses the VAE's convolution backend (default auto).\n");
}

struct RunOptions {
  std::string model, task, prompt, out, png, logits;
  std::string image, video, vit, system;  // x2t (--vit also for edits)
  int resolution = 0;
  int vit_resolution = 0;        // edit: the ViT reference's resolution (0: paired with the VAE's)
  bool no_vit_reference = false;  // edit: run without the ViT reference
  double fps = 24.0;       // x2t: a folder's frame rate; t2v / edit: written videos (--fps given)
  bool fps_given = false;
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
  // Pictures and videos (t2i / t2v / edit).
  std::string vae;
  kernels::ConvBackend vae_conv = kernels::ConvBackend::Auto;
  api::VisualOutputs visuals;
  int frames = 0;
  fwd::EditSource edit;
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
    else if (a == "--vae") o.vae = value();
    else if (a == "--vae-conv") o.vae_conv = kernels::parse_conv_backend(value().c_str());
    else if (a == "--mp4") o.visuals.mp4 = value();
    else if (a == "--frames-dir") o.visuals.frames_dir = value();
    else if (a == "--frames") o.frames = int(parse_int(a, value()));
    else if (a == "--max-frames") o.edit.max_frames = int(parse_int(a, value()));
    else if (a == "--image") o.image = value();
    else if (a == "--video") o.video = value();
    else if (a == "--vit") o.vit = value();
    else if (a == "--vit-resolution") o.vit_resolution = int(parse_int(a, value()));
    else if (a == "--no-vit-reference") o.no_vit_reference = true;
    else if (a == "--system") o.system = value();
    else if (a == "--resolution") o.resolution = int(parse_int(a, value()));
    else if (a == "--fps") { o.fps = parse_double(a, value()); o.fps_given = true; }
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
  if (o.task != "text" && o.task != "t2i" && o.task != "t2v" && o.task != "edit" && o.task != "x2t")
    fail("--task", "expected text, t2i, t2v, edit or x2t, got '" + o.task + "'");
  if (o.task == "x2t") {
    if (o.image.empty() == o.video.empty()) fail("--task x2t", "give exactly one of --image FILE or --video FILE|DIR");
    if (o.resolution < 0 || (o.resolution > 0 && o.resolution < 28)) fail("--resolution", "must be at least 28 pixels");
    if (!(o.fps > 0)) fail("--fps", "must be positive");
  } else {
    if (!o.vit.empty() && o.task != "edit") fail("--vit", "only for --task x2t or edit");
    if (o.task != "edit" && (!o.image.empty() || !o.video.empty())) fail("--image/--video", "only for --task edit or x2t");
    // --image / --video / --resolution give an edit's source; --fps the frame rate of written videos.
    o.edit.image = o.image;
    o.edit.video = o.video;
    o.edit.resolution = o.resolution;
    if (o.fps_given) {
      if (o.fps < 1 || o.fps != double(int(o.fps))) fail("--fps", "the frame rate of written videos: an integer >= 1");
      o.visuals.fps = int(o.fps);
    }
  }
  o.visuals.png = o.png;
  if (o.task == "t2v" && o.frames < 1) fail("--frames", "t2v needs --frames N (pixel frames; Lance uses 4k + 1)");
  if (o.task != "t2v" && o.frames != 0) fail("--frames", "only for --task t2v");
  if (o.task == "edit" && o.edit.image.empty() == o.edit.video.empty()) fail("edit", "give exactly one of --image SRC or --video SRC");
  if (o.task != "edit" && (o.vit_resolution != 0 || o.no_vit_reference)) fail("--vit-resolution/--no-vit-reference", "only for --task edit");
  if (o.vit_resolution < 0 || (o.vit_resolution > 0 && o.vit_resolution < 28)) fail("--vit-resolution", "must be at least 28 pixels");
  if (o.no_vit_reference && !o.vit.empty()) fail("--no-vit-reference", "contradicts --vit DIR");
  if (o.vae.empty()) {
    if (o.task == "edit") fail("--vae", "--task edit needs the Wan2.2 VAE (--vae PATH) to encode its source");
    if (!o.visuals.mp4.empty() || !o.visuals.frames_dir.empty())
      fail("--vae", "--mp4 / --frames-dir decode with the Wan2.2 VAE: give --vae PATH");
    if (o.task == "t2v" && !o.png.empty()) fail("--png", "t2v frames are decoded with the Wan2.2 VAE: give --vae PATH");
  }
  if ((o.task == "t2v" || o.task == "edit") && !o.visuals.any() && o.out.empty())
    fail(o.task, "nothing to write: give --mp4, --frames-dir, --png and/or --out");
  // Outputs must never replace an input.
  for (const std::string* out : {&o.out, &o.visuals.png, &o.visuals.mp4})
    for (const std::string* in : {&o.edit.image, &o.edit.video, &o.vae})
      if (!out->empty() && !in->empty() && std::filesystem::weakly_canonical(*out) == std::filesystem::weakly_canonical(*in))
        fail(*out, "is also an input; refusing to overwrite it");
  if (!o.logits.empty() && o.task != "text") fail("--logits", "only for --task text");
  if (o.prompt.empty()) fail("--prompt", "missing or empty");
  io::check_text(o.prompt, "--prompt");  // every task: invalid UTF-8 is refused before the model loads
  if (!o.system.empty()) io::check_text(o.system, "--system");
  io::require_directory(o.model, "model directory");
  // Inputs named on the command line exist before anything loads (a video may be a folder of frames).
  if (!o.image.empty()) io::require_file(o.image, "--image");
  for (const std::string* p : {&o.video, &o.vae, &o.vit})
    if (!p->empty() && !std::filesystem::exists(*p)) fail(*p, "does not exist");
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

api::GenRequest gen_request(const RunOptions& o) {
  api::GenRequest r;
  r.task = o.task;
  r.prompt = o.prompt;
  r.seed = o.seed;
  r.steps = o.steps;
  r.shift = o.shift;
  r.cfg = o.cfg;
  r.cfg_min = o.cfg_min;
  r.cfg_max = o.cfg_max;
  r.height = o.height;
  r.width = o.width;
  r.frames = o.frames;
  r.edit = o.edit;
  if (o.task == "edit") r.vit_dir = o.vit;
  r.vit_resolution = o.vit_resolution;
  r.no_vit_reference = o.no_vit_reference;
  r.show_progress = !o.json;
  return r;
}

int run_generation(const RunOptions& o) {
  if (!o.have_seed) fail("--seed", o.task + " needs a noise seed");
  if (o.task == "t2i" && o.out.empty()) fail("--out", "t2i needs an output .safetensors path");
  // Outputs never replace an input or each other; an existing latents file is replaced only when
  // lance-quant wrote it, a frames directory only when it holds lance-quant's marker (io/output.h).
  api::check_visual_outputs(o.visuals, o.out, {o.model, o.vae, o.vit, o.edit.image, o.edit.video});
  api::GenRequest req = gen_request(o);
  const api::T2iPlan plan = api::plan_generation(o.model, req);  // grid and settings checked before loading
  if (o.task == "t2i" && !o.png.empty() && o.vae.empty() && !plan.settings.has_toy_vae)
    fail("--png", "this model has no toy VAE (lance_config.json \"toy_vae\"): give the Wan2.2 VAE with --vae PATH");
  // Check the VAE (names, shapes) before the model loads and sampling starts.
  std::optional<vae::WanVae> vae;
  if (!o.vae.empty()) vae.emplace(api::load_vae(o.vae, o.vae_conv));
  const api::Model m = api::load_model(o.model, load_options(o));
  // Long on a real model: a progress line on stderr (redrawn on a terminal, plain every few seconds otherwise).
  io::Progress progress(o.task + " sampling", 0, "steps");
  req.on_step = [&progress](int step, int steps) {
    progress.set_total(steps);
    progress.update(step);
  };
  const api::GenResult res = api::generate_latents(m, req, vae ? &*vae : nullptr);
  progress.update(res.steps);
  progress.finish();
  const fwd::LatentGrid& grid = res.grid;
  if (!o.out.empty()) write_latents(o.out, res.latents, grid, res.channels, o);
  nlohmann::json visuals;
  if (vae && o.visuals.any()) {
    io::Progress progress("VAE decode", 1, "latent frames");
    progress.set_total(grid.t);
    visuals = api::write_visuals(*vae, res.latents, grid, o.visuals, [&](int done, int) { progress.update(done); });
    progress.finish();
  } else if (!o.png.empty()) {  // lance-mini's toy VAE
    constexpr int kScale = 4;  // so a person can see a 32x32 image
    const api::Frames f = api::toy_decode_rgb8(o.model, res.latents, grid, res.channels, kScale);
    io::write_png_rgb(o.png, f.rgb.data(), f.width, f.height);
  }
  if (!res.edit.is_null() && !o.json)
    std::fprintf(stderr, "note: Lance also conditions edits on a ViT reference of the source; this build runs without it\n");
  if (o.json) {
    nlohmann::json j = {{"task", o.task}, {"grid_thw", {grid.t, grid.h, grid.w}}, {"steps", res.steps}, {"seconds", res.seconds}};
    if (!o.out.empty()) j["latents"] = o.out;
    if (!o.png.empty()) j["png"] = o.png;
    if (!visuals.is_null()) j["decoded"] = visuals;
    if (!res.edit.is_null()) j["edit"] = res.edit;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s: %dx%dx%d latents, %d steps, %.2f s", o.task.c_str(), grid.t, grid.h, grid.w, res.steps, res.seconds);
    if (!o.out.empty()) std::printf("; wrote %s", o.out.c_str());
    if (!o.png.empty()) std::printf("; %s", o.png.c_str());
    if (!o.visuals.mp4.empty()) std::printf("; %s", o.visuals.mp4.c_str());
    if (!o.visuals.frames_dir.empty()) std::printf("; frames in %s", o.visuals.frames_dir.c_str());
    if (!visuals.is_null())
      std::printf(" (%d frames %dx%d, VAE %.1f s)", visuals["frames"].get<int>(), visuals["width"].get<int>(), visuals["height"].get<int>(),
                  visuals["decode_seconds"].get<double>());
    std::printf("\n");
  }
  return 0;
}

int run_x2t(const RunOptions& o) {
  api::X2tRequest r;
  r.image = o.image;
  r.video = o.video;
  r.prompt = o.prompt;
  r.system = o.system;
  r.resolution = o.resolution;
  r.fps = o.fps;
  r.max_new_tokens = o.max_new_tokens;
  const vit::Vit v = api::load_vit(o.model, o.vit, o.storage);
  const api::Model m = api::load_model(o.model, load_options(o));
  const api::X2tResult res = api::understand(m, v, r);
  if (o.json) std::printf("%s\n", res.to_json().dump().c_str());
  else std::printf("%s\n", res.text.c_str());
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
  if (o.task == "x2t") return run_x2t(o);
  return o.task == "text" ? run_text(o) : run_generation(o);
}

}  // namespace lq::cli
