// `lance-quant bench kernels`: the linear kernels on Lance's projection shapes (f32, bf16, INT4 g64,
// INT4 g128, NVFP4; batch 1..64), next to the machine's streaming read bandwidth.
//
// Every measurement cycles through enough copies of the weight that the working set (by default 4x the
// largest last-level cache the machine reports, at least 1 GiB: kernels/cpu_caches.h) is far larger
// than the caches, so batch-1 numbers are DRAM numbers, not cache numbers.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/bench_kernels.h"
#include "kernels/cpu_caches.h"
#include "kernels/linear.h"
#include "kernels/parallel.h"
#include "kernels/q4.h"
#include "num/formats.h"

namespace lq::cli {

namespace {

using Clock = std::chrono::steady_clock;

struct Shape {
  int64_t in, out;
};

struct Options {
  bool json = false;
  int64_t working_set_mb = 0;  // 0: from the reported cache sizes
  double min_seconds = 0.15;  // per measurement
  std::vector<Shape> shapes = {{2048, 2048}, {2048, 256}, {2048, 11008}, {11008, 2048}};
  std::vector<int64_t> batches = {1, 2, 4, 8, 16, 32, 64};
  std::string kernels;  // comma-separated kind names; empty: all
  int rounds = 3;       // every measurement repeated, interleaved with the others; the best is kept
  std::vector<std::string> gemm_paths;  // --gemm-paths: each kernel on each GEMM path (empty: the current one)
  bool cpu_time = false;                // --cpu-time: process CPU seconds instead of wall seconds
};

// Wall or process CPU time (all threads). On a machine shared with other jobs a process may get a
// small fraction of the cores: CPU time then measures the work of a call where wall time measures
// the scheduler (with --threads 1 it is the call's single-thread time).
bool g_cpu_time = false;
double now_seconds() {
  if (g_cpu_time) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  }
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

// "a,b,c" -> integers (each positive), naming the flag in errors.
std::vector<int64_t> parse_list(const std::string& text, const std::string& flag) {
  std::vector<int64_t> v;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t end = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, end - pos);
    size_t used = 0;
    int64_t x = 0;
    try {
      x = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || x < 1)
      fail("bench kernels " + flag, "expected positive integers separated by commas, got '" + text + "'");
    v.push_back(x);
    pos = end + 1;
  }
  return v;
}

// "2048x11008,11008x2048" (in x out) -> shapes.
std::vector<Shape> parse_shapes(std::string text) {
  for (char& c : text)
    if (c == 'x') c = ',';
  const std::vector<int64_t> v = parse_list(text, "--shapes");
  if (v.size() % 2 != 0) fail("bench kernels --shapes", "expected IN x OUT pairs such as 2048x11008");
  std::vector<Shape> shapes;
  for (size_t k = 0; k < v.size(); k += 2) {
    if (v[k] % 16 != 0) fail("bench kernels --shapes", "in_features must be a multiple of 16");
    shapes.push_back({v[k], v[k + 1]});
  }
  return shapes;
}

// 32-byte vector loads of [p, p + n) summed into four accumulators, read as `streams` equal
// sub-ranges in lockstep (one 128-byte step of each per iteration), optionally with a software
// prefetch `ahead` bytes in front of each stream. One sequential stream per core leaves the read
// bandwidth to the hardware prefetcher's depth; several streams and prefetches (what the kernels
// do: rows side by side) reach more of what the memory system delivers.
__attribute__((target("avx2"))) uint64_t read_words(const uint64_t* p, size_t n, int streams, size_t ahead) {
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  constexpr size_t kStep = 16;  // uint64 per 128-byte step
  const size_t per = n / size_t(streams) / kStep * kStep;
  for (size_t i = 0; i < per; i += kStep)
    for (int s = 0; s < streams; ++s) {
      const uint64_t* q = p + size_t(s) * per + i;
      if (ahead) _mm_prefetch(reinterpret_cast<const char*>(q) + ahead, _MM_HINT_T0);
      a = _mm256_add_epi64(a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)));
      b = _mm256_add_epi64(b, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 4)));
      c = _mm256_add_epi64(c, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 8)));
      d = _mm256_add_epi64(d, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 12)));
    }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d)));
  uint64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (size_t i = per * size_t(streams); i < n; ++i) sum += p[i];
  return sum;
}

// The machine's read bandwidth (bytes/s): all kernel threads reading disjoint ranges of `buf`, the
// best pass over the reading patterns (1, 2 and 8 streams; 8 streams with a prefetch 1 KiB ahead),
// i.e. the most this loop gets out of the memory system.
double read_bandwidth(const std::vector<uint64_t>& buf) {
  const size_t n = buf.size(), bytes = n * sizeof(uint64_t);
  volatile uint64_t sink = 0;
  double best = 0.0;
  struct Pattern {
    int streams;
    size_t ahead;
  };
  for (const Pattern pat : {Pattern{1, 0}, Pattern{2, 0}, Pattern{8, 0}, Pattern{8, 1024}})
    for (int pass = 0; pass < 2; ++pass) {
      std::vector<uint64_t> partial(size_t(kernels::num_threads()) + 1, 0);
      const auto t0 = Clock::now();
      kernels::parallel_for(int64_t(n), 4096, [&](int64_t b, int64_t e) {
        partial[size_t(b * int64_t(partial.size() - 1) / int64_t(n))] +=
            read_words(buf.data() + b, size_t(e - b), pat.streams, pat.ahead);
      });
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      for (uint64_t v : partial) sink = sink + v;
      best = std::max(best, double(bytes) / s);
    }
  return best;
}

enum class Kind { F32, BF16, Int4G64, Int4G128, NvFp4 };
const char* kind_name(Kind k) {
  switch (k) {
    case Kind::F32: return "f32";
    case Kind::BF16: return "bf16";
    case Kind::Int4G64: return "int4-g64";
    case Kind::Int4G128: return "int4-g128";
    case Kind::NvFp4: return "nvfp4";
  }
  return "?";
}

// One weight of a kind, replicated `copies` times so the cycle does not fit the caches.
struct Weights {
  Kind kind;
  std::string gemm;  // GEMM path this entry runs on ("" = the current one)
  std::vector<std::vector<uint8_t>> dense;   // f32 / bf16 bytes per copy
  std::vector<kernels::Q4Matrix> q4;         // per copy
  int64_t rows = 0, cols = 0;
  uint64_t bytes = 0;                        // per application
  size_t copies() const { return kind == Kind::F32 || kind == Kind::BF16 ? dense.size() : q4.size(); }
  void apply(size_t c, const float* x, int64_t n, float* y) const {
    if (kind == Kind::F32 || kind == Kind::BF16) {
      kernels::DenseMatrix m{kind == Kind::F32 ? kernels::WeightType::F32 : kernels::WeightType::BF16, rows, cols,
                             dense[c].data()};
      kernels::linear(x, n, m, nullptr, y);
    } else {
      kernels::q4_linear(x, n, q4[c], nullptr, y);
    }
  }
};

Weights make_weights(Kind kind, Shape s, int64_t working_set_bytes, std::mt19937& rng) {
  Weights w{kind, "", {}, {}, s.out, s.in, 0};
  const size_t numel = size_t(s.out * s.in);
  if (kind == Kind::F32 || kind == Kind::BF16) {
    std::vector<float> f(numel);
    std::normal_distribution<float> nd(0.0f, 0.02f);
    for (auto& v : f) v = nd(rng);
    std::vector<uint8_t> bytes(numel * (kind == Kind::F32 ? 4 : 2));
    if (kind == Kind::F32)
      std::copy(f.begin(), f.end(), reinterpret_cast<float*>(bytes.data()));
    else
      num::f32_to_bf16(f.data(), reinterpret_cast<uint16_t*>(bytes.data()), numel);
    w.bytes = bytes.size();
    const size_t copies = size_t(std::max<int64_t>(1, working_set_bytes / int64_t(w.bytes) + 1));
    w.dense.assign(copies, bytes);
    return w;
  }
  std::vector<uint8_t> codes(numel);
  for (auto& q : codes) q = uint8_t(rng() % 16);
  kernels::Q4Matrix m;
  if (kind == Kind::NvFp4) {
    std::vector<uint8_t> bs(numel / 16);
    for (auto& b : bs) b = uint8_t(0x30 + rng() % 32);
    m = kernels::pack_nvfp4(s.out, s.in, codes.data(), bs.data(), 1e-3f);
  } else {
    const int64_t g = kind == Kind::Int4G64 ? 64 : 128;
    std::vector<float> sc(numel / size_t(g), num::bf16_to_f32(num::f32_to_bf16(0.01f)));  // bf16, as files store
    std::vector<uint8_t> z(numel / size_t(g));
    for (auto& v : z) v = uint8_t(rng() % 16);
    m = kernels::pack_int4(s.out, s.in, g, codes.data(), sc.data(), z.data());
  }
  w.bytes = m.weight_bytes();
  const size_t copies = size_t(std::max<int64_t>(1, working_set_bytes / int64_t(w.bytes) + 1));
  w.q4.assign(copies, m);
  return w;
}

// Seconds per call. Up to kCycleMaxTokens tokens (memory-bound): repeated cycles over the copies until
// min_seconds, then the best cycle's mean. Beyond (compute-bound: a call reuses each weight for every
// token and takes far longer than reading it): calls in turn over the copies until min_seconds and at
// least 3 calls, the best call.
constexpr int64_t kCycleMaxTokens = 32;

double time_per_call(const Weights& w, const float* x, int64_t n, float* y, double min_seconds) {
  if (!w.gemm.empty()) kernels::set_gemm_path(w.gemm);
  if (n > kCycleMaxTokens) {
    w.apply(0, x, n, y);  // warm up
    double best = 1e30, total = 0.0;
    for (size_t call = 0; total < min_seconds || call < 3; ++call) {
      const double t0 = now_seconds();
      w.apply(call % w.copies(), x, n, y);
      const double s = now_seconds() - t0;
      best = std::min(best, s);
      total += s;
    }
    return best;
  }
  for (size_t c = 0; c < w.copies(); ++c) w.apply(c, x, n, y);  // warm up (page faults, pool)
  double best = 1e30, total = 0.0;
  int cycles = 0;
  while (total < min_seconds || cycles < 3) {
    const double t0 = now_seconds();
    for (size_t c = 0; c < w.copies(); ++c) w.apply(c, x, n, y);
    const double s = now_seconds() - t0;
    best = std::min(best, s / double(w.copies()));
    total += s;
    ++cycles;
  }
  return best;
}

void usage(FILE* out) {
  std::fprintf(out,
               "usage: lance-quant bench kernels [--json] [--working-set-mb N] [--min-seconds S] [--rounds N]\n"
               "                                 [--shapes INxOUT,...] [--batches N,...] [--threads N]\n"
               "                                 [--kernels f32,bf16,int4-g64,int4-g128,nvfp4] [--int8-max-tokens N]\n"
               "                                 [--gemm-paths avx2,avx512,amx,...] [--cpu-time]\n"
               "  times f32, bf16, int4 g64, int4 g128 and nvfp4 linears on Lance's shapes (2048->2048,\n"
               "  2048->256, 2048->11008, 11008->2048) at batch 1..64; weights cycle through a working set of\n"
               "  N MiB per kernel (default: 4x the last-level cache the machine reports in sysfs or CPUID,\n"
               "  at least 1024) so they come from memory; reports bytes/s against a streaming-read probe\n"
               "  and each 4-bit kernel's speed-up over bf16. Every number is the best of --rounds (default 3)\n"
               "  interleaved rounds (probe, then every kernel), so drift on a shared machine hits all alike.\n"
               "  Above 32 tokens (compute-bound) a number is the best single call, calls rotating over the copies.\n"
               "  --gemm-paths runs every kernel on each listed GEMM path (kernels::gemm_path(): the dense GEMM and\n"
               "  the 4-bit kernels above --int8-max-tokens), interleaved; vs-bf16 is then against bf16 on the\n"
               "  first listed path. --cpu-time: process CPU seconds (all threads) instead of wall seconds, for\n"
               "  machines shared with other jobs (with --threads 1: each call's single-thread time).\n");
}

}  // namespace

int bench_kernels(const Args& args) {
  Options o;
  ArgReader r(args, "bench kernels");
  while (r.next()) {
    if (r.is("--json")) o.json = true;
    else if (r.is("--working-set-mb")) o.working_set_mb = r.int_value();
    else if (r.is("--min-seconds")) o.min_seconds = r.double_value();
    else if (r.is("--rounds")) o.rounds = int(r.int_value());
    else if (r.is("--shapes")) o.shapes = parse_shapes(r.value());
    else if (r.is("--batches")) o.batches = parse_list(r.value(), "--batches");
    else if (r.is("--kernels")) o.kernels = r.value();
    else if (r.is("--int8-max-tokens")) kernels::set_q4_int8_max_tokens(r.int_value());
    else if (r.is("--cpu-time")) o.cpu_time = true;
    else if (r.is("--gemm-paths")) {
      const std::string list = r.value();
      for (size_t b = 0; b <= list.size();) {
        const size_t e = std::min(list.find(',', b), list.size());
        if (e > b) {
          kernels::set_gemm_path(list.substr(b, e - b));  // checks the name and that this CPU runs it
          o.gemm_paths.push_back(list.substr(b, e - b));
        }
        b = e + 1;
      }
      kernels::set_gemm_path("");
    }
    else if (r.is("--threads")) kernels::set_num_threads(int(parse_list(r.value(), "--threads").at(0)));
    else if (r.is("-h") || r.is("--help")) { usage(stdout); return 0; }
    else r.unknown();
  }
  const kernels::LastLevelCache llc = kernels::last_level_cache();
  const bool ws_default = o.working_set_mb == 0;
  if (ws_default) o.working_set_mb = int64_t(kernels::streaming_working_set_bytes(llc.bytes) >> 20);
  if (o.working_set_mb < 1) fail("bench kernels --working-set-mb", "must be at least 1");
  if (o.rounds < 1) fail("bench kernels --rounds", "must be at least 1");
  g_cpu_time = o.cpu_time;
  const std::vector<uint64_t> probe_buf(size_t(std::max<int64_t>(o.working_set_mb, 256) << 20) / sizeof(uint64_t), 1);
  double bw = 0.0;
  const std::vector<Shape>& shapes = o.shapes;
  const std::vector<int64_t>& batches = o.batches;
  const int64_t max_batch = *std::max_element(batches.begin(), batches.end());
  std::vector<Kind> kinds;
  const std::string wanted = "," + o.kernels + ",";
  for (Kind k : {Kind::F32, Kind::BF16, Kind::Int4G64, Kind::Int4G128, Kind::NvFp4}) {
    const std::string name = std::string(",") + kind_name(k) + ",";
    if (o.kernels.empty() || wanted.find(name) != std::string::npos) kinds.push_back(k);
  }
  if (kinds.empty()) fail("bench kernels --kernels", "no known kernel in '" + o.kernels + "'");
  std::mt19937 rng(1234);
  // Per shape: `rounds` rounds of (read probe, then every batch x kernel), best time of each kept.
  // On a shared machine the memory bandwidth a process gets drifts by tens of percent from one
  // second to the next; interleaving puts the probe and the kernels it is compared with under the
  // same conditions, and best-of-rounds compares each at its least disturbed.
  struct Result {
    Shape shape;
    int64_t batch;
    Kind kind;
    std::string gemm;
    uint64_t bytes;
    double seconds;
  };
  std::vector<Result> results;
  for (const Shape& s : shapes) {
    std::vector<Weights> ws;
    for (Kind k : kinds) {
      Weights w = make_weights(k, s, o.working_set_mb << 20, rng);
      if (o.gemm_paths.empty()) {
        ws.push_back(std::move(w));
        continue;
      }
      for (const std::string& p : o.gemm_paths) {
        ws.push_back(w);
        ws.back().gemm = p;
      }
    }
    std::vector<float> x(size_t(max_batch * s.in)), y(size_t(max_batch * s.out));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& v : x) v = nd(rng);
    const size_t first = results.size();
    for (int64_t n : batches)
      for (const Weights& w : ws) results.push_back({s, n, w.kind, w.gemm, w.bytes, 1e30});
    for (int round = 0; round < o.rounds; ++round) {
      bw = std::max(bw, read_bandwidth(probe_buf));
      size_t k = first;
      for (int64_t n : batches)
        for (const Weights& w : ws) {
          results[k].seconds = std::min(results[k].seconds, time_per_call(w, x.data(), n, y.data(), o.min_seconds));
          ++k;
        }
    }
  }
  nlohmann::json rows = nlohmann::json::array();
  if (!o.json) {
    if (o.cpu_time) std::printf("times are process CPU seconds (--cpu-time), not wall time\n");
    std::printf("threads %d, dense %s, GEMM %s, 4-bit %s (int8 activations up to %lld tokens), read bandwidth %.2f GB/s\n"
                "last-level cache as reported: %s; each kernel cycles through copies of its weight totalling >= %lld MiB\n"
                "(%s), so weights come from DRAM; best of %d interleaved rounds for every number, the bandwidth probe included\n",
                kernels::num_threads(), kernels::simd_path(), kernels::gemm_path(), kernels::q4_simd_path(),
                (long long)kernels::q4_int8_max_tokens(), bw / 1e9, llc.description.c_str(), (long long)o.working_set_mb,
                ws_default ? "4x the largest, at least 1 GiB" : "--working-set-mb", o.rounds);
    std::printf("%-13s %5s %-16s %11s %9s %8s %8s %8s\n", "shape", "batch", "kernel", "us/call", "GB/s", "of-bw",
                "GFLOP/s", "vs-bf16");
  }
  // vs-bf16: against the bf16 row of the same shape and batch (on the first listed GEMM path).
  auto bf16_time = [&](const Result& r) {
    for (const Result& b : results)
      if (b.kind == Kind::BF16 && b.batch == r.batch && b.shape.in == r.shape.in && b.shape.out == r.shape.out &&
          (o.gemm_paths.empty() || b.gemm == o.gemm_paths.front()))
        return b.seconds;
    return 0.0;
  };
  for (const Result& r : results) {
    const double t = r.seconds;
    const double bf16_s = bf16_time(r);
    const double gbs = double(r.bytes) / t / 1e9;
    const double gflops = 2.0 * double(r.batch * r.shape.in * r.shape.out) / t / 1e9;
    const double vs_bf16 = bf16_s > 0.0 ? bf16_s / t : 0.0;
    const std::string shape = std::to_string(r.shape.in) + "->" + std::to_string(r.shape.out);
    const std::string name = std::string(kind_name(r.kind)) + (r.gemm.empty() ? "" : "@" + r.gemm);
    if (o.json) {
      rows.push_back({{"in", r.shape.in}, {"out", r.shape.out}, {"batch", r.batch}, {"kernel", kind_name(r.kind)},
                      {"gemm_path", r.gemm.empty() ? std::string(kernels::gemm_path()) : r.gemm},
                      {"seconds_per_call", t}, {"weight_bytes", r.bytes}, {"gb_per_s", gbs},
                      {"fraction_of_read_bandwidth", gbs * 1e9 / bw}, {"gflops", gflops},
                      {"speedup_vs_bf16", vs_bf16}});
    } else {
      char ratio[32] = "";
      const bool is_ref = r.kind == Kind::BF16 && (o.gemm_paths.empty() || r.gemm == o.gemm_paths.front());
      if (r.kind != Kind::F32 && !is_ref && vs_bf16 > 0.0) std::snprintf(ratio, sizeof ratio, "%.2fx", vs_bf16);
      std::printf("%-13s %5lld %-16s %11.1f %9.2f %7.0f%% %8.1f %8s\n", shape.c_str(), (long long)r.batch,
                  name.c_str(), t * 1e6, gbs, 100.0 * gbs * 1e9 / bw, gflops, ratio);
    }
  }
  if (o.json) {
    nlohmann::json j = {{"threads", kernels::num_threads()}, {"dense_simd", kernels::simd_path()},
                        {"gemm", kernels::gemm_path()},
                        {"q4_simd", kernels::q4_simd_path()}, {"read_bandwidth_gb_per_s", bw / 1e9},
                        {"working_set_mb", o.working_set_mb}, {"last_level_cache_bytes", llc.bytes},
                        {"caches_read", llc.description}, {"rounds", o.rounds}, {"rows", rows}};
    std::printf("%s\n", j.dump(2).c_str());
  }
  return 0;
}

}  // namespace lq::cli
