// oneDNN's matmul primitive (Debian libdnnl-dev) next to our packed GEMM (kernels::linear_gemm) on
// Lance's MLP shapes, f32 and bf16 weights, at prefill / denoising token counts. Built only when
// CMake finds oneDNN (optional); the measurement behind docs/cpu-gemm.md.
//
//   build/bench_onednn                       2048->11008 and 11008->2048, 64 / 512 / 4096 tokens
//   build/bench_onednn --tokens 64,512 --rounds 5 --threads 2
//
// Cases, all y[n, out] = x[n, in] W^T with W stored [out, in] as in checkpoints:
//   ours f32 / ours bf16        linear_gemm, weights read in place (bf16 widened while packing)
//   dnnl f32 (W as stored)      matmul f32 x f32, weights described in their stored layout (tag ba)
//   dnnl f32 (W reordered)      the same with weights reordered once into oneDNN's preferred layout
//                               (what an integration would do at load time; the reorder is not timed)
//   dnnl bf16 (x, W bf16)       matmul bf16 x bf16 -> f32, W reordered once; the activations are
//                               given already in bf16 (their conversion is not timed)
// oneDNN threads through its own runtime (OpenMP in Debian's build): --threads sets both pools.
// Every case runs in every round, in turn (interleaved), and the best round is kept.
#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench_weights.h"
#include "kernels/linear.h"
#include "num/formats.h"

namespace {

namespace kernels = lq::kernels;
using dnnl::memory;
using Clock = std::chrono::steady_clock;

std::vector<int64_t> parse_list(const char* s) {
  std::vector<int64_t> v;
  std::string t(s);
  size_t pos = 0;
  while (pos < t.size()) {
    const size_t end = std::min(t.find(',', pos), t.size());
    v.push_back(std::stoll(t.substr(pos, end - pos)));
    pos = end + 1;
  }
  return v;
}

struct Case {
  std::string name;
  std::function<void()> run;
  std::string impl;
  double best = 1e30;
};

// --cpu-time: process CPU seconds (all threads) instead of wall seconds: on a machine shared with
// other jobs the work of a call, not the scheduler's share (with --threads 1: single-thread time).
bool g_cpu_time = false;
double now_seconds() {
  if (g_cpu_time) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  }
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

double time_once(const std::function<void()>& f, double min_seconds) {
  f();  // warm
  double best = 1e30, total = 0;
  int reps = 0;
  while (total < min_seconds || reps < 2) {
    const double t0 = now_seconds();
    f();
    const double s = now_seconds() - t0;
    best = std::min(best, s);
    total += s;
    ++reps;
  }
  return best;
}

// Relative L2 distance between two outputs (a check that both compute the same product).
double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    e += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    n += double(b[i]) * b[i];
  }
  return std::sqrt(e / std::max(n, 1e-30));
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> tokens = {64, 512, 4096};
  int rounds = 3, threads = 2;
  double min_seconds = 0.3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--tokens" && i + 1 < argc) tokens = parse_list(argv[++i]);
    else if (a == "--rounds" && i + 1 < argc) rounds = std::atoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--min-seconds" && i + 1 < argc) min_seconds = std::atof(argv[++i]);
    else if (a == "--cpu-time") g_cpu_time = true;
    else {
      std::fprintf(stderr, "usage: bench_onednn [--tokens N,...] [--rounds R] [--threads T] [--min-seconds S] [--cpu-time]\n");
      return 2;
    }
  }
  kernels::set_num_threads(threads);
  omp_set_num_threads(threads);
  const dnnl::version_t* v = dnnl_version();
  std::printf("oneDNN %d.%d.%d (cpu runtime %s), ours: %s, %d threads, best of %d interleaved rounds, %s seconds\n",
              v->major, v->minor, v->patch, DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP ? "OpenMP" : "other",
              kernels::gemm_path(), threads, rounds, g_cpu_time ? "process CPU" : "wall");
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  using dt = memory::data_type;
  using tag = memory::format_tag;

  struct Shape {
    int64_t in, out;
  };
  for (const Shape s : {Shape{2048, 11008}, Shape{11008, 2048}}) {
    const auto& w = lq::bench::weights(s.in, s.out);
    for (int64_t n : tokens) {
      std::vector<float> x(size_t(n * s.in));
      std::mt19937 rng(5);
      std::normal_distribution<float> nd(0.0f, 1.0f);
      for (auto& e : x) e = nd(rng);
      std::vector<uint16_t> xb(x.size());
      lq::num::f32_to_bf16(x.data(), xb.data(), x.size());
      std::vector<float> y_ours_f32(size_t(n * s.out)), y_ours_bf16(y_ours_f32.size()), y_d1(y_ours_f32.size()),
          y_d2(y_ours_f32.size()), y_d3(y_ours_f32.size());

      const kernels::DenseMatrix mf{kernels::WeightType::F32, s.out, s.in, w.f32.data()};
      const kernels::DenseMatrix mb{kernels::WeightType::BF16, s.out, s.in, w.bf16.data()};
      const memory::dims src_dims = {n, s.in}, wei_dims = {s.in, s.out}, dst_dims = {n, s.out};

      // dnnl f32, weights as stored ([out, in] row-major = (K, N) with tag ba).
      memory::desc src_f32(src_dims, dt::f32, tag::ab), wei_stored(wei_dims, dt::f32, tag::ba),
          dst_md(dst_dims, dt::f32, tag::ab);
      dnnl::matmul::primitive_desc pd1(dnnl::matmul::desc(src_f32, wei_stored, dst_md), eng);
      dnnl::matmul mm1(pd1);
      memory src_m(src_f32, eng, x.data()), wei_m1(wei_stored, eng, const_cast<float*>(w.f32.data())),
          dst_m1(dst_md, eng, y_d1.data());

      // dnnl f32, weights reordered into the primitive's preferred layout.
      memory::desc wei_any(wei_dims, dt::f32, tag::any);
      dnnl::matmul::primitive_desc pd2(dnnl::matmul::desc(src_f32, wei_any, dst_md), eng);
      dnnl::matmul mm2(pd2);
      memory wei_m2(pd2.weights_desc(), eng);
      dnnl::reorder(wei_m1, wei_m2).execute(strm, wei_m1, wei_m2);
      memory dst_m2(dst_md, eng, y_d2.data());

      // dnnl bf16 x bf16 -> f32, weights reordered once (oneDNN 2.x has no implementation without
      // AVX-512 BF16 / AMX on some builds: then the case is reported as missing).
      memory::desc src_bf16(src_dims, dt::bf16, tag::ab), wei_bf16_any(wei_dims, dt::bf16, tag::any),
          wei_bf16_stored(wei_dims, dt::bf16, tag::ba);
      std::unique_ptr<dnnl::matmul::primitive_desc> pd3;
      std::unique_ptr<dnnl::matmul> mm3;
      memory wei_m3, src_mb, dst_m3;
      try {
        pd3 = std::make_unique<dnnl::matmul::primitive_desc>(dnnl::matmul::desc(src_bf16, wei_bf16_any, dst_md), eng);
        mm3 = std::make_unique<dnnl::matmul>(*pd3);
        memory wei_b_stored(wei_bf16_stored, eng, const_cast<uint16_t*>(w.bf16.data()));
        wei_m3 = memory(pd3->weights_desc(), eng);
        dnnl::reorder(wei_b_stored, wei_m3).execute(strm, wei_b_stored, wei_m3);
        src_mb = memory(src_bf16, eng, xb.data());
        dst_m3 = memory(dst_md, eng, y_d3.data());
      } catch (const dnnl::error& e) {
        pd3.reset();
      }
      strm.wait();

      std::vector<Case> cases;
      cases.push_back({"ours f32", [&] { kernels::linear_gemm(x.data(), n, mf, nullptr, y_ours_f32.data()); }, "packed 6x16"});
      cases.push_back({"ours bf16", [&] { kernels::linear_gemm(x.data(), n, mb, nullptr, y_ours_bf16.data()); }, "packed 6x16"});
      cases.push_back({"dnnl f32 (W as stored)",
                       [&] {
                         mm1.execute(strm, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, wei_m1}, {DNNL_ARG_DST, dst_m1}});
                         strm.wait();
                       },
                       pd1.impl_info_str()});
      cases.push_back({"dnnl f32 (W reordered)",
                       [&] {
                         mm2.execute(strm, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, wei_m2}, {DNNL_ARG_DST, dst_m2}});
                         strm.wait();
                       },
                       pd2.impl_info_str()});
      const bool slow_bf16 = pd3 && std::string(pd3->impl_info_str()).find("ref") != std::string::npos && n > 512;
      if (pd3 && !slow_bf16)
        cases.push_back({"dnnl bf16 (x, W bf16)",
                         [&] {
                           mm3->execute(strm, {{DNNL_ARG_SRC, src_mb}, {DNNL_ARG_WEIGHTS, wei_m3}, {DNNL_ARG_DST, dst_m3}});
                           strm.wait();
                         },
                         pd3->impl_info_str()});
      for (int r = 0; r < rounds; ++r)
        for (Case& c : cases) c.best = std::min(c.best, time_once(c.run, min_seconds));
      const double flops = 2.0 * double(n) * double(s.in) * double(s.out);
      const double ours_bf16 = cases[1].best;
      std::printf("\n%lld->%lld, %lld tokens\n", (long long)s.in, (long long)s.out, (long long)n);
      std::printf("  %-24s %10s %9s %12s  %s\n", "case", "ms/call", "GFLOP/s", "vs ours bf16", "implementation");
      for (const Case& c : cases)
        std::printf("  %-24s %10.2f %9.1f %11.2fx  %s\n", c.name.c_str(), c.best * 1e3, flops / c.best / 1e9,
                    ours_bf16 / c.best, c.impl.c_str());
      if (!pd3) std::printf("  dnnl bf16: no bf16 x bf16 matmul implementation for this CPU in this oneDNN\n");
      if (slow_bf16) std::printf("  dnnl bf16 skipped above 512 tokens: reference implementation (%s)\n", pd3->impl_info_str());
      std::printf("  agreement (rel. L2 vs ours f32): dnnl f32 stored %.1e, reordered %.1e, ours bf16 %.1e%s\n",
                  rel_l2(y_d1, y_ours_f32), rel_l2(y_d2, y_ours_f32), rel_l2(y_ours_bf16, y_ours_f32),
                  slow_bf16 || !pd3 ? "" : (", dnnl bf16 " + std::to_string(rel_l2(y_d3, y_ours_f32))).c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}
