// Calibration: run inputs of both paths through the native forward and accumulate the input
// statistics of every target linear.
//   text:FILE  plain text, tokenized whole and cut into windows (und path)
//   chat:FILE  JSONL {"question", "answer"} in the chat template (und path)
//   t2i:FILE   prompts, one per line, run through the full CFG sampler; the gen linears are observed at
//              EVERY step (cond branch, and uncond while CFG is active: exactly what inference runs),
//              tagged with tau' so statistics per tau bucket are kept as well.
//   t2v:FILE   the same for text-to-video (Lance's t2v instruction, latent grid t x h x w with
//              t = (frames - 1) / 4 + 1, h x w the t2i grid).
//   image_edit:FILE / video_edit:FILE   JSONL {"image" | "video": path, "prompt": instruction} (paths
//              relative to the file): the source is VAE-encoded (needs CalibOptions::vae) and the edit
//              runs through the sampler; its clean condition rows are observed at tau = 0 when the
//              prefix is computed, the target rows at every step. As in Lance, the same frames also give
//              a ViT reference block before the source block (und rows; needs CalibOptions::vit unless
//              edit_without_vit).
//   x2t_image:FILE, x2t_video:FILE
//              JSONL {"image"|"video": path, "question": text[, "answer": text]}: the medium through the ViT
//              and Lance's x2t prompt (vit/x2t_input.h), so the und linears see ViT tokens; the answer, when
//              given, follows the prompt as the model would generate it. Needs CalibOptions::vit.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "calib/stats.h"
#include "forward/forward.h"
#include "forward/t2i.h"
#include "vit/x2t_input.h"

namespace lq::tok {
class Tokenizer;
}

namespace lq::calib {

enum class SourceKind { Text, Chat, T2i, T2v, ImageEdit, VideoEdit, X2tImage, X2tVideo };
const char* source_kind_name(SourceKind k);

struct Source {
  SourceKind kind = SourceKind::Text;
  std::string path;
};
// Parses "KIND:FILE" for the kinds above and checks the file is readable UTF-8 text (throws naming the
// argument, or the file, line and byte of the first invalid byte). JSONL kinds are checked the same way.
Source parse_source(const std::string& arg);

struct CalibOptions {
  int64_t seq_len = 512;          // text window length (tokens)
  int64_t max_tokens = 0;         // per text/chat source; 0 = all
  int64_t max_prompts = 0;        // per t2i source; 0 = all
  int shard_index = 0, shard_count = 1;  // samples k with k % count == index
  bool hessian = false;           // also accumulate X^T X per linear
  bool capture = true;            // false: run the same forwards without observing (measures capture overhead)
  fwd::SamplerOptions sampler;    // t2i schedule (steps, shift, CFG)
  uint64_t seed = 0;              // t2i noise seed base (prompt k uses seed + k)
  std::string vae;                // Wan2.2 VAE (image_edit / video_edit sources)
  int t2v_frames = 0;             // t2v pixel frames; 0 = 17, or fewer when the model allows fewer latent frames
  int edit_resolution = 0;        // edit sources: bucket resolution; 0 = 16 sqrt(h w) of the t2i grid
  int edit_max_frames = 17;       // video_edit sources: first 4k + 1 <= this many sampled frames
  int edit_vit_resolution = 0;    // edit sources: the ViT reference's resolution; 0 = vit::edit_vit_resolution
  bool edit_without_vit = false;  // edit sources without the ViT reference (not Lance's sequence)
  const vit::Vit* vit = nullptr;  // the vision tower for x2t and edit sources (required when there are any)
  vit::X2tSettings x2t;           // resolutions, frame sampling
  std::function<void(int64_t done, int64_t total)> progress;  // per sample
};

// Observer that adds every target linear's input rows to a StatsFile.
class StatsObserver final : public fwd::ActivationObserver {
 public:
  StatsObserver(StatsFile& out, bool hessian) : out_(out), hessian_(hessian) {}
  void set_tau(double tau) { tau_ = tau; }  // < 0 outside denoising
  void observe(const fwd::LinearId& id, const float* x, int64_t n, int64_t in_features) override;

 private:
  StatsFile& out_;
  bool hessian_;
  double tau_ = -1.0;
};

// One unit of calibration work: a text window or chat pair (token ids), a t2i / t2v prompt (caption),
// an edit (instruction in `caption`, source file in `media`), or an x2t question about an image or video.
struct Sample {
  SourceKind kind;
  std::vector<int32_t> ids;  // text / chat
  std::string caption;       // t2i / t2v / edits
  std::string media;         // edits: the source image / video
  vit::X2tItem x2t;          // x2t_image / x2t_video
};
// Reads one source into samples: text cut into seq_len windows (after max_tokens), chat pairs in the chat
// template (each at most seq_len tokens, max_tokens in all), t2i / t2v prompts, edits and x2t questions (at
// most max_prompts each). Throws naming the file (and line) for malformed input or a source without samples.
std::vector<Sample> load_samples(const Source& src, const tok::Tokenizer& tokenizer, const CalibOptions& options);

// Identity of a model independent of its storage dtype: config values, tensor names and shapes, and
// a digest of every 1-D tensor (norm weights) rounded to bf16.
std::string model_fingerprint(const std::string& model_dir);

// Runs every source (respecting the shard) and returns the statistics, with data_sources filled in.
StatsFile calibrate(const std::string& model_dir, fwd::Engine& engine, const tok::Tokenizer& tokenizer,
                    const std::vector<Source>& sources, const CalibOptions& options);

// The latent grid of t2v calibration: the t2i grid with t = (frames - 1) / 4 + 1 (see t2v_frames).
fwd::LatentGrid t2v_calib_grid(const fwd::LatentGrid& t2i_grid, int max_latent_frames, int t2v_frames);
// The x2t prompt chunk of a sample (ViT features from `cache`), its answer appended when it has one.
fwd::Chunk x2t_calibration_chunk(const fwd::Engine& e, const tok::Tokenizer& t, vit::FeatureCache& cache,
                                 const vit::X2tItem& item, int temporal_step);
bool is_x2t(SourceKind k);

// Target linears of the model with no calibration rows. Empty when every target is covered.
std::vector<std::string> uncovered_linears(const StatsFile& stats, const std::string& model_dir);

}  // namespace lq::calib
