#include "cli/run_gen.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include "io/error.h"
#include "io/output.h"
#include "io/png.h"
#include "io/progress.h"
#include "media/video_writer.h"

namespace lq::cli {

namespace fs = std::filesystem;

nlohmann::json write_visuals(const vae::WanVae& vae, const std::vector<float>& latents, const fwd::LatentGrid& grid,
                             const VisualOutputs& out) {
  const auto t0 = std::chrono::steady_clock::now();
  // The frames go to FRAMES_DIR.lq-partial-PID, renamed onto FRAMES_DIR when every frame is written
  // (io/output.h); `run` checked the directory with check_output_dir before sampling.
  std::optional<io::PartialOutputDir> frames_dir;
  if (!out.frames_dir.empty()) frames_dir.emplace(out.frames_dir, "run");
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
            io::write_png_rgb((frames_dir->path() / name).string(), frame, W, H);
          }
          if (!out.mp4.empty()) {
            if (!mp4) mp4 = std::make_unique<media::VideoWriter>(out.mp4, W, H, media::VideoWriterOptions{out.fps});
            mp4->add_frame(frame);
          }
        }
      },
      true, [&](int done, int) { progress.update(done); });
  if (mp4) mp4->finish();
  if (frames_dir) frames_dir->commit(nlohmann::json{{"frames", frames}, {"width", width}, {"height", height}}.dump());
  progress.finish();
  nlohmann::json j = {{"frames", frames}, {"width", width}, {"height", height},
                      {"decode_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
  if (!out.png.empty()) j["png"] = out.png;
  if (!out.mp4.empty()) j["mp4"] = out.mp4, j["fps"] = out.fps, j["codec"] = mp4 ? mp4->codec() : "";
  if (!out.frames_dir.empty()) j["frames_dir"] = out.frames_dir;
  return j;
}

}  // namespace lq::cli
