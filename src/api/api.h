// The library facade shared by the CLI (`run`, `calibrate`, `quantize`, `eval`) and the Python package:
// each function takes a request that the caller filled in (from flags or keyword arguments) and returns
// the result the CLI prints with --json, so both front ends compute the same thing with the same
// checks and messages.
//
//   load_model      engine + tokenizer of one directory (dense or quantized)
//   generate        chat-template (or raw) prompt -> greedy answer with a KV cache
//   logits          token ids at positions 0.. (one causal split) -> logits [n, vocab_size]
//   plan_t2i / text_to_image
//                   caption + seed -> final latents [t, h, w, C] of the CFG sampler (raster, channels last)
//   generate_latents
//                   t2i / t2v (caption) or edit (instruction + source image / video through the VAE)
//                   -> final latents; load_vae / decode_rgb8 / write_visuals turn latents into pictures,
//                   PNG frames and MP4
//   load_vit / understand
//                   x2t: a question about an image or video -> greedy answer (ViT + Lance's x2t prompt)
//   calibrate       activation statistics written to a file; the coverage summary
//   quantize_options / quantize
//                   scheme names and format specs -> pipeline::QuantizeOptions -> a checkpoint + report
//   evaluate        BASE vs QUANT -> report directory; the report.json document
// Errors are lq::Error with the messages the CLI prints. Progress callbacks run on the calling thread.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "calib/calibrate.h"
#include "forward/edit_source.h"
#include "eval/evaluate.h"
#include "forward/forward.h"
#include "forward/prompts.h"
#include "forward/t2i.h"
#include "pipeline/quantize.h"
#include "kernels/conv.h"
#include "tokenizer/tokenizer.h"
#include "vae/wan_vae.h"
#include "vit/vit.h"
#include "vit/x2t_input.h"

namespace lq::api {

// Throws naming `dir` when it has neither tokenizer.json nor vocab.json + merges.txt.
tok::Tokenizer load_tokenizer(const std::string& dir);

struct Model {
  std::string dir;
  tok::Tokenizer tokenizer;
  fwd::Engine engine;
};
// Tokenizer first (cheap, fails fast), then the engine (a quantized directory loads its own linears).
Model load_model(const std::string& dir, const fwd::LoadOptions& options = {});

// ---- text ----------------------------------------------------------------------------------------

struct TextRequest {
  std::string prompt;
  int max_new_tokens = 256;
  bool raw = false;  // false: the Qwen chat template around the prompt
};
struct TextResult {
  std::vector<int32_t> prompt_ids, generated_ids;
  std::string text;
  double seconds = 0;
  nlohmann::json to_json() const;  // `run --task text --json`
};
// The prompt's token ids as `generate` feeds them (template applied unless raw).
std::vector<int32_t> prompt_ids(const Model& m, const std::string& prompt, bool raw);
TextResult generate(const Model& m, const TextRequest& request);

// Logits of every position of `ids` [n, vocab_size] (row-major), a full forward without a cache.
// Throws when ids is empty, an id is outside the embedding or n exceeds max_position_embeddings.
std::vector<float> logits(const Model& m, const std::vector<int32_t>& ids);

// ---- text-to-image -------------------------------------------------------------------------------

struct T2iRequest {
  std::string prompt;
  uint64_t seed = 0;
  // Unset: lance_config.json / Lance's defaults.
  std::optional<int> steps;
  std::optional<double> shift, cfg, cfg_min, cfg_max;
  int height = 0, width = 0;  // pixels (latent grid = size / 16); 0 = the model's t2i_latent_grid_thw
  std::function<void(int step, int steps)> on_step;  // before each sampler step
};
struct T2iPlan {
  fwd::T2iSettings settings;
  fwd::LatentGrid grid;
};
// Settings and latent grid of a request, from the model directory alone (no weights read): callers
// check their own options against it before the model loads.
T2iPlan plan_t2i(const std::string& model_dir, const T2iRequest& request);
struct T2iResult {
  std::vector<float> latents;  // [t * h * w, channels], raster (f, r, c), the sampler's final x
  fwd::LatentGrid grid;
  int channels = 0, steps = 0;
  double seconds = 0;
};
T2iResult text_to_image(const Model& m, const T2iRequest& request);

// ---- generation with a VAE: t2i / t2v / edit ------------------------------------------------------

// Throws naming `path` (see vae::WanVae::load for what it accepts); nothing is computed yet.
vae::WanVae load_vae(const std::string& path, kernels::ConvBackend backend = kernels::ConvBackend::Auto);

struct GenRequest : T2iRequest {
  std::string task = "t2i";  // t2i | t2v | edit
  int frames = 0;            // t2v: pixel frames (latent t = (frames - 1) / 4 + 1); required for t2v
  fwd::EditSource edit;      // edit: exactly one of image / video (+ resolution, max_frames)
  // edit: Lance's ViT reference block of the source (vit/edit_reference.h): the ViT from vit_dir, else the
  // checkpoint's vit_model.*; refused without one unless no_vit_reference (then the VAE block only).
  std::string vit_dir;
  int vit_resolution = 0;       // 0: paired with the VAE's resolution as in Lance
  bool no_vit_reference = false;
  bool show_progress = false;  // a progress line on a terminal (edit source encoding)
};
struct GenResult {
  std::string task;
  std::vector<float> latents;  // [t * h * w, channels], raster (f, r, c)
  fwd::LatentGrid grid;
  int channels = 0, steps = 0;
  double seconds = 0;     // sampling (and, for edits, source encoding)
  nlohmann::json edit;    // edit: source, source_frames, source_size, vit_reference; null otherwise
};
// Checks the request against the model (task, frames, grid, positions) and samples. `vae` is required
// for edits (it encodes the source); for t2i / t2v it is only checked (latent channels). Throws before
// sampling on bad input.
GenResult generate_latents(const Model& m, const GenRequest& request, const vae::WanVae* vae = nullptr);
// The grid and settings a t2i / t2v request will use (no weights read).
T2iPlan plan_generation(const std::string& model_dir, const GenRequest& request);

// Latents [t, h, w, C] -> 8-bit frames [T = 4 (t - 1) + 1, H, W, 3] as Lance saves them.
struct Frames {
  std::vector<uint8_t> rgb;
  int frames = 0, height = 0, width = 0;
  double seconds = 0;
};
Frames decode_rgb8(const vae::WanVae& vae, const std::vector<float>& latents, const fwd::LatentGrid& grid,
                   const std::function<void(int done, int total)>& progress = {});

struct VisualOutputs {
  std::string png;         // picture (t = 1) or, for videos, the first frame
  std::string mp4;         // video (H.264)
  std::string frames_dir;  // every frame as frame_NNNN.png
  int fps = 12;            // Lance saves at 12 frames per second
  bool any() const { return !png.empty() || !mp4.empty() || !frames_dir.empty(); }
};
// The io/output.h rules for a generation's outputs, checked before any work: none is one of `inputs` or
// another of the outputs; an existing latents file (`latents_out`) is replaced only when lance-quant wrote
// it, PNG / MP4 files may be replaced, a frames directory only when it holds lance-quant's marker.
void check_visual_outputs(const VisualOutputs& out, const std::string& latents_out, const std::vector<std::string>& inputs);
// Decodes chunk by chunk and writes the requested outputs (frames_dir built as FRAMES_DIR.lq-partial-PID
// and renamed at the end). Returns a summary (paths, frames, size,
// decode_seconds, fps / codec for MP4).
nlohmann::json write_visuals(const vae::WanVae& vae, const std::vector<float>& latents, const fwd::LatentGrid& grid,
                             const VisualOutputs& out, const std::function<void(int done, int total)>& progress = {});

// lance-mini's toy VAE (lance_config.json "toy_vae"): latents -> 8-bit RGB [h * patch, w * patch, 3]
// upscaled `scale` times (nearest). Throws when the model has none or the patch does not fit.
Frames toy_decode_rgb8(const std::string& model_dir, const std::vector<float>& latents, const fwd::LatentGrid& grid,
                       int channels, int scale = 1);

// ---- understanding: x2t ---------------------------------------------------------------------------

// The ViT from `vit_dir` (vit.safetensors + config.json) or, when empty, the checkpoint's vit_model.*
// tensors; throws naming the model when it has none.
vit::Vit load_vit(const std::string& model_dir, const std::string& vit_dir = "",
                  fwd::WeightStorage storage = fwd::WeightStorage::F32);

struct X2tRequest {
  std::string image, video;  // exactly one: an image file, or a video file / folder of frames
  std::string prompt;        // the question
  std::string system;        // empty: Lance's instruction for the kind
  int resolution = 0;        // 0: Lance's (672 images, 616 videos); else >= 28
  double fps = 24.0;         // a folder of frames: its frame rate
  int max_new_tokens = 256;
};
struct X2tResult {
  int64_t prompt_tokens = 0, vit_tokens = 0, frames = 0;
  std::array<int, 3> grid_thw{0, 0, 0};
  std::vector<int32_t> generated_ids;
  std::string text;
  double vit_seconds = 0, seconds = 0;
  std::string vit_quantization;  // the ViT's linears stored 4-bit in the checkpoint (quantize --vit): how; else empty
  nlohmann::json to_json() const;  // `run --task x2t --json`
};
X2tResult understand(const Model& m, const vit::Vit& vit, const X2tRequest& request);

// ---- calibration ---------------------------------------------------------------------------------

struct CalibrateRequest {
  std::string model_dir, out;
  std::vector<calib::Source> sources;
  calib::CalibOptions options;  // options.sampler is filled from the model; `steps` overrides its steps
  fwd::LoadOptions load;
  int steps = -1;
  bool allow_partial = false, force = false;
  // x2t_image / x2t_video sources: the ViT (--vit DIR; empty: the checkpoint's vit_model.*), resolution.
  std::string vit_dir;
  int x2t_resolution = 0;
};
struct PathCoverage {
  int linears = 0, covered = 0;
  int64_t min_rows = -1, max_rows = 0;
};
struct CalibrateResult {
  std::string out;
  double seconds = 0, forward_seconds = 0;
  bool written = false;  // false for options.capture == false (nothing written)
  std::vector<std::string> sources, uncovered;
  std::string model_fingerprint;
  std::map<std::string, PathCoverage> coverage;  // "und" / "gen"
  nlohmann::json to_json() const;  // `calibrate --json`
};
// Refuses an existing `out` (unless force) before loading; refuses uncovered target linears unless
// allow_partial. `progress(done, total)` per sample.
CalibrateResult calibrate(const CalibrateRequest& request, const std::function<void(int64_t, int64_t)>& progress = {});

// ---- quantization --------------------------------------------------------------------------------

// Completes `o` from the scheme name and number-format specs exactly as `quantize` does with its flags
// (--scheme, --group-size, --sym, --gen-scheme, --override) and checks the numbers the caller set
// (--bpw >= 0, --gptq-block >= 1, --gptq-damp > 0): throws naming the bad one.
// `group`: --group-size when given (unset: 128); NVFP4 schemes refuse one unless an integer format is also
// asked for (--gen-scheme / --override).
pipeline::QuantizeOptions quantize_options(pipeline::QuantizeOptions o, const std::string& scheme,
                                           std::optional<int64_t> group, bool sym, const std::string& gen_scheme,
                                           const std::vector<std::string>& overrides);
// Checks the output directories (io/output.h rules: not an input, --force only over lance-quant's own
// output) before any slow work, then quantizes (`report.to_json()` is `quantize --json`).
pipeline::QuantizeReport quantize(const pipeline::QuantizeOptions& o);

// ---- evaluation ----------------------------------------------------------------------------------

struct EvalRequest {
  std::string base, quant, out, data_dir;
  eval::EvalData data;
  bool no_text = false, no_chat = false, no_t2i = false;
  eval::EvalOptions options = default_eval_options();
  std::optional<int> steps;
  std::string fake_quant;
  fwd::WeightStorage storage = fwd::WeightStorage::F32;
  fwd::HeadFormat quant_head = fwd::HeadFormat::Stored;
  bool force = false;  // replace an existing report directory that lance-quant wrote
  std::string vae;  // Wan2.2 VAE: decoded t2i pictures compared (PSNR, SSIM, side by side)
  // Image / video understanding: JSONL files, the ViT (empty: BASE's vit_model.*), QUANT's ViT as int4.
  std::string x2t_image, x2t_video, vit, vit_quant;
  int x2t_resolution = 0, max_x2t = 0;
  static eval::EvalOptions default_eval_options();  // the CLI's defaults: 16 chat prompts, 48 tokens, 8 t2i
};
struct EvalOutcome {
  eval::EvalResult result;
  nlohmann::json report;  // the report.json document
  std::string report_md;  // path of report.md
};
// Fills the default data (data/eval); checks the inputs (directories exist, text files are UTF-8) and the
// report directory (io/output.h rules) before the engines load; evaluates; writes the report as
// OUT.lq-partial-PID and renames it onto OUT.
EvalOutcome evaluate(EvalRequest request);

}  // namespace lq::api
