// From an image or video file and a question to the backbone's x2t prompt chunk: media reading and
// sampling (media/), Lance's frame transform and frame rules (vit_input.h), the ViT, and the prompt
// layout (forward/x2t.h). Shared by `run --task x2t`, calibration (x2t_image:/x2t_video:), AWQ and eval.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "forward/x2t.h"
#include "media/video_reader.h"
#include "vit/vit.h"
#include "vit/vit_input.h"

namespace lq::tok {
class Tokenizer;
}

namespace lq::vit {

struct X2tSettings {
  int image_resolution = 672;  // Lance: image_768res -> ViT 672
  int video_resolution = 616;  // Lance: video_480p -> ViT 616
  media::FrameSampling sampling;   // 12 fps, <= 6 s, 4k+1
  double folder_fps = 24.0;        // frame rate of a folder of images
};

// One question about one image or video. `system` empty: Lance's instruction for the kind. `answer`
// (optional) is a reference answer: calibration runs it after the prompt, evaluation reports it.
struct X2tItem {
  MediaKind kind = MediaKind::Image;
  std::string path, question, system, answer;
};
const char* media_kind_name(MediaKind k);  // "image" / "video"

// A JSONL file of {"image": PATH, "question": TEXT} (kind Image) or {"video": PATH, "question": TEXT}
// (kind Video) objects, optional "system" and "answer"; relative paths are relative to the file's directory. Throws
// naming file:line for a malformed line, the other kind's key, or a missing medium.
std::vector<X2tItem> read_x2t_jsonl(const std::string& path, MediaKind kind);

// The ViT rows of one medium: [K, out_hidden] in the merged grid's raster order.
struct VitFeatures {
  std::vector<float> rows;
  std::array<int, 3> merged_grid{0, 0, 0};  // (t, h, w) of LLM tokens
  int64_t frames = 0;                        // frames fed to the ViT (after Lance's repeat rules)
  int64_t tokens() const { return int64_t(merged_grid[0]) * merged_grid[1] * merged_grid[2]; }
};
VitFeatures encode_media(const Vit& vit, MediaKind kind, const std::string& path, const X2tSettings& s = {});
// The same for frames already read (an edit's source: the frames its VAE block is made of) through the
// ViT transform at `resolution` and the frame rule of `kind` (one image repeated to 2 frames; a video's
// last frame repeated when the count is odd). `what` names the source in errors.
VitFeatures encode_frames(const Vit& vit, MediaKind kind, const std::vector<media::RgbImage>& frames, int resolution,
                          const std::string& what);

// tokens_per_second of the model (llm_config.json "vision_config", else lance_config.json, else the
// ViT's): the temporal position step per temporal patch (Lance: 2).
int temporal_step(const std::string& model_dir, const VitConfig& vit);

// Checks that the ViT's output width is the backbone's hidden size (throws naming both).
void check_vit_matches(const Vit& vit, const fwd::Engine& e);

struct X2tSample {
  fwd::X2tPrompt prompt;
  fwd::Chunk chunk;
};
X2tSample x2t_sample(const fwd::Engine& e, const tok::Tokenizer& t, const VitFeatures& f, const X2tItem& item, int step);

// Caches ViT features by (kind, path): calibration and evaluation ask several questions per medium.
class FeatureCache {
 public:
  FeatureCache(const Vit& vit, X2tSettings s) : vit_(vit), s_(s) {}
  const VitFeatures& get(MediaKind kind, const std::string& path);

 private:
  const Vit& vit_;
  X2tSettings s_;
  std::map<std::pair<int, std::string>, VitFeatures> cache_;
};

}  // namespace lq::vit
