#include "cli/run_gen.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "io/error.h"
#include "io/png.h"
#include "io/progress.h"
#include "media/image_io.h"
#include "media/lance_transform.h"
#include "media/video_reader.h"
#include "media/video_writer.h"

namespace lq::cli {

namespace fs = std::filesystem;

nlohmann::json write_visuals(const vae::WanVae& vae, const std::vector<float>& latents, const fwd::LatentGrid& grid,
                             const VisualOutputs& out) {
  const auto t0 = std::chrono::steady_clock::now();
  if (!out.frames_dir.empty()) fs::create_directories(out.frames_dir);
  std::unique_ptr<media::VideoWriter> mp4;
  int frames = 0, width = 0, height = 0;
  io::Progress progress("VAE decode", 1, "latent frames");
  progress.set_total(grid.t);
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
            io::write_png_rgb((fs::path(out.frames_dir) / name).string(), frame, W, H);
          }
          if (!out.mp4.empty()) {
            if (!mp4) mp4 = std::make_unique<media::VideoWriter>(out.mp4, W, H, media::VideoWriterOptions{out.fps});
            mp4->add_frame(frame);
          }
        }
      },
      true, [&](int done, int) { progress.update(done); });
  if (mp4) mp4->finish();
  progress.finish();
  nlohmann::json j = {{"frames", frames}, {"width", width}, {"height", height},
                      {"decode_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
  if (!out.png.empty()) j["png"] = out.png;
  if (!out.mp4.empty()) j["mp4"] = out.mp4, j["fps"] = out.fps, j["codec"] = mp4 ? mp4->codec() : "";
  if (!out.frames_dir.empty()) j["frames_dir"] = out.frames_dir;
  return j;
}

uint64_t source_noise_seed(uint64_t seed) { return seed ^ 0x5EED5EED5EED5EEDull; }

EncodedSource encode_edit_source(const vae::WanVae& vae, const EditSource& src, uint64_t seed) {
  if (src.image.empty() == src.video.empty()) fail("edit", "give exactly one of --image SRC or --video SRC");
  EncodedSource e;
  std::vector<media::RgbImage> frames;
  if (!src.image.empty()) {
    e.vision_type = "image";
    frames.push_back(media::read_image(src.image));
  } else {
    e.vision_type = "video";
    media::SampledFrames s = media::read_clip(src.video);
    frames = std::move(s.frames);
    if (src.max_frames > 0 && int(frames.size()) > src.max_frames) {
      if (src.max_frames < 1) fail("--max-frames", "must be >= 1");
      frames.resize(size_t((src.max_frames - 1) / 4 * 4 + 1));
    }
  }
  media::FrameTransform t;  // Lance's VAE transform: bucket stride 16, crop to multiples of 16, mean = std = 0.5
  t.resolution = src.resolution > 0 ? src.resolution : e.vision_type == "image" ? 768 : 640;
  t.bucket_stride = 16;
  t.divisible = vae.config().spatial_ratio();
  t.mean = {0.5f, 0.5f, 0.5f};
  t.std = {0.5f, 0.5f, 0.5f};
  const media::FrameTensor ft = media::transform_frames(frames, t, src.image.empty() ? src.video : src.image);
  // [T, 3, H, W] -> [T, H, W, 3]
  std::vector<float> px(ft.data.size());
  const size_t plane = size_t(ft.h) * ft.w;
  for (int f = 0; f < ft.t; ++f)
    for (size_t i = 0; i < plane; ++i)
      for (int c = 0; c < 3; ++c) px[(size_t(f) * plane + i) * 3 + c] = ft.data[(size_t(f) * 3 + c) * plane + i];
  io::Progress progress("VAE encode", 1, "latent frames");
  const vae::Encoded enc = vae.encode(px.data(), ft.t, ft.h, ft.w, [&](int d, int n) {
    progress.set_total(n);
    progress.update(d);
  });
  progress.finish();
  const std::vector<float> eps = fwd::normal_noise(source_noise_seed(seed), int64_t(enc.mu.size()));
  e.latents = vae::reparameterize(enc, eps.data());
  e.grid = {enc.t, enc.h, enc.w};
  e.frames = ft.t;
  e.width = ft.w;
  e.height = ft.h;
  return e;
}

}  // namespace lq::cli
