// The Wan VAE's convolutions on both Conv2d backends side by side: im2col + the project's GEMM vs
// oneDNN. Each case runs both backends in interleaved rounds on the same inputs (this host is shared,
// so only side-by-side ratios mean anything) and reports the best round's GFLOP/s and the ratio.
//
//   build/bench_conv [--rounds R] [--scale S] [--threads N] [--cpu-time]
//
// Shapes: the 3x3 filters of the full-size decoder (one time tap: a frame of a causal 3x3x3 filter),
// at a reduced spatial size (--scale divides the frame side; default 4, i.e. 512x512-image layers at
// 1/16 of their pixels), plus the 1x1 shortcut and the stride-2 encoder downsample.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <time.h>

#include "kernels/conv.h"
#include "kernels/parallel.h"

namespace {

using lq::kernels::Conv2d;
using lq::kernels::Conv2dParams;
using lq::kernels::ConvBackend;

struct Case {
  const char* what;
  int64_t cin, cout, side;  // side at full size (pixels of the square frame)
  int k, stride;
};

// Wall time, or with --cpu-time the process CPU time (with --threads 1 that is the work itself, much
// less disturbed by other processes on a busy host than wall time).
bool g_cpu_time = false;
double now_seconds() {
  if (g_cpu_time) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 3, scale = 4;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--rounds" && i + 1 < argc) rounds = std::atoi(argv[++i]);
    else if (a == "--scale" && i + 1 < argc) scale = std::atoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) lq::kernels::set_num_threads(std::atoi(argv[++i]));
    else if (a == "--cpu-time") g_cpu_time = true;
    else {
      std::fprintf(stderr, "usage: bench_conv [--rounds R] [--scale S] [--threads N] [--cpu-time]\n");
      return 2;
    }
  }
  if (!lq::kernels::dnnl_available()) {
    std::printf("this build has no oneDNN: nothing to compare\n");
    return 0;
  }
  const Case cases[] = {
      {"dec middle/up0 1024->1024 3x3 @32", 1024, 1024, 32, 3, 1},
      {"dec up1 1024->1024 3x3 @64", 1024, 1024, 64, 3, 1},
      {"dec up2 1024->512 3x3 @128", 1024, 512, 128, 3, 1},
      {"dec up2 512->512 3x3 @128", 512, 512, 128, 3, 1},
      {"dec up3 512->256 3x3 @256", 512, 256, 256, 3, 1},
      {"dec up3 256->256 3x3 @256", 256, 256, 256, 3, 1},
      {"dec head 256->12 3x3 @256", 256, 12, 256, 3, 1},
      {"dec shortcut 512->256 1x1 @256", 512, 256, 256, 1, 1},
      {"enc 160->160 3x3 @256", 160, 160, 256, 3, 1},
      {"enc down 320->320 3x3 s2 @128", 320, 320, 128, 3, 2},
  };
  std::printf("threads %d, frame side / %d, best of %d interleaved rounds, %s\n", lq::kernels::num_threads(), scale, rounds,
              g_cpu_time ? "process CPU time" : "wall time");
  std::printf("%-36s %10s %10s %8s %10s\n", "case", "gemm GF/s", "dnnl GF/s", "dnnl/gemm", "max |diff|");
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const Case& c : cases) {
    const int64_t side = std::max<int64_t>(c.side / scale, 4);
    Conv2dParams p;
    p.cin = c.cin;
    p.cout = c.cout;
    p.kh = p.kw = c.k;
    p.stride = c.stride;
    if (c.stride == 2) p.pad_bottom = p.pad_right = 1;
    else p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = c.k / 2;
    std::vector<float> w(size_t(c.cout * c.k * c.k * c.cin)), b(size_t(c.cout)), x(size_t(side * side * c.cin));
    const float ws = 1.0f / std::sqrt(float(c.k * c.k * c.cin));
    for (auto& v : w) v = nd(rng) * ws;
    for (auto& v : b) v = nd(rng);
    for (auto& v : x) v = nd(rng);
    const Conv2d gemm(p, w.data(), b.data(), ConvBackend::Gemm), dnnl(p, w.data(), b.data(), ConvBackend::Dnnl);
    const int64_t oh = p.out_h(side), ow = p.out_w(side);
    std::vector<float> yg(size_t(oh * ow * c.cout)), yd(yg.size());
    const double flops = 2.0 * double(oh * ow) * double(c.cout) * double(c.k * c.k * c.cin);
    double best_g = 1e30, best_d = 1e30;
    gemm.run(x.data(), side, side, yg.data(), false);  // warm-up (primitives, scratch)
    dnnl.run(x.data(), side, side, yd.data(), false);
    for (int r = 0; r < rounds; ++r) {
      double t0 = now_seconds();
      gemm.run(x.data(), side, side, yg.data(), false);
      best_g = std::min(best_g, now_seconds() - t0);
      t0 = now_seconds();
      dnnl.run(x.data(), side, side, yd.data(), false);
      best_d = std::min(best_d, now_seconds() - t0);
    }
    float diff = 0;
    for (size_t i = 0; i < yg.size(); ++i) diff = std::max(diff, std::fabs(yg[i] - yd[i]));
    std::printf("%-36s %10.1f %10.1f %8.2f %10.2e\n", c.what, flops / best_g * 1e-9, flops / best_d * 1e-9, best_g / best_d,
                double(diff));
  }
  return 0;
}
