#include "vit/x2t_input.h"

#include <filesystem>
#include <fstream>

#include "io/error.h"
#include "io/text_file.h"
#include "tokenizer/tokenizer.h"

namespace lq::vit {

namespace fs = std::filesystem;

const char* media_kind_name(MediaKind k) { return k == MediaKind::Image ? "image" : "video"; }

std::vector<X2tItem> read_x2t_jsonl(const std::string& path, MediaKind kind) {
  const std::string key = media_kind_name(kind), other = media_kind_name(kind == MediaKind::Image ? MediaKind::Video : MediaKind::Image);
  const fs::path base = fs::path(path).parent_path();
  std::vector<X2tItem> out;
  for (const auto& [line, j] : io::read_jsonl_objects(path, "x2t file")) {
    const std::string where = path + ":" + std::to_string(line);
    if (j.contains(other) && !j.contains(key))
      fail(where, "has \"" + other + "\" but this is an x2t_" + key + " source (use x2t_" + other + ":FILE)");
    if (!j.contains(key) || !j[key].is_string() || !j.contains("question") || !j["question"].is_string())
      fail(where, "expected {\"" + key + "\": path, \"question\": text}");
    X2tItem it;
    it.kind = kind;
    const fs::path p(j[key].get<std::string>());
    it.path = (p.is_absolute() ? p : base / p).lexically_normal().string();
    it.question = j["question"].get<std::string>();
    for (const char* opt : {"system", "answer"})
      if (j.contains(opt)) {
        if (!j[opt].is_string()) fail(where, std::string("\"") + opt + "\" must be a string");
        (std::string(opt) == "system" ? it.system : it.answer) = j[opt].get<std::string>();
      }
    if (!fs::exists(it.path)) fail(where, key + " not found: " + it.path);
    out.push_back(std::move(it));
  }
  return out;
}

namespace {
VitFeatures features(const Vit& vit, const VitInput& in) {
  VitFeatures f;
  const int m = vit.config().spatial_merge_size;
  f.merged_grid = {in.grid[0], in.grid[1] / m, in.grid[2] / m};
  f.frames = int64_t(in.grid[0]) * vit.config().temporal_patch_size;
  f.rows = vit.forward(in.patches.data(), in.grid);
  return f;
}
}  // namespace

VitFeatures encode_media(const Vit& vit, MediaKind kind, const std::string& path, const X2tSettings& s) {
  if (kind == MediaKind::Image) return encode_frames(vit, kind, {media::read_image(path)}, s.image_resolution, path);
  const media::SampledFrames clip = media::read_clip(path, s.sampling, s.folder_fps);
  return encode_frames(vit, kind, clip.frames, s.video_resolution, path);
}

VitFeatures encode_frames(const Vit& vit, MediaKind kind, const std::vector<media::RgbImage>& frames, int resolution,
                          const std::string& what) {
  if (frames.empty()) fail(what, "no frames for the ViT");
  if (kind == MediaKind::Image && frames.size() != 1) fail(what, "an image is one frame");
  media::FrameTransform t = kind == MediaKind::Image ? media::vit_image_transform() : media::vit_video_transform();
  t.resolution = resolution;
  return features(vit, kind == MediaKind::Image ? image_input(frames.front(), vit.config(), t) : video_input(frames, vit.config(), t));
}

int temporal_step(const std::string& model_dir, const VitConfig& vit) {
  for (const char* name : {"llm_config.json", "lance_config.json"}) {
    const fs::path p = fs::path(model_dir) / name;
    if (!fs::exists(p)) continue;
    std::ifstream in(p);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception&) {
      continue;  // the model loader reports a broken config
    }
    if (j.contains("vision_config") && j["vision_config"].is_object() && j["vision_config"].contains("tokens_per_second"))
      return j["vision_config"]["tokens_per_second"].get<int>();
    if (std::string(name) == "lance_config.json" && j.contains("tokens_per_second")) return j["tokens_per_second"].get<int>();
  }
  return vit.tokens_per_second;
}

void check_vit_matches(const Vit& vit, const fwd::Engine& e) {
  if (vit.config().out_hidden_size != e.config().hidden_size)
    fail(vit.weights_path(), "the ViT's merger outputs " + std::to_string(vit.config().out_hidden_size) +
                                 " values per token, the model's hidden size is " + std::to_string(e.config().hidden_size));
}

X2tSample x2t_sample(const fwd::Engine& e, const tok::Tokenizer& t, const VitFeatures& f, const X2tItem& item, int step) {
  const std::string system =
      !item.system.empty() ? item.system : item.kind == MediaKind::Image ? fwd::kX2tImageSystem : fwd::kX2tVideoSystem;
  X2tSample s;
  s.prompt = fwd::x2t_prompt(t, system, item.question, f.merged_grid, step);
  if (int64_t(f.rows.size()) != f.tokens() * e.config().hidden_size)
    fail(item.path, "ViT features do not match the model's hidden size");
  if (s.prompt.next_position > e.config().max_position_embeddings)
    fail(item.path, "the x2t prompt reaches position " + std::to_string(s.prompt.next_position) +
                        ", beyond max_position_embeddings = " + std::to_string(e.config().max_position_embeddings) +
                        " (use a lower resolution or a shorter clip)");
  s.chunk = fwd::x2t_chunk(e, s.prompt, f.rows.data());
  return s;
}

const VitFeatures& FeatureCache::get(MediaKind kind, const std::string& path) {
  const auto key = std::make_pair(int(kind), path);
  auto it = cache_.find(key);
  if (it == cache_.end()) it = cache_.emplace(key, encode_media(vit_, kind, path, s_)).first;
  return it->second;
}

}  // namespace lq::vit
