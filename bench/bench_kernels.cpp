// Dense linear kernel throughput on Lance shapes, f32 and bf16 weights, batch 1..64, next to two
// machine probes measured in the same run:
//   stream_read  - AVX2 sum over a 1 GiB buffer on all kernel threads: achievable DRAM read bandwidth
//   fma_peak     - register-only FMA loop on all kernel threads: achievable f32 FLOP rate
// Each linear benchmark reports weight GB/s (weight bytes streamed per second), GFLOP/s
// (2*n*in*out per second) and their fractions of the probes (bw_frac, flop_frac).
//
//   build-x/bench_kernels [--benchmark_filter=linear] [--benchmark_min_time=0.2]
//   LQ_BENCH_THREADS=1 build-x/bench_kernels   one thread, rates from CPU time (robust on a busy machine)
//
// With several threads rates use wall time; with one thread they use the thread's CPU time, so
// other processes competing for the cores do not distort per-core numbers.
#if __has_include(<benchmark/benchmark.h>)
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "bench_weights.h"
#include "kernels/linear.h"
#include "num/formats.h"

namespace {

namespace kernels = lq::kernels;
using kernels::DenseMatrix;
using kernels::WeightType;

double g_stream_gbps = 0;  // set by ProbeReporter from BM_stream_read (registered first)
double g_peak_gflops = 0;  // set by ProbeReporter from BM_fma_peak

__attribute__((target("avx2"))) float sum_avx2(const float* p, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
  }
  float out[8];
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}

void BM_stream_read(benchmark::State& state) {
  const int64_t n = int64_t(1) << 28;  // 1 GiB of f32, far beyond the 32 MiB L3
  std::vector<float> buf(size_t(n), 1.0f);
  std::vector<float> partial(64);
  for (auto _ : state) {
    kernels::parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
      partial[size_t(b >> 22) % 64] = sum_avx2(buf.data() + b, e - b);
    });
    benchmark::DoNotOptimize(partial.data());
  }
  const double bytes = double(state.iterations()) * double(n) * 4;
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(std::to_string(kernels::num_threads()) + " threads");
}

__attribute__((target("avx2,fma"))) float fma_loop(int64_t iters) {
  // 10 independent chains hide the 4-cycle FMA latency at 2 FMAs per cycle.
  __m256 acc[10];
  for (int j = 0; j < 10; ++j) acc[j] = _mm256_set1_ps(float(j));
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(0.001f);
  for (int64_t i = 0; i < iters; ++i)
    for (int j = 0; j < 10; ++j) acc[j] = _mm256_fmadd_ps(acc[j], a, b);
  float s = 0;
  for (int j = 0; j < 10; ++j) s += _mm256_cvtss_f32(acc[j]);
  return s;
}

void BM_fma_peak(benchmark::State& state) {
  const int threads = kernels::num_threads();
  const int64_t iters = 1 << 22;
  std::vector<float> sink(static_cast<size_t>(threads));
  for (auto _ : state) {
    kernels::parallel_for(threads, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) sink[size_t(t)] = fma_loop(iters);
    });
    benchmark::DoNotOptimize(sink.data());
  }
  const double flops = double(state.iterations()) * threads * double(iters) * 10 * 16;
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(std::to_string(threads) + " threads");
}

using lq::bench::Weights;
using lq::bench::weights;

// Args: in, out, tokens, weight type (0 = f32, 1 = bf16).
void BM_linear(benchmark::State& state) {
  const int64_t in = state.range(0), out = state.range(1), n = state.range(2);
  const bool bf16 = state.range(3) == 1;
  const Weights& w = weights(in, out);
  const DenseMatrix m{bf16 ? WeightType::BF16 : WeightType::F32, out, in,
                      bf16 ? static_cast<const void*>(w.bf16.data())
                           : static_cast<const void*>(w.f32.data())};
  std::vector<float> x(size_t(n * in), 0.5f), y(size_t(n * out)), bias(size_t(out), 0.1f);
  for (auto _ : state) {
    kernels::linear(x.data(), n, m, bias.data(), y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double it = double(state.iterations());
  const double wbytes = double(in * out) * (bf16 ? 2 : 4);
  const double flops = 2.0 * double(n * in * out);
  using C = benchmark::Counter;
  state.counters["W_GB/s"] = C(it * wbytes / 1e9, C::kIsRate);
  state.counters["GFLOP/s"] = C(it * flops / 1e9, C::kIsRate);
  // Fractions of the probes: rate / probe, expressed as kIsRate counters scaled by 1/probe.
  if (g_stream_gbps > 0) state.counters["bw_frac"] = C(it * wbytes / 1e9 / g_stream_gbps, C::kIsRate);
  if (g_peak_gflops > 0) state.counters["flop_frac"] = C(it * flops / 1e9 / g_peak_gflops, C::kIsRate);
  state.SetLabel(std::string(bf16 ? "bf16" : "f32") + " " + std::to_string(in) + "->" +
                 std::to_string(out) + " n=" + std::to_string(n));
}

void lance_shapes(benchmark::internal::Benchmark* b) {
  const int64_t shapes[][2] = {{2048, 2048}, {2048, 256}, {2048, 11008}, {11008, 2048}};
  for (auto [in, out] : shapes)
    for (int64_t type : {0, 1})
      for (int64_t n : {1, 4, 16, 64}) b->Args({in, out, n, type});
}

// Records a probe's measured rate for the fraction counters of later benchmarks.
class ProbeReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs) {
      if (r.run_type != Run::RT_Iteration) continue;
      const std::string name = r.benchmark_name();
      if (name.rfind("BM_stream_read", 0) == 0) g_stream_gbps = r.counters.at("GB/s").value;
      if (name.rfind("BM_fma_peak", 0) == 0) g_peak_gflops = r.counters.at("GFLOP/s").value;
    }
  }
};

bool g_wall_time = true;

void timing(benchmark::internal::Benchmark* b) {
  if (g_wall_time) b->UseRealTime();
  b->Unit(benchmark::kMillisecond);
}

void register_benchmarks() {
  benchmark::RegisterBenchmark("BM_stream_read", BM_stream_read)->Apply(timing);
  benchmark::RegisterBenchmark("BM_fma_peak", BM_fma_peak)->Apply(timing);
  benchmark::RegisterBenchmark("BM_linear", BM_linear)->Apply(lance_shapes)->Apply(timing);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (const char* t = std::getenv("LQ_BENCH_THREADS")) kernels::set_num_threads(std::atoi(t));
  g_wall_time = kernels::num_threads() > 1;
  register_benchmarks();
  std::printf("linear SIMD path: %s, threads: %d, rates from %s time\n", kernels::simd_path(),
              kernels::num_threads(), g_wall_time ? "wall" : "CPU");
  ProbeReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}

#else
#include <cstdio>
int main() {
  std::fprintf(stderr, "bench_kernels: built without Google Benchmark (libbenchmark-dev)\n");
  return 1;
}
#endif
