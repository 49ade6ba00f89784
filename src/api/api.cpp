#include "api/api.h"

#include "vit/edit_reference.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <cstdio>
#include <memory>
#include <optional>

#include "eval/fake_quant.h"
#include "eval/locate.h"
#include "eval/pictures.h"
#include "eval/report.h"
#include "eval/x2t_eval.h"
#include "formats/fold_scales.h"
#include "forward/gen_sequence.h"
#include "forward/text.h"
#include "forward/toy_vae.h"
#include "io/error.h"
#include "io/output.h"
#include "io/png.h"
#include "io/text_file.h"
#include "media/video_writer.h"

namespace lq::api {

namespace fs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

tok::Tokenizer load_tokenizer(const std::string& dir) {
  io::require_directory(dir, "model directory");
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
  io::check_text(r.prompt, "--prompt");  // invalid UTF-8 is refused before any work
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
  GenRequest g;
  static_cast<T2iRequest&>(g) = r;
  GenResult res = generate_latents(m, g);
  T2iResult out;
  out.latents = std::move(res.latents);
  out.grid = res.grid;
  out.channels = res.channels;
  out.steps = res.steps;
  out.seconds = res.seconds;
  return out;
}

// ---- generation with a VAE -----------------------------------------------------------------------

vae::WanVae load_vae(const std::string& path, kernels::ConvBackend backend) {
  if (path.empty()) fail("--vae", "no VAE path given");
  return vae::WanVae::load(path, backend);
}

namespace {

void check_task(const GenRequest& r) {
  if (r.task != "t2i" && r.task != "t2v" && r.task != "edit")
    fail("task", "expected t2i, t2v or edit, got '" + r.task + "'");
  if (r.task == "t2v" && r.frames < 1) fail("--frames", "t2v needs --frames N (pixel frames; Lance uses 4k + 1)");
  if (r.task != "t2v" && r.frames != 0) fail("--frames", "only for --task t2v");
  if (r.task == "edit" && r.edit.image.empty() == r.edit.video.empty())
    fail("edit", "give exactly one of --image SRC or --video SRC");
  if (r.task != "edit" && (!r.edit.image.empty() || !r.edit.video.empty()))
    fail("--image/--video", "only for --task edit or x2t");
}

}  // namespace

T2iPlan plan_generation(const std::string& model_dir, const GenRequest& r) {
  check_task(r);
  T2iPlan p;
  if (r.task == "edit") {  // the grid follows the source (known after encoding)
    if (r.no_vit_reference && !r.vit_dir.empty()) fail("--no-vit-reference", "contradicts --vit DIR");
    if (r.vit_dir.empty() && !r.no_vit_reference && !vit::model_has_vit(model_dir))
      fail("--task edit", "Lance conditions every edit on a ViT reference of the source, and " + model_dir +
                              " has no vit_model.* tensors: give the ViT with --vit DIR (vit.safetensors + config.json), "
                              "or --no-vit-reference to edit without it");
    p.settings = fwd::load_t2i_settings(model_dir);
    return p;
  }
  p = plan_t2i(model_dir, r);
  if (r.task == "t2v") p.grid.t = (r.frames - 1) / 4 + 1;
  return p;
}

GenResult generate_latents(const Model& m, const GenRequest& r, const vae::WanVae* vae) {
  if (r.prompt.empty()) fail("--prompt", "missing or empty");
  io::check_text(r.prompt, "--prompt");
  if (!r.edit.image.empty()) io::require_file(r.edit.image, "--image");
  if (!r.edit.video.empty() && !fs::exists(r.edit.video)) fail(r.edit.video, "does not exist");
  const T2iPlan plan = plan_generation(m.dir, r);
  const fwd::Engine& e = m.engine;
  const int channels = e.config().latent_channels;
  if (r.task == "edit" && !vae) fail("--vae", "--task edit needs the Wan2.2 VAE (--vae PATH) to encode its source");
  if (vae && vae->config().z_dim != channels)
    fail(vae->source(), "VAE latents have " + std::to_string(vae->config().z_dim) + " channels, the model's " +
                            std::to_string(channels));
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
  const int64_t limit = e.config().max_position_embeddings;

  GenResult out;
  out.task = r.task;
  out.channels = channels;
  out.steps = so.steps;
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<fwd::T2iSampler> sampler;
  vit::EditJob job;  // holds the edit's sequence while its sampler runs
  if (r.task == "edit") {
    // The ViT runs once on the source frames and is released before sampling.
    std::optional<vit::Vit> v;
    std::string where = r.vit_dir;
    if (r.no_vit_reference && !where.empty()) fail("--no-vit-reference", "contradicts --vit DIR");
    if (where.empty() && !r.no_vit_reference) {
      if (!vit::model_has_vit(m.dir))
        fail("--task edit", "Lance conditions every edit on a ViT reference of the source, and " + m.dir +
                                " has no vit_model.* tensors: give the ViT with --vit DIR (vit.safetensors + config.json), "
                                "or --no-vit-reference to edit without it");
      where = m.dir;
    }
    if (!where.empty()) {
      vit::VitLoadOptions vo;
      vo.storage = e.storage();
      v.emplace(vit::Vit::load(where, vo));
      if (v->config().out_hidden_size != e.config().hidden_size)
        fail(v->weights_path(), "the ViT's merger outputs " + std::to_string(v->config().out_hidden_size) +
                                    " values per token, the model's hidden size is " + std::to_string(e.config().hidden_size));
    }
    const vit::EditConditions c = vit::edit_conditions(*vae, v ? &*v : nullptr, r.edit, r.vit_resolution, r.seed, r.show_progress);
    v.reset();
    const fwd::EncodedSource& src = c.source;
    out.grid = src.grid;
    job = vit::edit_job(e, m.tokenizer, r.prompt, c);  // checks the grid and the position limit
    sampler = std::move(job.sampler);
    out.edit = {{"source", r.edit.image.empty() ? r.edit.video : r.edit.image}, {"source_frames", src.frames},
                {"source_size", {src.width, src.height}}, {"vit_reference", c.vit.has_value()}};
    if (c.vit) {
      out.edit["vit_grid_thw"] = {c.vit->grid.t, c.vit->grid.h, c.vit->grid.w};
      out.edit["vit_resolution"] = c.vit_resolution;
      out.edit["vit_frames"] = c.vit_frames;
    }
  } else {
    out.grid = plan.grid;
    fwd::check_latent_grid(out.grid, e.config());
    fwd::T2iPrompt prompt = fwd::t2i_prompt(m.tokenizer, r.prompt,
                                            r.task == "t2v" ? plan.settings.t2v_instruction : plan.settings.instruction, out.grid);
    const int64_t needed = prompt.cond.noise_positions.back()[0] + 1;
    if (needed > limit)
      fail("--prompt", "the " + r.task + " sequence needs positions up to " + std::to_string(needed) +
                           ", beyond max_position_embeddings = " + std::to_string(limit));
    sampler = std::make_unique<fwd::T2iSampler>(e, std::move(prompt));
  }
  out.latents = sampler->sample(fwd::normal_noise(r.seed, out.grid.tokens() * channels), so);
  out.seconds = seconds_since(t0);
  return out;
}

namespace {

void check_latents(const vae::WanVae& vae, const std::vector<float>& latents, const fwd::LatentGrid& g) {
  const int z = vae.config().z_dim;
  if (g.t < 1 || g.h < 1 || g.w < 1 || latents.size() != size_t(g.tokens()) * size_t(z))
    fail("decode", "latents hold " + std::to_string(latents.size()) + " values; grid " + std::to_string(g.t) + "x" +
                       std::to_string(g.h) + "x" + std::to_string(g.w) + " with the VAE's " + std::to_string(z) +
                       " channels needs " + std::to_string(int64_t(g.tokens()) * z));
}

}  // namespace

Frames decode_rgb8(const vae::WanVae& vae, const std::vector<float>& latents, const fwd::LatentGrid& g,
                   const std::function<void(int, int)>& progress) {
  check_latents(vae, latents, g);
  const auto t0 = std::chrono::steady_clock::now();
  Frames out;
  vae.decode(
      latents.data(), g.t, g.h, g.w,
      [&](const float* rgb, int n, int H, int W) {
        out.height = H;
        out.width = W;
        const std::vector<uint8_t> px = vae::to_rgb8(rgb, size_t(n) * H * W * 3);
        out.rgb.insert(out.rgb.end(), px.begin(), px.end());
        out.frames += n;
      },
      true, progress);
  out.seconds = seconds_since(t0);
  return out;
}

void check_visual_outputs(const VisualOutputs& o, const std::string& latents_out, const std::vector<std::string>& inputs) {
  auto others = [&](const std::string& self) {
    std::vector<std::string> v = inputs;
    for (const std::string* p : {&latents_out, &o.png, &o.mp4, &o.frames_dir})
      if (&self != p) v.push_back(*p);
    return v;
  };
  if (!latents_out.empty()) io::check_output_file(latents_out, /*force=*/true, others(latents_out), "--out");
  if (!o.png.empty()) io::check_output_file(o.png, /*force=*/true, others(o.png), "--png", /*allow_existing=*/true);
  if (!o.mp4.empty()) io::check_output_file(o.mp4, /*force=*/true, others(o.mp4), "--mp4", /*allow_existing=*/true);
  if (!o.frames_dir.empty()) io::check_output_dir(o.frames_dir, /*force=*/true, others(o.frames_dir), "--frames-dir");
}

nlohmann::json write_visuals(const vae::WanVae& vae, const std::vector<float>& latents, const fwd::LatentGrid& grid,
                             const VisualOutputs& out, const std::function<void(int, int)>& progress) {
  check_latents(vae, latents, grid);
  const auto t0 = std::chrono::steady_clock::now();
  // The frames go to FRAMES_DIR.lq-partial-PID, renamed onto FRAMES_DIR when every frame is written
  // (io/output.h); callers check the directory with check_visual_outputs before sampling.
  std::optional<io::PartialOutputDir> frames_dir;
  if (!out.frames_dir.empty()) frames_dir.emplace(out.frames_dir, "run");
  std::unique_ptr<media::VideoWriter> mp4;
  int frames = 0, width = 0, height = 0;
  vae.decode(
      latents.data(), grid.t, grid.h, grid.w,
      [&](const float* rgb, int n, int H, int W) {
        width = W;
        height = H;
        const std::vector<uint8_t> px = vae::to_rgb8(rgb, size_t(n) * H * W * 3);
        for (int f = 0; f < n; ++f, ++frames) {
          const uint8_t* frame = px.data() + size_t(f) * H * W * 3;
          if (frames == 0 && !out.png.empty()) io::write_png_rgb(out.png, frame, W, H);
          if (!out.frames_dir.empty()) {
            char name[32];
            std::snprintf(name, sizeof name, "frame_%04d.png", frames);
            io::write_png_rgb((frames_dir->path() / name).string(), frame, W, H);
          }
          if (!out.mp4.empty()) {
            if (!mp4) mp4 = std::make_unique<media::VideoWriter>(out.mp4, W, H, media::VideoWriterOptions{out.fps});
            mp4->add_frame(frame);
          }
        }
      },
      true, progress);
  if (mp4) mp4->finish();
  if (frames_dir) frames_dir->commit(nlohmann::json{{"frames", frames}, {"width", width}, {"height", height}}.dump());
  nlohmann::json j = {{"frames", frames}, {"width", width}, {"height", height}, {"decode_seconds", seconds_since(t0)}};
  if (!out.png.empty()) j["png"] = out.png;
  if (!out.mp4.empty()) j["mp4"] = out.mp4, j["fps"] = out.fps, j["codec"] = mp4 ? mp4->codec() : "";
  if (!out.frames_dir.empty()) j["frames_dir"] = out.frames_dir;
  return j;
}

Frames toy_decode_rgb8(const std::string& model_dir, const std::vector<float>& latents, const fwd::LatentGrid& grid,
                       int channels, int scale) {
  const fwd::T2iSettings s = fwd::load_t2i_settings(model_dir);
  if (!s.has_toy_vae)
    fail("--png", "this model has no toy VAE (lance_config.json \"toy_vae\"): give the Wan2.2 VAE with --vae PATH");
  const fwd::ToyVae toy{s.toy_patch, s.toy_mean, s.toy_std};
  if (toy.patch * toy.patch * 3 != channels) fail("--png", "toy VAE patch does not match the latent channels");
  if (scale < 1) fail("toy decode", "scale must be >= 1");
  if (latents.size() != size_t(grid.tokens()) * size_t(channels)) fail("toy decode", "latents do not match the grid");
  const auto pixels = fwd::toy_vae_decode(latents.data(), grid, toy);
  Frames f;
  f.width = grid.w * toy.patch * scale;
  f.height = grid.h * toy.patch * scale;
  f.frames = 1;
  f.rgb = fwd::to_rgb8_upscaled(pixels, grid.w * toy.patch, grid.h * toy.patch, scale);
  return f;
}

// ---- understanding: x2t ----------------------------------------------------------------------------

vit::Vit load_vit(const std::string& model_dir, const std::string& vit_dir, fwd::WeightStorage storage) {
  std::string where = vit_dir;
  if (where.empty()) {
    if (!vit::model_has_vit(model_dir))
      fail("--task x2t", model_dir + " has no vit_model.* tensors: give the ViT directory with --vit DIR "
                                     "(vit.safetensors + config.json, as Lance_3B keeps it)");
    where = model_dir;
  }
  vit::VitLoadOptions vo;
  vo.storage = storage;
  return vit::Vit::load(where, vo);
}

nlohmann::json X2tResult::to_json() const {
  nlohmann::json j = {{"prompt_tokens", prompt_tokens}, {"vit_tokens", vit_tokens},
                      {"grid_thw", {grid_thw[0], grid_thw[1], grid_thw[2]}}, {"frames", frames},
                      {"generated_ids", generated_ids}, {"text", text}, {"vit_seconds", vit_seconds}, {"seconds", seconds}};
  if (!vit_quantization.empty()) j["vit_quantization"] = vit_quantization;
  return j;
}

X2tResult understand(const Model& m, const vit::Vit& v, const X2tRequest& r) {
  if (r.image.empty() == r.video.empty()) fail("--task x2t", "give exactly one of --image FILE or --video FILE|DIR");
  if (r.resolution < 0 || (r.resolution > 0 && r.resolution < 28)) fail("--resolution", "must be at least 28 pixels");
  if (!(r.fps > 0)) fail("--fps", "must be positive");
  if (r.prompt.empty()) fail("--prompt", "missing or empty");
  io::check_text(r.prompt, "--prompt");
  if (!r.system.empty()) io::check_text(r.system, "--system");
  if (!r.image.empty()) io::require_file(r.image, "--image");
  if (!r.video.empty() && !fs::exists(r.video)) fail(r.video, "does not exist");
  if (r.max_new_tokens < 1) fail("--max-new-tokens", "must be >= 1");
  const fwd::Engine& e = m.engine;
  vit::check_vit_matches(v, e);
  const bool image = !r.image.empty();
  vit::X2tSettings xs;
  if (r.resolution > 0) xs.image_resolution = xs.video_resolution = r.resolution;
  xs.folder_fps = r.fps;
  vit::X2tItem item;
  item.kind = image ? vit::MediaKind::Image : vit::MediaKind::Video;
  item.path = image ? r.image : r.video;
  item.question = r.prompt;
  item.system = r.system;
  const auto t0 = std::chrono::steady_clock::now();
  const vit::VitFeatures f = vit::encode_media(v, item.kind, item.path, xs);
  X2tResult out;
  out.vit_seconds = seconds_since(t0);
  out.vit_quantization = v.stored_quantization();
  const vit::X2tSample s = vit::x2t_sample(e, m.tokenizer, f, item, vit::temporal_step(m.dir, v.config()));
  fwd::GreedyOptions g;
  g.max_new_tokens = r.max_new_tokens;
  g.vocab_limit = e.config().len_tokenizer;
  if (const auto end = m.tokenizer.token_id("<|im_end|>")) g.stop_id = *end;
  const auto t1 = std::chrono::steady_clock::now();
  out.generated_ids = fwd::greedy_decode_chunk(e, s.chunk, s.prompt.next_position, g);
  out.seconds = seconds_since(t1);
  out.text = m.tokenizer.decode(out.generated_ids);
  out.prompt_tokens = int64_t(s.prompt.ids.size());
  out.vit_tokens = s.prompt.vision_tokens;
  out.grid_thw = f.merged_grid;
  out.frames = f.frames;
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

// The statistics file must not be an input; an existing one is replaced only with --force and only
// when lance-quant wrote it (io/output.h).
void check_output(const std::string& out, bool force, const std::vector<std::string>& inputs) {
  if (out.empty()) fail("--out", "an output file is required");
  io::check_output_file(out, force, inputs, "--out");
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
  io::require_directory(r.model_dir, "model directory");
  if (o.capture) {
    std::vector<std::string> inputs = {r.model_dir};
    for (const auto& src : r.sources) inputs.push_back(src.path);
    for (const std::string* p : {static_cast<const std::string*>(&o.vae), &r.vit_dir})
      if (!p->empty()) inputs.push_back(*p);
    check_output(r.out, r.force, inputs);
  }

  const bool any_x2t =
      std::any_of(r.sources.begin(), r.sources.end(), [](const calib::Source& s) { return calib::is_x2t(s.kind); });
  const bool any_edit = std::any_of(r.sources.begin(), r.sources.end(), [](const calib::Source& s) {
    return s.kind == calib::SourceKind::ImageEdit || s.kind == calib::SourceKind::VideoEdit;
  });
  if (!any_x2t && r.x2t_resolution) fail("calibrate --x2t-resolution", "only used by x2t_image / x2t_video sources");
  if (r.x2t_resolution && r.x2t_resolution < 28) fail("calibrate --x2t-resolution", "must be at least 28 pixels");
  if (!any_edit && (o.edit_vit_resolution || o.edit_without_vit))
    fail("calibrate --edit-vit-resolution/--no-vit-reference", "only used by image_edit / video_edit sources");
  const bool need_vit = any_x2t || (any_edit && !o.edit_without_vit);
  if (!need_vit && !r.vit_dir.empty())
    fail("calibrate --vit", "only used by x2t_image / x2t_video sources and edits with their ViT reference");
  const auto t0 = std::chrono::steady_clock::now();
  std::optional<vit::Vit> vit_model;
  if (need_vit) {
    if (r.vit_dir.empty() && !vit::model_has_vit(r.model_dir))
      fail("calibrate", std::string(any_x2t ? "x2t sources need the ViT"
                                            : "edits need the ViT for Lance's reference block (or --no-vit-reference)") +
                            ": give --vit DIR (vit.safetensors + config.json) or a checkpoint with vit_model.* tensors");
    vit::VitLoadOptions vo;
    vo.storage = r.load.storage;
    vo.release_pages = r.load.release_layer_pages;
    vit_model.emplace(vit::Vit::load(r.vit_dir.empty() ? r.model_dir : r.vit_dir, vo));
    o.vit = &*vit_model;
    if (r.x2t_resolution) o.x2t.image_resolution = o.x2t.video_resolution = r.x2t_resolution;
  }
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

pipeline::QuantizeOptions quantize_options(pipeline::QuantizeOptions o, const std::string& scheme,
                                           std::optional<int64_t> group_given, bool sym, const std::string& gen_scheme,
                                           const std::vector<std::string>& overrides) {
  const int64_t group = group_given.value_or(128);
  if (o.model_dir.empty()) fail("quantize", "a MODEL directory is required (see --help)");
  if (o.bpw < 0 || !std::isfinite(o.bpw)) fail("--bpw", "expected a positive number of bits per weight");
  if (o.gptq.gptq.block < 1) fail("--gptq-block", "must be >= 1");
  if (!(o.gptq.gptq.damp > 0) || !std::isfinite(o.gptq.gptq.damp)) fail("--gptq-damp", "must be a positive fraction");
  o.scheme = pipeline::parse_scheme_choice(scheme, group, sym);
  if (group_given && o.scheme.params.scheme == quant::Scheme::NvFp4 && gen_scheme.empty() && overrides.empty())
    fail("--group-size " + std::to_string(group), "--scheme " + scheme + " has fixed blocks of 16 elements; --group-size "
                                                  "applies to integer formats (drop it, or choose an INT4 / INT8 scheme)");
  if (!gen_scheme.empty()) o.gen_format = pipeline::parse_format_spec(gen_scheme, group, sym, "--gen-scheme");
  for (const auto& ov : overrides) o.overrides.push_back(pipeline::parse_override(ov, group, sym));
  // lance-quant-v1 stores NVFP4 block scales as bf16 without a tensor scale: e4m3 * tensor scale must be
  // exact in bf16, which a power-of-two tensor scale guarantees.
  if (o.scheme.params.scheme == quant::Scheme::NvFp4 && o.format == formats::FormatId::LanceQuantV1)
    o.scheme.params.nvfp4_pow2_tensor_scale = true;
  return o;
}

pipeline::QuantizeReport quantize(const pipeline::QuantizeOptions& o) {
  pipeline::check_output_dir(o);  // before any slow work
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
  {
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
  }
  // The VAE, the x2t items (their media) and the ViT are checked before the long evaluation starts.
  std::optional<vae::WanVae> vae;
  if (!c.vae.empty()) vae.emplace(vae::WanVae::load(c.vae));
  if (!c.vit_quant.empty() && c.vit_quant != "int4") fail("eval --vit-quant", "expected int4, got '" + c.vit_quant + "'");
  std::vector<vit::X2tItem> x2t_items;
  if (!c.x2t_image.empty()) x2t_items = vit::read_x2t_jsonl(c.x2t_image, vit::MediaKind::Image);
  if (!c.x2t_video.empty())
    for (auto& it : vit::read_x2t_jsonl(c.x2t_video, vit::MediaKind::Video)) x2t_items.push_back(std::move(it));
  if (c.max_x2t > 0 && int(x2t_items.size()) > c.max_x2t) x2t_items.resize(size_t(c.max_x2t));
  if (x2t_items.empty() && (!c.vit.empty() || !c.vit_quant.empty()))
    fail("eval --vit", "only used with --x2t-image / --x2t-video");
  if (!x2t_items.empty() && c.vit.empty() && !vit::model_has_vit(c.base))
    fail("eval", "x2t data needs the ViT: --vit DIR (vit.safetensors + config.json) or a BASE with vit_model.* tensors");
  // QUANT written by `quantize --vit` runs its own 4-bit ViT (the cost is measured against BASE's); asking for
  // the load-time one on top would quantize twice.
  const bool quant_vit_stored = !x2t_items.empty() && vit::model_has_quantized_vit(c.quant);
  if (quant_vit_stored && !c.vit_quant.empty())
    fail("eval --vit-quant " + c.vit_quant, c.quant + " already holds a 4-bit ViT (quantize --vit), which the x2t section "
                                            "measures by itself: drop --vit-quant");

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

  std::optional<vit::Vit> base_vit, quant_vit;
  std::string vit_note;
  if (!x2t_items.empty()) {
    vit::VitLoadOptions vo;
    vo.storage = c.storage;
    const std::string where = c.vit.empty() ? c.base : c.vit;
    base_vit.emplace(vit::Vit::load(where, vo));
    if (quant_vit_stored) {
      quant_vit.emplace(vit::Vit::load(c.quant, vo));
      const vit::VitConfig &a = base_vit->config(), &b = quant_vit->config();
      if (a.depth != b.depth || a.hidden_size != b.hidden_size || a.intermediate_size != b.intermediate_size ||
          a.out_hidden_size != b.out_hidden_size || a.patch_size != b.patch_size)
        fail(c.quant, "its 4-bit ViT (" + std::to_string(b.depth) + " blocks, width " + std::to_string(b.hidden_size) +
                          ") is not the shape of BASE's (" + std::to_string(a.depth) + " blocks, width " + std::to_string(a.hidden_size) +
                          ", from " + base_vit->weights_path() + ")");
      vit_note = "ViT linears 4-bit from QUANT's checkpoint, written by quantize --vit (" + quant_vit->stored_quantization() + ")";
    } else if (c.vit_quant == "int4") {
      quant_vit.emplace(vit::Vit::load(where, vo));
      vit_note = "ViT linears RTN INT4 at load (" + vit::quantize_linears_rtn_int4(*quant_vit) + ")";
    }
  }

  EvalOutcome out;
  out.result = eval::evaluate(base, quant, tok, t2i, c.data, c.options);
  eval::EvalResult& r = out.result;
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
  io::PartialOutputDir report_dir(c.out, "eval");  // every file of the report goes here first
  if (vae && r.has_gen) eval::compare_pictures(*vae, r.gen, (report_dir.path() / "t2i_side_by_side.png").string());

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
  std::ifstream written(fs::path(c.out) / "report.json");  // exactly what the CLI leaves behind
  out.report = nlohmann::json::parse(written);
  out.report_md = (fs::path(c.out) / "report.md").string();
  return out;
}

}  // namespace lq::api
