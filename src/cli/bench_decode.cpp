// `lance-quant bench decode BASE QUANT`: end-to-end greedy decode of a full-precision model and its
// quantized checkpoint in one invocation. Each model runs in its own forked child, so each one's
// resident memory (peak VmHWM, and RssAnon / RssFile at the end, from /proc/self/status) is its
// own; the child reports its numbers to the parent through a pipe as one JSON object.
//
// Decode tokens/s counts the und path's linears, attention over the cache and lm_head; the time of
// the lm_head (logits) call is reported separately, since a quantized model keeps it in bf16
// (a kept tensor of the checkpoint) and it is read every token.
#include "cli/bench_decode.h"

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/bench_common.h"
#include "forward/forward.h"
#include "forward/text.h"
#include "io/error.h"
#include "kernels/parallel.h"
#include "kernels/q4.h"

namespace lq::cli {

namespace {

using bench::Clock;
using bench::seconds;

struct Options {
  std::string base, quant;
  int64_t prompt_tokens = 16, decode_tokens = 16;
  int layers = -1;
  bool json = false;
  std::vector<fwd::HeadFormat> quant_heads = {fwd::HeadFormat::Stored};  // one quantized run per entry
};

const char* head_name(fwd::HeadFormat h) { return h == fwd::HeadFormat::Int4 ? "int4" : "stored"; }

void usage(FILE* out) {
  std::fprintf(out,
               "usage: lance-quant bench decode BASE_DIR QUANT_DIR [--prompt-tokens N] [--decode-tokens N]\n"
               "                                [--layers L] [--threads N] [--quant-head stored,int4] [--json]\n\n"
               "Greedy decode (und path, KV cache, lm_head) of a full-precision model (bf16 weights) and a\n"
               "quantized checkpoint, each in its own child process: decode tokens/s, their ratio, the lm_head's\n"
               "share of decode time, and resident memory (peak and at the end; anonymous vs file-backed)\n"
               "against the checkpoint's size on disk. --layers L loads only the first L decoder layers.\n"
               "--quant-head: the quantized model's lm_head as stored (bf16) and / or quantized at load to INT4\n"
               "(run --head int4); one quantized run per entry, all in this invocation.\n");
}

// kB fields of /proc/self/status, in bytes.
nlohmann::json memory_status() {
  nlohmann::json j;
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    for (const char* key : {"VmHWM", "VmRSS", "RssAnon", "RssFile"})
      if (line.rfind(std::string(key) + ":", 0) == 0) j[key] = std::stoull(line.substr(line.find(':') + 1)) * 1024;
  return j;
}

uint64_t directory_bytes(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file()) total += e.file_size();
  return total;
}

// Loads `dir`, prefills, decodes; runs in the child.
nlohmann::json measure(const std::string& dir, const Options& o, fwd::HeadFormat head) {
  const auto t_load = Clock::now();
  fwd::LoadOptions lo;
  lo.storage = fwd::WeightStorage::BF16;
  lo.num_layers = o.layers;
  lo.head = head;
  const fwd::Engine e = fwd::Engine::load(dir, lo);
  const double load_s = seconds(t_load, Clock::now());
  const auto& c = e.config();
  const std::vector<int32_t> ids = bench::synthetic_prompt_ids(c, o.prompt_tokens);
  fwd::KvCache cache;
  const int64_t N = o.prompt_tokens;
  const auto t0 = Clock::now();
  auto normed = bench::feed_text(e, ids, 0, cache);
  auto logits = e.logits(normed.data() + (N - 1) * c.hidden_size, 1);
  const double prefill_s = seconds(t0, Clock::now());
  double decode_s = 0.0, head_s = 0.0;
  std::vector<int32_t> generated;
  for (int64_t d = 0; d < o.decode_tokens; ++d) {
    const int32_t next = fwd::argmax_masked(logits.data(), int64_t(logits.size()), c.len_tokenizer);
    generated.push_back(next);
    const auto a = Clock::now();
    normed = bench::feed_text(e, {next}, N + d, cache);
    const auto b = Clock::now();
    logits = e.logits(normed.data(), 1);
    const auto z = Clock::now();
    decode_s += seconds(a, z);
    head_s += seconds(b, z);
  }
  nlohmann::json j = {{"dir", dir},
                      {"head", head_name(head)},
                      {"disk_bytes", directory_bytes(dir)},
                      {"layers", e.num_layers()},
                      {"layer_weight_bytes", e.layer_weight_bytes()},
                      {"load_s", load_s},
                      {"prefill_tokens", N},
                      {"prefill_tokens_per_s", double(N) / prefill_s},
                      {"decode_tokens", o.decode_tokens},
                      {"decode_tokens_per_s", o.decode_tokens > 0 ? double(o.decode_tokens) / decode_s : 0.0},
                      {"lm_head_share_of_decode", decode_s > 0 ? head_s / decode_s : 0.0},
                      {"generated", generated},
                      {"memory", memory_status()}};
  return j;
}

// Runs measure(dir) in a forked child and returns its JSON (throws naming dir on failure).
nlohmann::json measure_in_child(const std::string& dir, const Options& o, fwd::HeadFormat head) {
  int fds[2];
  if (pipe(fds) != 0) fail("bench decode", "pipe() failed");
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) fail("bench decode", "fork() failed");
  if (pid == 0) {
    close(fds[0]);
    std::string out;
    int code = 0;
    try {
      out = measure(dir, o, head).dump();
    } catch (const std::exception& ex) {
      out = nlohmann::json{{"error", ex.what()}}.dump();
      code = 1;
    }
    for (size_t done = 0; done < out.size();) {
      const ssize_t n = write(fds[1], out.data() + done, out.size() - done);
      if (n <= 0) break;
      done += size_t(n);
    }
    close(fds[1]);
    _exit(code);
  }
  close(fds[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) text.append(buf, size_t(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (text.empty()) fail(dir, "the benchmark child died without a result (out of memory?)");
  nlohmann::json j = nlohmann::json::parse(text);
  if (j.contains("error")) fail("bench decode", j["error"].get<std::string>());
  return j;
}

}  // namespace

int bench_decode(const Args& args) {
  Options o;
  ArgReader r(args, "bench decode");
  while (r.next()) {
    if (r.is("-h") || r.is("--help")) {
      usage(stdout);
      return 0;
    } else if (r.is("--prompt-tokens")) o.prompt_tokens = r.int_value();
    else if (r.is("--decode-tokens")) o.decode_tokens = r.int_value();
    else if (r.is("--layers")) o.layers = int(r.int_value());
    else if (r.is("--threads")) kernels::set_num_threads(int(r.int_value()));
    else if (r.is("--json")) o.json = true;
    else if (r.is("--quant-head")) {
      o.quant_heads.clear();
      std::string list = r.value() + ",";
      for (size_t b = 0, e; (e = list.find(',', b)) != std::string::npos; b = e + 1)
        if (e > b) o.quant_heads.push_back(fwd::parse_head_format(list.substr(b, e - b)));
      if (o.quant_heads.empty()) fail("bench decode --quant-head", "expected stored, int4 or stored,int4");
    }
    else if (r.positional() && o.base.empty()) o.base = r.current();
    else if (r.positional() && o.quant.empty()) o.quant = r.current();
    else r.unknown();
  }
  if (o.base.empty() || o.quant.empty()) fail("bench decode", "needs BASE_DIR and QUANT_DIR (see --help)");
  if (o.prompt_tokens < 1 || o.decode_tokens < 1) fail("bench decode", "--prompt-tokens and --decode-tokens must be >= 1");
  if (o.layers == 0 || o.layers < -1) fail("bench decode --layers", "must be >= 1");
  const nlohmann::json base = measure_in_child(o.base, o, fwd::HeadFormat::Stored);
  std::vector<nlohmann::json> quants;
  for (fwd::HeadFormat h : o.quant_heads) quants.push_back(measure_in_child(o.quant, o, h));
  auto ratio_of = [&](const nlohmann::json& q) {
    return q["decode_tokens_per_s"].get<double>() / base["decode_tokens_per_s"].get<double>();
  };
  if (o.json) {
    nlohmann::json runs = nlohmann::json::array();
    for (const auto& q : quants) {
      nlohmann::json r = q;
      r["decode_speedup"] = ratio_of(q);
      runs.push_back(r);
    }
    std::printf("%s\n", nlohmann::json{{"threads", kernels::num_threads()},
                                       {"q4_int8_max_tokens", kernels::q4_int8_max_tokens()},
                                       {"base", base},
                                       {"quantized", runs.at(0)},
                                       {"quantized_runs", runs},
                                       {"decode_speedup", ratio_of(quants.at(0))}}
                            .dump(2)
                            .c_str());
    return 0;
  }
  std::printf("threads %d; prompt %lld tokens, %lld decode steps; each model in its own process\n",
              kernels::num_threads(), (long long)o.prompt_tokens, (long long)o.decode_tokens);
  std::printf("%-16s %7s %10s %10s %10s %9s %9s %9s %9s %9s\n", "model", "layers", "disk-GB", "linears-GB", "decode/s",
              "prefill/s", "head-%", "peak-GB", "anon-GB", "file-GB");
  auto row = [](const std::string& name, const nlohmann::json& m) {
    const auto& mem = m["memory"];
    std::printf("%-16s %7d %10.2f %10.2f %10.2f %9.2f %8.1f%% %9.2f %9.2f %9.2f\n", name.c_str(), m["layers"].get<int>(),
                m["disk_bytes"].get<double>() / 1e9, m["layer_weight_bytes"].get<double>() / 1e9,
                m["decode_tokens_per_s"].get<double>(), m["prefill_tokens_per_s"].get<double>(),
                100.0 * m["lm_head_share_of_decode"].get<double>(), mem.value("VmHWM", 0.0) / 1e9,
                mem.value("RssAnon", 0.0) / 1e9, mem.value("RssFile", 0.0) / 1e9);
  };
  row("base", base);
  for (const auto& q : quants) row(std::string("quantized/") + q["head"].get<std::string>() + "-head", q);
  std::printf("linears-GB: every loaded layer's linears, und and gen paths (text decode reads the und half);\n"
              "head-%%: lm_head's share of decode time; peak = VmHWM, anon / file = RssAnon / RssFile at the end\n");
  for (const auto& q : quants)
    std::printf("decode speed-up of the quantized model (%s lm_head): %.2fx; same greedy tokens as base: %s\n",
                q["head"].get<std::string>().c_str(), ratio_of(q), base["generated"] == q["generated"] ? "yes" : "no");
  return 0;
}

}  // namespace lq::cli
