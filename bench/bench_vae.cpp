// Wan2.2 VAE decode / encode time and peak memory on random latents (or pixels):
//   build/bench_vae VAE_PATH --latent T,H,W [--encode] [--warmup] [--threads N] [--backend auto|gemm|dnnl] [--repeat R]
// --warmup first runs a 1x1x1 (decode) / 1x16x16 (encode) pass so the timed runs exclude building the
// weights (reading and reordering 2.2 GB for the full decoder). Times are wall and process CPU seconds.
// e.g. a 512x512 picture is --latent 1,32,32; a 33-frame 480x832 clip --latent 9,30,52. Prints the
// wall time of each run, the resident weights and the process's peak RSS (getrusage). Decoded frames
// are consumed chunk by chunk and dropped, as `run` does when it writes an MP4.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/conv.h"
#include "kernels/parallel.h"
#include "vae/wan_vae.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_vae VAE_PATH --latent T,H,W [--encode] [--warmup] [--threads N] [--backend B] [--repeat R]\n");
    return 2;
  }
  const std::string path = argv[1];
  int t = 1, h = 32, w = 32, repeat = 1;
  bool encode = false, warmup = false;
  lq::kernels::ConvBackend backend = lq::kernels::ConvBackend::Auto;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--latent" && i + 1 < argc) std::sscanf(argv[++i], "%d,%d,%d", &t, &h, &w);
    else if (a == "--encode") encode = true;
    else if (a == "--warmup") warmup = true;
    else if (a == "--threads" && i + 1 < argc) lq::kernels::set_num_threads(std::atoi(argv[++i]));
    else if (a == "--backend" && i + 1 < argc) backend = lq::kernels::parse_conv_backend(argv[++i]);
    else if (a == "--repeat" && i + 1 < argc) repeat = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  try {
    const auto t0 = std::chrono::steady_clock::now();
    const lq::vae::WanVae vae = lq::vae::WanVae::load(path, backend);
    const int z = vae.config().z_dim, T = 4 * (t - 1) + 1, H = 16 * h, W = 16 * w;
    std::vector<float> lat(size_t(t) * h * w * z), px;
    uint64_t s = 12345;
    auto rnd = [&s] { s = s * 6364136223846793005ull + 1442695040888963407ull; return float((s >> 40) & 0xFFFF) / 32768.0f - 1.0f; };
    for (float& v : lat) v = rnd();
    if (encode) {
      px.resize(size_t(T) * H * W * 3);
      for (float& v : px) v = rnd();
    }
    std::printf("%s: %s latent %dx%dx%d (%d frames %dx%d), %d threads, open %.2f s\n", path.c_str(), encode ? "encode" : "decode", t, h,
                w, T, W, H, lq::kernels::num_threads(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    std::fflush(stdout);
    auto cpu_seconds = [] {
      rusage ru{};
      getrusage(RUSAGE_SELF, &ru);
      return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + 1e-6 * double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    };
    if (warmup) {
      const auto tw = std::chrono::steady_clock::now();
      const double cw = cpu_seconds();
      if (encode) {
        std::vector<float> one(16 * 16 * 3, 0.0f);
        vae.encode(one.data(), 1, 16, 16);
      } else {
        vae.decode(lat.data(), 1, 1, 1, lq::vae::FrameSink([](const float*, int, int, int) {}));
      }
      std::printf("warm-up (builds the weights): %.2f s wall, %.2f s CPU\n",
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - tw).count(), cpu_seconds() - cw);
      std::fflush(stdout);
    }
    for (int r = 0; r < repeat; ++r) {
      const auto t1 = std::chrono::steady_clock::now();
      const double c1 = cpu_seconds();
      // Per time chunk: wall and CPU seconds since the previous chunk and the peak RSS so far.
      auto last_wall = t1;
      double last_cpu = c1;
      auto per_chunk = [&](int d, int n) {
        const auto now = std::chrono::steady_clock::now();
        const double cpu = cpu_seconds();
        rusage ru{};
        getrusage(RUSAGE_SELF, &ru);
        std::printf("  chunk %d/%d: %.1f s wall, %.1f s CPU, peak RSS %.2f GB\n", d, n,
                    std::chrono::duration<double>(now - last_wall).count(), cpu - last_cpu, double(ru.ru_maxrss) / 1e6);
        std::fflush(stdout);
        last_wall = now;
        last_cpu = cpu;
      };
      int frames = 0;
      if (encode) {
        const auto e = vae.encode(px.data(), T, H, W, per_chunk);
        frames = e.t;
      } else {
        vae.decode(lat.data(), t, h, w, [&](const float*, int n, int, int) { frames += n; }, true, per_chunk);
      }
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
      rusage ru{};
      getrusage(RUSAGE_SELF, &ru);
      std::printf("run %d: %.2f s wall, %.2f s CPU, %d %s, weights %.2f GB, peak RSS %.2f GB\n", r + 1, secs, cpu_seconds() - c1, frames,
                  encode ? "latent frames" : "frames",
                  double(vae.resident_weight_bytes()) / 1e9, double(ru.ru_maxrss) / 1e6);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
