// Time and peak memory of the native ViT on one image or video (Lance's preprocessing included):
//   build/bench_vit VIT_DIR_OR_MODEL IMAGE|VIDEO [--video] [--resolution R] [--threads N] [--rounds K]
//                   [--bf16] [--release-pages]
// Prints the preprocessing and ViT seconds of each round, the LLM tokens produced, and the process's peak
// resident set (getrusage ru_maxrss, whole process: weights mapped or owned, activations).
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "io/error.h"
#include "kernels/parallel.h"
#include "media/image_io.h"
#include "media/video_reader.h"
#include "vit/vit.h"
#include "vit/vit_input.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_vit VIT_DIR_OR_MODEL IMAGE|VIDEO [--video] [--resolution R] [--threads N] [--rounds K] [--bf16] [--release-pages]\n");
    return 2;
  }
  using namespace lq;
  bool video = false;
  int resolution = 0, rounds = 1;
  vit::VitLoadOptions lo;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--video") video = true;
    else if (a == "--resolution" && i + 1 < argc) resolution = std::stoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) kernels::set_num_threads(std::stoi(argv[++i]));
    else if (a == "--rounds" && i + 1 < argc) rounds = std::stoi(argv[++i]);
    else if (a == "--bf16") lo.storage = fwd::WeightStorage::BF16;
    else if (a == "--release-pages") lo.release_pages = true;
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  try {
    auto now = [] { return std::chrono::steady_clock::now(); };
    auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
    const auto t0 = now();
    const vit::Vit v = vit::Vit::load(argv[1], lo);
    std::printf("loaded %s (%d blocks, width %d) in %.2f s, %d threads\n", v.weights_path().c_str(), v.config().depth,
                v.config().hidden_size, secs(t0, now()), kernels::num_threads());
    for (int r = 0; r < rounds; ++r) {
      const auto t1 = now();
      vit::VitInput in;
      if (video) {
        media::FrameTransform t = media::vit_video_transform();
        if (resolution) t.resolution = resolution;
        in = vit::video_input(media::read_clip(argv[2]).frames, v.config(), t);
      } else {
        media::FrameTransform t = media::vit_image_transform();
        if (resolution) t.resolution = resolution;
        in = vit::image_input(media::read_image(argv[2]), v.config(), t);
      }
      const auto t2 = now();
      const auto y = v.forward(in.patches.data(), in.grid);
      const auto t3 = now();
      std::printf("round %d: grid (%d, %d, %d) patches -> %lld LLM tokens; preprocessing %.2f s, ViT %.2f s\n", r, in.grid[0],
                  in.grid[1], in.grid[2], (long long)in.llm_tokens(v.config()), secs(t1, t2), secs(t2, t3));
    }
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    std::printf("peak RSS %.1f MB\n", double(ru.ru_maxrss) / 1024.0);
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
