// Bulk f32 <-> bf16 / f16 conversion throughput against memcpy, at a memory-bound size (256 MiB of
// f32) and a cache-resident one (128 KiB). Single thread (the bulk converters are single-threaded),
// timed by thread CPU time. After the Google Benchmark table a summary prints each conversion's
// time relative to memcpy of the same number of f32 values (the f32 side's bytes).
//
//   build-x/bench_convert [--benchmark_filter=...] [--benchmark_repetitions=5]
// (with repetitions the summary uses each benchmark's fastest repetition)
//
// Counters: src_GB/s = source bytes per second; moved_GB/s = (source + destination bytes) per second.
#if __has_include(<benchmark/benchmark.h>)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "num/formats.h"

namespace {

namespace num = lq::num;

constexpr size_t kLargeFloats = size_t(256) << 20 >> 2;  // 256 MiB of f32
constexpr size_t kSmallFloats = size_t(128) << 10 >> 2;  // 128 KiB of f32

const std::vector<float>& source_floats(size_t n) {
  static std::map<size_t, std::vector<float>> cache;
  auto& v = cache[n];
  if (v.empty()) {
    v.resize(n);
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& f : v) f = normal(rng);
  }
  return v;
}

void set_counters(benchmark::State& state, size_t src_bytes, size_t dst_bytes) {
  const double iters = double(state.iterations());
  state.counters["src_GB/s"] =
      benchmark::Counter(iters * double(src_bytes) / 1e9, benchmark::Counter::kIsRate);
  state.counters["moved_GB/s"] = benchmark::Counter(iters * double(src_bytes + dst_bytes) / 1e9,
                                                    benchmark::Counter::kIsRate);
}

void BM_memcpy(benchmark::State& state) {
  const size_t n = size_t(state.range(0));
  const auto& src = source_floats(n);
  std::vector<float> dst(n, 1.0f);  // touched: no page faults in the timed loop
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), n * 4);
    benchmark::ClobberMemory();
  }
  set_counters(state, n * 4, n * 4);
}

template <void (*Convert)(const float*, uint16_t*, size_t)>
void BM_from_f32(benchmark::State& state) {
  const size_t n = size_t(state.range(0));
  const auto& src = source_floats(n);
  std::vector<uint16_t> dst(n, 1);
  for (auto _ : state) {
    Convert(src.data(), dst.data(), n);
    benchmark::ClobberMemory();
  }
  set_counters(state, n * 4, n * 2);
}

template <void (*Convert)(const uint16_t*, float*, size_t)>
void BM_to_f32(benchmark::State& state) {
  const size_t n = size_t(state.range(0));
  std::vector<uint16_t> src(n);
  num::f32_to_bf16(source_floats(n).data(), src.data(), n);
  std::vector<float> dst(n, 1.0f);
  for (auto _ : state) {
    Convert(src.data(), dst.data(), n);
    benchmark::ClobberMemory();
  }
  set_counters(state, n * 2, n * 4);
}

void sizes(benchmark::internal::Benchmark* b) {
  // CPU time of the (single) benchmark thread: robust when other processes share the cores.
  b->Arg(int64_t(kSmallFloats))->Arg(int64_t(kLargeFloats))->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_memcpy)->Apply(sizes);
BENCHMARK(BM_from_f32<num::f32_to_bf16>)->Name("f32_to_bf16")->Apply(sizes);
BENCHMARK(BM_from_f32<num::scalar::f32_to_bf16>)->Name("f32_to_bf16_scalar")->Apply(sizes);
BENCHMARK(BM_to_f32<num::bf16_to_f32>)->Name("bf16_to_f32")->Apply(sizes);
BENCHMARK(BM_from_f32<num::f32_to_f16>)->Name("f32_to_f16")->Apply(sizes);
BENCHMARK(BM_from_f32<num::scalar::f32_to_f16>)->Name("f32_to_f16_scalar")->Apply(sizes);
BENCHMARK(BM_to_f32<num::f16_to_f32>)->Name("f16_to_f32")->Apply(sizes);

// Console output plus a record of each run's time per iteration, for the memcpy ratio summary.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs) {
      if (r.run_type != Run::RT_Iteration || r.iterations == 0) continue;
      const std::string name = r.benchmark_name();  // "<conversion>/<element count>"
      const size_t slash = name.find('/');
      if (slash == std::string::npos) continue;
      const Result result{name.substr(0, slash), std::strtoll(name.c_str() + slash + 1, nullptr, 10),
                          r.cpu_accumulated_time / double(r.iterations)};
      // With --benchmark_repetitions keep the fastest repetition (least disturbed by other load).
      auto same = std::find_if(results_.begin(), results_.end(), [&](const Result& x) {
        return x.conversion == result.conversion && x.elements == result.elements;
      });
      if (same == results_.end()) results_.push_back(result);
      else same->seconds = std::min(same->seconds, result.seconds);
    }
  }
  void print_summary() const {
    std::printf("\nRelative to memcpy of the same f32 bytes (single thread, CPU time, path %s):\n",
                num::convert_simd_path());
    std::printf("%-20s %10s %12s %10s %14s\n", "benchmark", "elements", "time (us)", "src GB/s",
                "time / memcpy");
    for (const Result& r : results_) {
      const Result* base = nullptr;
      for (const Result& b : results_)
        if (b.conversion == "BM_memcpy" && b.elements == r.elements) base = &b;
      if (!base) continue;
      const bool from_16bit = r.conversion.rfind("bf16_to", 0) == 0 || r.conversion.rfind("f16_to", 0) == 0;
      const double src_bytes = double(r.elements) * (from_16bit ? 2 : 4);
      std::printf("%-20s %10lld %12.1f %10.2f %14.2f\n", r.conversion.c_str(), r.elements,
                  r.seconds * 1e6, src_bytes / r.seconds / 1e9, r.seconds / base->seconds);
    }
  }

 private:
  struct Result {
    std::string conversion;
    long long elements;
    double seconds;  // CPU time per iteration
  };
  std::vector<Result> results_;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.print_summary();
  benchmark::Shutdown();
  return 0;
}

#else
#include <cstdio>
int main() {
  std::fprintf(stderr, "bench_convert: built without Google Benchmark (libbenchmark-dev)\n");
  return 1;
}
#endif
