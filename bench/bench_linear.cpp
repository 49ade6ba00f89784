// Dense linear kernels side by side on Lance shapes: the dot-product path (linear_dot, the only
// AVX2 algorithm before the packed GEMM existed) vs the packed GEMM (linear_gemm), f32 and bf16
// weights, for decode (n = 1..16) and prefill / calibration / AWQ batches (n = 32..2048). Every case
// runs both algorithms on the same inputs in the same process; after the Google Benchmark output a
// table lists their GFLOP/s (2 n in out / s) and the ratio gemm / dot. linear() uses linear_dot below
// kernels::kGemmMinTokens tokens and linear_gemm from there (the crossover read off this table).
//
//   build-x/bench_linear                               all shapes, n in {1,4,8,16,24,32,64,256,1024,2048}
//   build-x/bench_linear --benchmark_filter='/64/'     one token count (filter on the 3rd argument)
//   LQ_BENCH_THREADS=1 build-x/bench_linear            one thread, rates from CPU time
//
// With several threads rates use wall time (the kernels run on the pool), so other processes on the
// cores lower both columns; compare the ratio. With --benchmark_repetitions=R the table keeps each
// case's fastest repetition (the one least disturbed by other load).
#if __has_include(<benchmark/benchmark.h>)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "bench_weights.h"
#include "kernels/linear.h"
#include "num/formats.h"

namespace {

namespace kernels = lq::kernels;
using kernels::DenseMatrix;
using kernels::WeightType;

using LinearFn = void (*)(const float*, int64_t, const DenseMatrix&, const float*, float*);

struct Algorithm {
  const char* name;
  LinearFn fn;
};
constexpr Algorithm kAlgorithms[] = {{"dot", kernels::linear_dot}, {"gemm", kernels::linear_gemm}};

using lq::bench::Weights;
using lq::bench::weights;

const std::vector<float>& activations(size_t size) {
  static std::vector<float> x;
  if (x.size() < size) {
    x.resize(size);
    std::mt19937 rng(4);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& v : x) v = normal(rng);
  }
  return x;
}

// Args: in, out, tokens, weight type (0 = f32, 1 = bf16), algorithm index into kAlgorithms.
void BM_linear(benchmark::State& state) {
  const int64_t in = state.range(0), out = state.range(1), n = state.range(2);
  const bool bf16 = state.range(3) == 1;
  const Algorithm& algo = kAlgorithms[state.range(4)];
  const Weights& w = weights(in, out);
  const DenseMatrix m{bf16 ? WeightType::BF16 : WeightType::F32, out, in,
                      bf16 ? static_cast<const void*>(w.bf16.data()) : static_cast<const void*>(w.f32.data())};
  const float* x = activations(size_t(n * in)).data();
  std::vector<float> y(size_t(n * out)), bias(size_t(out), 0.1f);
  for (auto _ : state) {
    algo.fn(x, n, m, bias.data(), y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * double(n * in * out);
  state.counters["GFLOP/s"] = benchmark::Counter(double(state.iterations()) * flops / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(std::string(algo.name) + (bf16 ? " bf16 " : " f32 ") + std::to_string(in) + "->" +
                 std::to_string(out) + " n=" + std::to_string(n));
}

constexpr int64_t kShapes[][2] = {{2048, 2048}, {2048, 256}, {2048, 11008}, {11008, 2048}};
constexpr int64_t kTokenCounts[] = {1, 4, 8, 16, 24, 32, 64, 256, 1024, 2048};

void lance_cases(benchmark::internal::Benchmark* b) {
  for (auto [in, out] : kShapes)
    for (int64_t type : {0, 1})
      for (int64_t n : kTokenCounts)
        for (int64_t algo = 0; algo < 2; ++algo) b->Args({in, out, n, type, algo});
}

// Console output as usual, plus each case's rate kept for the side-by-side table.
class TableReporter : public benchmark::ConsoleReporter {
 public:
  using Case = std::tuple<int64_t, int64_t, int64_t, int64_t>;  // in, out, type, n
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs) {
      if (r.run_type != Run::RT_Iteration || r.error_occurred) continue;
      const auto args = parse_args(r.benchmark_name());
      if (args.size() < 5) continue;
      double& best = rates_[{args[0], args[1], args[3], args[2]}][args[4]];
      best = std::max(best, r.counters.at("GFLOP/s").value);
    }
  }
  void print_table() const {
    std::printf("\n%-13s %-5s %6s %12s %12s %8s\n", "shape", "type", "n", "dot GFLOP/s", "gemm GFLOP/s",
                "gemm/dot");
    for (const auto& [c, rate] : rates_) {
      const auto [in, out, type, n] = c;
      const std::string shape = std::to_string(in) + "->" + std::to_string(out);
      const double dot = rate.count(0) ? rate.at(0) : 0, gemm = rate.count(1) ? rate.at(1) : 0;
      std::printf("%-13s %-5s %6lld %12.1f %12.1f %8.2f%s\n", shape.c_str(), type ? "bf16" : "f32",
                  static_cast<long long>(n), dot, gemm, dot > 0 ? gemm / dot : 0.0,
                  n >= kernels::kGemmMinTokens ? "  (linear: gemm)" : "  (linear: dot)");
    }
  }

 private:
  // "BM_linear/2048/256/64/0/1/real_time" -> {2048, 256, 64, 0, 1}
  static std::vector<int64_t> parse_args(const std::string& name) {
    std::vector<int64_t> args;
    size_t pos = name.find('/');
    while (pos != std::string::npos) {
      const size_t next = name.find('/', pos + 1);
      const std::string part = name.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
      if (part.empty() || part.find_first_not_of("0123456789") != std::string::npos) break;
      args.push_back(std::stoll(part));
      pos = next;
    }
    return args;
  }
  std::map<Case, std::map<int64_t, double>> rates_;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (const char* t = std::getenv("LQ_BENCH_THREADS")) kernels::set_num_threads(std::atoi(t));
  const bool wall_time = kernels::num_threads() > 1;
  auto* b = benchmark::RegisterBenchmark("BM_linear", BM_linear)->Apply(lance_cases)->Unit(benchmark::kMillisecond);
  b->MinTime(0.2);
  if (wall_time) b->UseRealTime();
  std::printf("linear SIMD path: %s, threads: %d, rates from %s time\n", kernels::simd_path(),
              kernels::num_threads(), wall_time ? "wall" : "CPU");
  TableReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.print_table();
  benchmark::Shutdown();
  return 0;
}

#else
#include <cstdio>
int main() {
  std::fprintf(stderr, "bench_linear: built without Google Benchmark (libbenchmark-dev)\n");
  return 1;
}
#endif
