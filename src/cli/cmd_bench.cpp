// `lance-quant bench SUBCOMMAND`: measurements that take too long for tests. One table row per
// subcommand; `forward` measures the native forward (prefill and KV-cache decode throughput) next to
// the machine's streaming memory-read bandwidth.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/bench_common.h"
#include "cli/bench_decode.h"
#include "cli/bench_kernels.h"
#include "cli/commands.h"
#include "forward/forward.h"
#include "forward/t2i.h"
#include "forward/text.h"
#include "io/error.h"
#include "kernels/linear.h"
#include "kernels/parallel.h"
#include "kernels/q4.h"

namespace lq::cli {

namespace {

fwd::LoadOptions load_options(fwd::WeightStorage storage, int layers) {
  fwd::LoadOptions lo;
  lo.storage = storage;
  lo.num_layers = layers;
  return lo;
}

using bench::Clock;
using bench::seconds;

// ---- memory bandwidth probe -------------------------------------------------------------------

// Sum of the 64-bit words in [p, p + n) (the reads are the point; the sum keeps them alive).
uint64_t sum_words_scalar(const uint64_t* p, size_t n) {
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a0 += p[i];
    a1 += p[i + 1];
    a2 += p[i + 2];
    a3 += p[i + 3];
  }
  for (; i < n; ++i) a0 += p[i];
  return a0 + a1 + a2 + a3;
}

// 256-bit loads, 128 bytes per iteration: few instructions per byte, so the probe stays
// memory-bound even when the cores are shared (as in the forward's AVX2 kernels).
__attribute__((target("avx2"))) uint64_t sum_words_avx2(const uint64_t* p, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                     _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + sum_words_scalar(p + i, n - i);
}

// Best-of-`passes` streaming read bandwidth (bytes/s) over a buffer far larger than the caches,
// read by all kernel threads in disjoint contiguous ranges.
double measure_read_bandwidth(size_t bytes, int passes) {
  const size_t n = bytes / sizeof(uint64_t);
  std::vector<uint64_t> buf(n);
  kernels::parallel_for(int64_t(n), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) buf[i] = uint64_t(i);
  });
  const auto sum_words = __builtin_cpu_supports("avx2") ? sum_words_avx2 : sum_words_scalar;
  double best = 0;
  volatile uint64_t sink = 0;
  for (int p = 0; p < passes; ++p) {
    const int chunks = kernels::num_threads();
    std::vector<uint64_t> partial(size_t(chunks) * 8, 0);  // one cache line per chunk
    const auto t0 = Clock::now();
    kernels::parallel_for(chunks, [&](int64_t cb, int64_t ce) {
      for (int64_t c = cb; c < ce; ++c) {
        const size_t lo = n * size_t(c) / size_t(chunks), hi = n * size_t(c + 1) / size_t(chunks);
        partial[size_t(c) * 8] = sum_words(buf.data() + lo, hi - lo);
      }
    });
    const double s = seconds(t0, Clock::now());
    uint64_t total = 0;
    for (size_t c = 0; c < size_t(chunks); ++c) total += partial[c * 8];
    sink = sink + total;
    best = std::max(best, double(n * sizeof(uint64_t)) / s);
  }
  return best;
}

// ---- bench forward ----------------------------------------------------------------------------

void forward_usage(FILE* out) {
  std::fprintf(out,
               "usage: lance-quant bench forward MODEL [--task text|t2i] [--dtype f32|bf16] [--prompt-tokens N]\n"
               "                                 [--decode-tokens N] [--grid TxHxW] [--steps N] [--layers N]\n"
               "                                 [--threads N] [--probe-mb MB] [--json]\n\n"
               "--task text (default): prefill of N prompt tokens (und path, one chunk, KV cache written) and D\n"
               "greedy decode steps (one token each from the cache, lm_head included). Reports tokens/s, implied\n"
               "FLOP/s and weight bytes/s, and the streaming memory-read bandwidth of this machine for comparison.\n"
               "--task t2i: denoising steps of the text-to-image sampler at a latent grid (default 1x32x32): both\n"
               "CFG branches' prefixes prefilled once (synthetic token ids: speed does not depend on them), then\n"
               "each step evaluates the cond and the uncond velocity (two forwards of the grid's latents plus\n"
               "<|vision_start|> / <|vision_end|>, gen path). Reports seconds per step (best and mean of --steps,\n"
               "default 2) and GFLOP/s. MODEL may be a quantized checkpoint (its 4-bit kernels run).\n"
               "f32 storage of an F32 checkpoint maps the weights in place (no copy); --layers N loads only\n"
               "the first N decoder layers (e.g. f32 from a BF16 checkpoint in limited RAM).\n");
}

struct ForwardBenchOptions {
  std::string model;
  std::string task = "text";
  fwd::LatentGrid grid{1, 32, 32};
  int steps = 2;
  fwd::WeightStorage storage = fwd::WeightStorage::BF16;
  int64_t prompt_tokens = 128, decode_tokens = 32;
  int layers = -1;
  int probe_mb = 2048;
  bool json = false;
};

ForwardBenchOptions parse_forward(const Args& args) {
  ForwardBenchOptions o;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) fail(a, "needs a value");
      return args[++i];
    };
    auto integer = [&](int64_t lo) {
      const std::string v = value();
      size_t used = 0;
      long long x = 0;
      try {
        x = std::stoll(v, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != v.size() || v.empty() || x < lo) fail(a, "expected an integer >= " + std::to_string(lo) + ", got '" + v + "'");
      return int64_t(x);
    };
    if (a == "--dtype") {
      const std::string v = value();
      if (v == "f32") o.storage = fwd::WeightStorage::F32;
      else if (v == "bf16") o.storage = fwd::WeightStorage::BF16;
      else fail(a, "expected f32 or bf16, got '" + v + "'");
    } else if (a == "--task") {
      o.task = value();
      if (o.task != "text" && o.task != "t2i") fail(a, "expected text or t2i, got '" + o.task + "'");
    } else if (a == "--grid") {
      const std::string v = value();
      int t = 0, h = 0, w = 0;
      char x1 = 0, x2 = 0;
      if (std::sscanf(v.c_str(), "%d%c%d%c%d", &t, &x1, &h, &x2, &w) != 5 || x1 != 'x' || x2 != 'x' || t < 1 || h < 1 || w < 1)
        fail(a, "expected TxHxW such as 1x32x32, got '" + v + "'");
      o.grid = {t, h, w};
    } else if (a == "--steps") o.steps = int(integer(1));
    else if (a == "--prompt-tokens") o.prompt_tokens = integer(1);
    else if (a == "--decode-tokens") o.decode_tokens = integer(0);
    else if (a == "--layers") o.layers = int(integer(1));
    else if (a == "--threads") kernels::set_num_threads(int(integer(1)));
    else if (a == "--probe-mb") o.probe_mb = int(integer(64));
    else if (a == "--json") o.json = true;
    else if (!a.empty() && a[0] == '-') fail(a, "unknown option (see bench forward --help)");
    else if (o.model.empty()) o.model = a;
    else fail(a, "unexpected argument");
  }
  if (o.model.empty()) fail("bench forward", "missing MODEL directory");
  return o;
}

// Multiply-adds of one forward over `rows` rows of the gen path (the latent rows) with `keys` visible
// keys each: the linears of every loaded layer and QK^T + PV.
double gen_forward_flops(const fwd::Engine& e, int64_t rows, int64_t keys) {
  uint64_t params = 0;
  for (int l = 0; l < e.num_layers(); ++l)
    for (auto k : model::kAllLinearKinds) {
      const auto& w = e.linear({l, fwd::Path::Gen, k});
      params += uint64_t(w.in_features() * w.out_features());
    }
  const auto& c = e.config();
  return 2.0 * double(params) * double(rows) + 4.0 * c.num_heads * c.head_dim * e.num_layers() * double(rows) * double(keys);
}

double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

int bench_t2i(const fwd::Engine& e, const ForwardBenchOptions& o, double load_s) {
  const auto& c = e.config();
  fwd::check_latent_grid(o.grid, c);
  const std::vector<int32_t> ids = bench::synthetic_prompt_ids(c, 48);
  const std::vector<int32_t> s1(ids.begin(), ids.begin() + 26), s2(ids.begin() + 26, ids.begin() + 42),
      s3(ids.begin() + 42, ids.end());
  const fwd::T2iPrompt prompt = fwd::build_t2i_prompt(s1, s2, s3, ids[0], ids[1], o.grid);
  const auto t0 = Clock::now();
  fwd::T2iSampler sampler(e, prompt);
  const double prefix_s = seconds(t0, Clock::now());
  const int64_t K = o.grid.tokens();
  const std::vector<float> x = fwd::normal_noise(7, K * c.latent_channels);
  std::vector<double> step_s, step_cpu;
  double checksum = 0.0;
  for (int s = 0; s < o.steps; ++s) {
    const double tau = 1.0 - double(s) / double(o.steps + 1);
    const auto t1 = Clock::now();
    const double c1 = cpu_seconds();
    const std::vector<float> vc = sampler.velocity(true, x.data(), tau), vu = sampler.velocity(false, x.data(), tau);
    const std::vector<float> v = fwd::cfg_combine(vc, vu, 4.0);
    step_s.push_back(seconds(t1, Clock::now()));
    step_cpu.push_back(cpu_seconds() - c1);
    for (float f : v) checksum += double(f);
  }
  const double best = *std::min_element(step_s.begin(), step_s.end());
  double mean = 0.0;
  for (double v : step_s) mean += v / double(step_s.size());
  const int64_t rows = K + 2;
  const double flops = gen_forward_flops(e, rows, int64_t(prompt.cond.prefix_ids.size()) + rows) +
                       gen_forward_flops(e, rows, int64_t(prompt.uncond.prefix_ids.size()) + rows);
  if (o.json) {
    nlohmann::json j = {{"model", o.model},      {"task", "t2i"},
                        {"layers", e.num_layers()}, {"threads", kernels::num_threads()},
                        {"gemm", kernels::gemm_path()}, {"q4", kernels::q4_simd_path()},
                        {"load_s", load_s},      {"grid", {o.grid.t, o.grid.h, o.grid.w}},
                        {"latent_tokens", K},    {"prefix_s", prefix_s},
                        {"steps", o.steps},      {"step_s_best", best},
                        {"step_s_mean", mean},   {"step_gflops", flops / best / 1e9},
                        {"step_cpu_s_best", *std::min_element(step_cpu.begin(), step_cpu.end())},
                        {"checksum", checksum}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model %s: %d/%d layers, %d threads, GEMM %s, 4-bit %s (load %.1f s)\n", o.model.c_str(), e.num_layers(),
              c.num_layers, kernels::num_threads(), kernels::gemm_path(), kernels::q4_simd_path(), load_s);
  std::printf("t2i      grid %dx%dx%d (%lld latent tokens), prefixes %.2f s\n", o.grid.t, o.grid.h, o.grid.w,
              (long long)K, prefix_s);
  std::printf("step     %d CFG steps (cond + uncond): best %.3f s, mean %.3f s, %.1f GFLOP/s (best %.3f CPU s)\n", o.steps,
              best, mean, flops / best / 1e9, *std::min_element(step_cpu.begin(), step_cpu.end()));
  return 0;
}

int bench_forward(const Args& args) {
  for (const auto& a : args)
    if (a == "--help" || a == "-h") {
      forward_usage(stdout);
      return 0;
    }
  const ForwardBenchOptions o = parse_forward(args);
  const auto t_load = Clock::now();
  const fwd::Engine e = fwd::Engine::load(o.model, load_options(o.storage, o.layers));
  const double load_s = seconds(t_load, Clock::now());
  if (o.task == "t2i") return bench_t2i(e, o, load_s);
  const auto& c = e.config();
  if (o.prompt_tokens + o.decode_tokens > c.max_position_embeddings)
    fail("--prompt-tokens", "prompt + decode tokens exceed max_position_embeddings");

  // Text-only work runs the und path: its linears' weights are what each token reads.
  uint64_t und_weight_bytes = 0, und_params = 0;
  for (int l = 0; l < e.num_layers(); ++l)
    for (auto k : model::kAllLinearKinds) {
      const auto& w = e.linear({l, fwd::Path::Und, k});
      und_weight_bytes += w.weight_bytes();
      und_params += uint64_t(w.in_features() * w.out_features());
    }
  const uint64_t elem = o.storage == fwd::WeightStorage::F32 ? 4 : 2;
  const uint64_t head_params = uint64_t(c.vocab_size) * c.hidden_size, head_bytes = head_params * elem;
  // Attention FLOPs per query and visible key per layer: QK^T and PV, 2 FLOPs per MAC.
  const double attn_flops_per_key = 4.0 * c.num_heads * c.head_dim * e.num_layers();

  const std::vector<int32_t> ids = bench::synthetic_prompt_ids(c, o.prompt_tokens);

  // Prefill: one chunk into the cache, logits of the last row.
  fwd::KvCache cache;
  const int64_t N = o.prompt_tokens;
  const auto t0 = Clock::now();
  const double c0 = cpu_seconds();
  auto normed = bench::feed_text(e, ids, 0, cache);
  auto logits = e.logits(normed.data() + (N - 1) * c.hidden_size, 1);
  const double prefill_s = seconds(t0, Clock::now()), prefill_cpu_s = cpu_seconds() - c0;
  const double prefill_flops = 2.0 * double(und_params) * N + 2.0 * double(head_params) +
                               attn_flops_per_key * double(N) * double(N + 1) / 2.0;

  // Decode: one token at a time from the cache.
  const auto t1 = Clock::now();
  double decode_flops = 0;
  for (int64_t d = 0; d < o.decode_tokens; ++d) {
    const int32_t next = fwd::argmax_masked(logits.data(), int64_t(logits.size()), c.len_tokenizer);
    const int64_t pos = N + d;
    normed = bench::feed_text(e, {next}, pos, cache);
    logits = e.logits(normed.data(), 1);
    decode_flops += 2.0 * double(und_params + head_params) + attn_flops_per_key * double(pos + 1);
  }
  const double decode_s = seconds(t1, Clock::now());
  const double decode_bytes = double(und_weight_bytes + head_bytes) * double(o.decode_tokens);

  const double bw = measure_read_bandwidth(size_t(o.probe_mb) << 20, 5);
  const double prefill_tps = double(N) / prefill_s;
  const double decode_tps = o.decode_tokens > 0 ? double(o.decode_tokens) / decode_s : 0;
  const double decode_bps = o.decode_tokens > 0 ? decode_bytes / decode_s : 0;
  if (o.json) {
    nlohmann::json j = {{"model", o.model},
                        {"dtype", o.storage == fwd::WeightStorage::F32 ? "f32" : "bf16"},
                        {"layers", e.num_layers()},
                        {"threads", kernels::num_threads()},
                        {"simd", kernels::simd_path()},
                        {"load_s", load_s},
                        {"prompt_tokens", N},
                        {"prefill_s", prefill_s},
                        {"prefill_cpu_s", prefill_cpu_s},
                        {"prefill_tokens_per_s", prefill_tps},
                        {"prefill_gflops", prefill_flops / prefill_s / 1e9},
                        {"decode_tokens", o.decode_tokens},
                        {"decode_s", decode_s},
                        {"decode_tokens_per_s", decode_tps},
                        {"decode_gflops", o.decode_tokens > 0 ? decode_flops / decode_s / 1e9 : 0.0},
                        {"decode_weight_gb_per_s", decode_bps / 1e9},
                        {"weight_bytes_per_token", und_weight_bytes + head_bytes},
                        {"memory_read_gb_per_s", bw / 1e9}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model %s: %d/%d layers, %s weights, %d threads, %s kernels (load %.1f s)\n", o.model.c_str(),
              e.num_layers(), c.num_layers, o.storage == fwd::WeightStorage::F32 ? "f32" : "bf16",
              kernels::num_threads(), kernels::simd_path(), load_s);
  std::printf("prefill  %6lld tokens  %8.3f s  %9.2f tokens/s  %7.1f GFLOP/s\n", (long long)N, prefill_s, prefill_tps,
              prefill_flops / prefill_s / 1e9);
  if (o.decode_tokens > 0)
    std::printf("decode   %6lld tokens  %8.3f s  %9.2f tokens/s  %7.1f GFLOP/s  %6.2f GB/s of weights (%.2f GB/token)\n",
                (long long)o.decode_tokens, decode_s, decode_tps, decode_flops / decode_s / 1e9, decode_bps / 1e9,
                double(und_weight_bytes + head_bytes) / 1e9);
  std::printf("memory   streaming read bandwidth %.2f GB/s (%d MiB buffer, best of 5)\n", bw / 1e9, o.probe_mb);
  return 0;
}

struct BenchCommand {
  const char* name;
  int (*run)(const Args&);
  const char* summary;
};

// Every bench subcommand, one row each.
const BenchCommand kBenchCommands[] = {
    {"forward", bench_forward, "native forward: prefill / decode tokens/s or t2i denoising steps, FLOP/s, bytes/s"},
    {"kernels", bench_kernels, "linear kernels (f32, bf16, int4 g64/g128, nvfp4) on Lance shapes vs memory bandwidth"},
    {"decode", bench_decode, "decode tokens/s and resident memory of a model and its quantized checkpoint"},
};

void usage(FILE* out) {
  std::fprintf(out, "usage: lance-quant bench SUBCOMMAND [ARGS...]\n\nsubcommands:\n");
  for (const auto& b : kBenchCommands) std::fprintf(out, "  %-10s %s\n", b.name, b.summary);
}

}  // namespace

int cmd_bench(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    usage(args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  for (const auto& b : kBenchCommands)
    if (args[0] == b.name) return b.run(Args(args.begin() + 1, args.end()));
  std::fprintf(stderr, "lance-quant bench: unknown subcommand '%s'\n\n", args[0].c_str());
  usage(stderr);
  return 2;
}

}  // namespace lq::cli
