#include "calib/calibrate.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "forward/edit_source.h"
#include "vit/edit_reference.h"
#include "forward/gen_sequence.h"
#include "forward/prompts.h"
#include "forward/t2i.h"
#include "io/error.h"
#include "io/output.h"
#include "io/safetensors.h"
#include "io/text_file.h"
#include "model/config.h"
#include "model/spec.h"
#include "num/formats.h"
#include "tokenizer/tokenizer.h"
#include "vae/wan_vae.h"

namespace lq::calib {

namespace fs = std::filesystem;

const char* source_kind_name(SourceKind k) {
  switch (k) {
    case SourceKind::Text: return "text";
    case SourceKind::Chat: return "chat";
    case SourceKind::T2i: return "t2i";
    case SourceKind::T2v: return "t2v";
    case SourceKind::ImageEdit: return "image_edit";
    case SourceKind::VideoEdit: return "video_edit";
    case SourceKind::X2tImage: return "x2t_image";
    case SourceKind::X2tVideo: return "x2t_video";
  }
  return "?";
}

Source parse_source(const std::string& arg) {
  const auto colon = arg.find(':');
  if (colon == std::string::npos)
    fail("--calib " + arg, "expected KIND:FILE with KIND one of text, chat, t2i, t2v, image_edit, video_edit, x2t_image, x2t_video");
  const std::string kind = arg.substr(0, colon), path = arg.substr(colon + 1);
  Source s;
  s.path = path;
  if (kind == "text") s.kind = SourceKind::Text;
  else if (kind == "chat") s.kind = SourceKind::Chat;
  else if (kind == "t2i") s.kind = SourceKind::T2i;
  else if (kind == "t2v") s.kind = SourceKind::T2v;
  else if (kind == "image_edit") s.kind = SourceKind::ImageEdit;
  else if (kind == "video_edit") s.kind = SourceKind::VideoEdit;
  else if (kind == "x2t_image") s.kind = SourceKind::X2tImage;
  else if (kind == "x2t_video") s.kind = SourceKind::X2tVideo;
  else fail("--calib " + arg, "unknown kind '" + kind + "' (expected text, chat, t2i, t2v, image_edit, video_edit, x2t_image or x2t_video)");
  io::require_file(path, "--calib " + kind + " file");
  io::check_text(io::read_file(path, "calibration file"), path);  // a binary file is refused before any work
  return s;
}

void StatsObserver::observe(const fwd::LinearId& id, const float* x, int64_t n, int64_t in_features) {
  const float tau = id.path == fwd::Path::Gen && tau_ >= 0 ? float(tau_) : -1.0f;
  out_.linears[fwd::linear_module_name(id)].add_rows(x, n, in_features, tau, hessian_);
}

std::string model_fingerprint(const std::string& model_dir) {
  const model::ModelConfig c = model::load_config(model_dir);
  io::TensorStore store(model_dir);
  std::ostringstream s;
  s << "hidden=" << c.hidden_size << " inter=" << c.intermediate_size << " layers=" << c.num_layers << " heads=" << c.num_heads
    << " kv=" << c.num_kv_heads << " head_dim=" << c.head_dim << " vocab=" << c.vocab_size << " theta=" << c.rope_theta << "\n";
  for (const auto& name : store.names()) {
    const auto& t = store.info(name);
    s << name;
    for (auto d : t.shape) s << ' ' << d;
    s << '\n';
    if (t.shape.size() == 1) {  // norm weights etc.: content identity, independent of f32/bf16 storage
      std::vector<float> v = store.read_f32(name);
      std::vector<uint16_t> b(v.size());
      num::f32_to_bf16(v.data(), b.data(), v.size());
      s.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size() * 2));
    }
  }
  return digest_hex(s.str());
}

namespace {

Sample sample(SourceKind kind, std::vector<int32_t> ids, std::string caption = {}, std::string media = {}) {
  Sample s;
  s.kind = kind;
  s.ids = std::move(ids);
  s.caption = std::move(caption);
  s.media = std::move(media);
  return s;
}

std::vector<Sample> text_samples(const std::string& text, const tok::Tokenizer& tok, const CalibOptions& o) {
  std::vector<int32_t> ids = tok.encode(text);
  if (o.max_tokens > 0 && int64_t(ids.size()) > o.max_tokens) ids.resize(size_t(o.max_tokens));
  std::vector<Sample> out;
  for (size_t b = 0; b < ids.size(); b += size_t(o.seq_len)) {
    const size_t e = std::min(ids.size(), b + size_t(o.seq_len));
    if (e - b < 2) break;
    out.push_back(sample(SourceKind::Text, std::vector<int32_t>(ids.begin() + long(b), ids.begin() + long(e))));
  }
  return out;
}

std::vector<Sample> chat_samples(const std::string& path, const tok::Tokenizer& tok, const CalibOptions& o) {
  std::vector<Sample> out;
  int64_t tokens = 0;
  for (const auto& [line_no, j] : io::read_jsonl_objects(path, "calibration file")) {
    if (!j.contains("question") || !j.contains("answer") || !j["question"].is_string() || !j["answer"].is_string())
      fail(path + ":" + std::to_string(line_no), "expected {\"question\": string, \"answer\": string}");
    std::vector<int32_t> ids = tok.encode(fwd::chat_prompt(j["question"].get<std::string>()) + j["answer"].get<std::string>() + "<|im_end|>\n");
    if (int64_t(ids.size()) > o.seq_len) ids.resize(size_t(o.seq_len));
    if (o.max_tokens > 0 && tokens + int64_t(ids.size()) > o.max_tokens) break;
    tokens += int64_t(ids.size());
    out.push_back(sample(SourceKind::Chat, std::move(ids)));
  }
  return out;
}

}  // namespace

std::vector<Sample> load_samples(const Source& src, const tok::Tokenizer& tok, const CalibOptions& o) {
  std::vector<Sample> out;
  switch (src.kind) {
    case SourceKind::Text: out = text_samples(io::read_text(src.path, "calibration file"), tok, o); break;
    case SourceKind::Chat: out = chat_samples(src.path, tok, o); break;
    case SourceKind::T2i:
    case SourceKind::T2v:
      for (const auto& line : io::nonempty_lines(io::read_text(src.path, "calibration file"))) {
        if (o.max_prompts > 0 && int64_t(out.size()) >= o.max_prompts) break;
        out.push_back(sample(src.kind, {}, line));
      }
      break;
    case SourceKind::ImageEdit:
    case SourceKind::VideoEdit: {
      const char* key = src.kind == SourceKind::ImageEdit ? "image" : "video";
      for (const auto& [line_no, j] : io::read_jsonl_objects(src.path, "calibration file")) {
        if (o.max_prompts > 0 && int64_t(out.size()) >= o.max_prompts) break;
        const std::string where = src.path + ":" + std::to_string(line_no);
        if (!j.contains(key) || !j[key].is_string() || !j.contains("prompt") || !j["prompt"].is_string())
          fail(where, std::string("expected {\"") + key + "\": path, \"prompt\": instruction}");
        fs::path media = j[key].get<std::string>();
        if (media.is_relative()) media = fs::path(src.path).parent_path() / media;
        if (!fs::exists(media)) fail(where, std::string(key) + " not found: " + media.string());
        out.push_back(sample(src.kind, {}, j["prompt"].get<std::string>(), media.string()));
      }
      break;
    }
    case SourceKind::X2tImage:
    case SourceKind::X2tVideo:
      for (auto& item : vit::read_x2t_jsonl(src.path, src.kind == SourceKind::X2tImage ? vit::MediaKind::Image : vit::MediaKind::Video)) {
        if (o.max_prompts > 0 && int64_t(out.size()) >= o.max_prompts) break;
        Sample s{src.kind, {}, {}, {}, std::move(item)};
        out.push_back(std::move(s));
      }
      break;
  }
  if (out.empty()) fail(src.path, std::string("no calibration samples in this ") + source_kind_name(src.kind) + " file");
  return out;
}

namespace {
// Content digest of an image or video file, or of every file of a folder of frames (sorted by name).
std::string media_digest(const std::string& path) {
  if (!fs::is_directory(path)) return digest_hex(io::read_file(path, "medium"));
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(path))
    if (e.is_regular_file()) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  std::string all;
  for (const auto& f : files) all += fs::path(f).filename().string() + digest_hex(io::read_file(f, "frame"));
  return digest_hex(all);
}
}  // namespace

bool is_x2t(SourceKind k) { return k == SourceKind::X2tImage || k == SourceKind::X2tVideo; }

fwd::Chunk x2t_calibration_chunk(const fwd::Engine& e, const tok::Tokenizer& t, vit::FeatureCache& cache,
                                 const vit::X2tItem& item, int temporal_step) {
  const vit::VitFeatures& f = cache.get(item.kind, item.path);
  vit::X2tSample s = vit::x2t_sample(e, t, f, item, temporal_step);
  if (item.answer.empty()) return std::move(s.chunk);
  // The answer continues the last (causal) split, as generated text would.
  const std::vector<int32_t> ans = t.encode(item.answer + "<|im_end|>");
  const int64_t H = e.config().hidden_size, n0 = s.chunk.rows(), na = int64_t(ans.size());
  if (s.prompt.next_position + na > e.config().max_position_embeddings)
    fail(item.path, "question and answer exceed max_position_embeddings");
  s.chunk.embeddings.resize(size_t((n0 + na) * H));
  e.embed_tokens(ans.data(), na, s.chunk.embeddings.data() + n0 * H);
  s.chunk.paths.resize(size_t(n0 + na), fwd::Path::Und);
  const auto pos = fwd::text_positions(na, s.prompt.next_position);
  s.chunk.positions.insert(s.chunk.positions.end(), pos.begin(), pos.end());
  s.chunk.splits.back().len += na;
  return std::move(s.chunk);
}

namespace {

void run_token_sample(const fwd::Engine& e, const std::vector<int32_t>& ids) {
  const int64_t n = int64_t(ids.size());
  if (n > e.config().max_position_embeddings)
    fail("calibrate", "sequence of " + std::to_string(n) + " tokens exceeds max_position_embeddings");
  fwd::Chunk chunk = fwd::text_chunk(e, ids, fwd::text_positions(n), {fwd::Split{n, fwd::SplitMode::Causal}});
  e.forward(chunk, nullptr, fwd::CacheWrite::No);
}

void run_t2i_sample(const fwd::Engine& e, const tok::Tokenizer& tok, const std::string& instruction, const fwd::LatentGrid& grid,
                    const std::string& caption, uint64_t seed, const fwd::SamplerOptions& sampler, StatsObserver& obs) {
  fwd::check_latent_grid(grid, e.config());
  obs.set_tau(-1.0);  // the prefix prefill is text (und rows)
  fwd::T2iSampler s(e, fwd::t2i_prompt(tok, caption, instruction, grid));
  fwd::SamplerOptions o = sampler;
  o.on_step = [&obs](int, double tau) { obs.set_tau(tau); };
  s.sample(fwd::normal_noise(seed, grid.tokens() * e.config().latent_channels), o);
  obs.set_tau(-1.0);
}

// An edit through the sampler: the clean source rows are computed with the prefix (observed at tau 0),
// the target rows at every step.
void run_edit_sample(const fwd::Engine& e, const tok::Tokenizer& tok, const vae::WanVae& vae, const Sample& s, const fwd::LatentGrid& t2i_grid,
                     const CalibOptions& co, uint64_t seed, StatsObserver& obs) {
  fwd::EditSource src;
  (s.kind == SourceKind::ImageEdit ? src.image : src.video) = s.media;
  src.resolution = co.edit_resolution > 0 ? co.edit_resolution : 16 * int(std::lround(std::sqrt(double(t2i_grid.h) * t2i_grid.w)));
  src.max_frames = co.edit_max_frames;
  const vit::EditConditions c = vit::edit_conditions(vae, co.edit_without_vit ? nullptr : co.vit, src, co.edit_vit_resolution, seed, false);
  obs.set_tau(0.0);  // clean condition rows enter at tau = 0 (the ViT reference and text rows are und rows)
  vit::EditJob job = vit::edit_job(e, tok, s.caption, c);
  fwd::SamplerOptions o = co.sampler;
  o.on_step = [&obs](int, double tau) { obs.set_tau(tau); };
  job.sampler->sample(fwd::normal_noise(seed, c.source.grid.tokens() * e.config().latent_channels), o);
  obs.set_tau(-1.0);
}

}  // namespace

StatsFile calibrate(const std::string& model_dir, fwd::Engine& engine, const tok::Tokenizer& tokenizer,
                    const std::vector<Source>& sources, const CalibOptions& o) {
  if (o.shard_count < 1 || o.shard_index < 0 || o.shard_index >= o.shard_count)
    fail("--shard", "expected i/n with 0 <= i < n");
  if (o.seq_len < 2) fail("--seq-len", "must be at least 2");
  StatsFile stats;
  stats.model_fingerprint = model_fingerprint(model_dir);
  std::vector<Sample> samples;
  for (const auto& src : sources) {
    auto s = load_samples(src, tokenizer, o);
    std::string content = io::read_file(src.path);
    if (is_x2t(src.kind)) {  // the media are part of the data's identity
      if (!o.vit) fail("--calib " + src.path, "x2t sources need the ViT (--vit DIR, or a checkpoint with vit_model.* tensors)");
      for (const auto& smp : s) content += media_digest(smp.x2t.path);
    }
    stats.data_sources.push_back(std::string(source_kind_name(src.kind)) + ":" + digest_hex(content) + ":" +
                                 fs::path(src.path).filename().string() + ":shard" + std::to_string(o.shard_index) + "/" +
                                 std::to_string(o.shard_count));
    samples.insert(samples.end(), std::make_move_iterator(s.begin()), std::make_move_iterator(s.end()));
  }
  std::sort(stats.data_sources.begin(), stats.data_sources.end());
  const fwd::T2iSettings t2i = fwd::load_t2i_settings(model_dir);
  const fwd::LatentGrid t2v_grid = t2v_calib_grid(t2i.grid, engine.config().max_latent_frames, o.t2v_frames);
  // Edits need the VAE: checked before any sample runs.
  std::optional<vae::WanVae> vae;
  const bool edits = std::any_of(samples.begin(), samples.end(), [](const Sample& s) {
    return s.kind == SourceKind::ImageEdit || s.kind == SourceKind::VideoEdit;
  });
  if (edits) {
    if (o.vae.empty()) fail("calibrate", "image_edit / video_edit sources need the Wan2.2 VAE (--vae PATH) to encode their sources");
    if (!o.vit && !o.edit_without_vit)
      fail("calibrate", "image_edit / video_edit sources need the ViT for Lance's reference block (--vit DIR, or a checkpoint "
                        "with vit_model.* tensors), or --no-vit-reference to calibrate edits without it");
    vae.emplace(vae::WanVae::load(o.vae));
    if (vae->config().z_dim != engine.config().latent_channels)
      fail(o.vae, "VAE latents have " + std::to_string(vae->config().z_dim) + " channels, the model's " +
                      std::to_string(engine.config().latent_channels));
    stats.extra_metadata["vae"] = fs::path(o.vae).filename().string();
    stats.extra_metadata["edit_vit_reference"] = o.edit_without_vit ? "no" : "yes";
  }
  if (std::any_of(samples.begin(), samples.end(), [](const Sample& s) { return s.kind == SourceKind::T2v; }))
    stats.extra_metadata["t2v_grid"] = std::to_string(t2v_grid.t) + "x" + std::to_string(t2v_grid.h) + "x" + std::to_string(t2v_grid.w);
  std::unique_ptr<vit::FeatureCache> features;
  int step = 2;
  if (o.vit) {
    vit::check_vit_matches(*o.vit, engine);
    features = std::make_unique<vit::FeatureCache>(*o.vit, o.x2t);
    step = vit::temporal_step(model_dir, o.vit->config());
  }
  StatsObserver obs(stats, o.hessian);
  struct ObserverScope {  // detach even when a sample throws
    fwd::Engine& e;
    ~ObserverScope() { e.set_observer(nullptr); }
  } scope{engine};
  engine.set_observer(o.capture ? &obs : nullptr);
  int64_t mine = 0;
  for (size_t k = 0; k < samples.size(); ++k) mine += int64_t(k % size_t(o.shard_count)) == o.shard_index;
  int64_t done = 0;
  for (size_t k = 0; k < samples.size(); ++k) {
    if (int64_t(k % size_t(o.shard_count)) != o.shard_index) continue;
    const Sample& s = samples[k];
    switch (s.kind) {
      case SourceKind::T2i: run_t2i_sample(engine, tokenizer, t2i.instruction, t2i.grid, s.caption, o.seed + k, o.sampler, obs); break;
      case SourceKind::T2v: run_t2i_sample(engine, tokenizer, t2i.t2v_instruction, t2v_grid, s.caption, o.seed + k, o.sampler, obs); break;
      case SourceKind::ImageEdit:
      case SourceKind::VideoEdit: run_edit_sample(engine, tokenizer, *vae, s, t2i.grid, o, o.seed + k, obs); break;
      case SourceKind::X2tImage:
      case SourceKind::X2tVideo:
        // The ViT's own linears are not targets (nothing observes them); the prompt prefill is observed.
        engine.forward(x2t_calibration_chunk(engine, tokenizer, *features, s.x2t, step), nullptr, fwd::CacheWrite::No);
        break;
      default: run_token_sample(engine, s.ids);
    }
    if (o.progress) o.progress(++done, mine);
  }
  stats.extra_metadata["shard"] = std::to_string(o.shard_index) + "/" + std::to_string(o.shard_count);
  return stats;
}

fwd::LatentGrid t2v_calib_grid(const fwd::LatentGrid& g, int max_latent_frames, int t2v_frames) {
  const int max_t = std::max(1, max_latent_frames);
  const int frames = t2v_frames > 0 ? t2v_frames : std::min(17, 4 * (max_t - 1) + 1);
  const int t = (frames - 1) / 4 + 1;
  if (frames < 1 || t > max_t)
    fail("--t2v-frames", std::to_string(frames) + " frames need " + std::to_string(t) + " latent frames; the model allows " +
                             std::to_string(max_t) + " (max_num_latent_frames)");
  return {t, g.h, g.w};
}

std::vector<std::string> uncovered_linears(const StatsFile& stats, const std::string& model_dir) {
  const model::ModelConfig c = model::load_config(model_dir);
  io::TensorStore store(model_dir);
  const model::ModelSpec spec = model::build_spec(c, store);
  std::vector<std::string> out;
  for (const auto& l : spec.linears) {
    auto it = stats.linears.find(l.name);
    if (it == stats.linears.end() || it->second.all.count == 0) out.push_back(l.name);
  }
  return out;
}

}  // namespace lq::calib
