// `lance-quant bench decode BASE QUANT`: end-to-end greedy decode of a full-precision model and its
// quantized checkpoint in one invocation. Each model runs in its own forked child, so each one's
// resident memory (peak VmHWM, and RssAnon / RssFile at the end, from /proc/self/status) is its
// own; the children stay loaded and run decode rounds in turn (interleaved), reporting through
// pipes as JSON lines.
//
// Decode tokens/s counts the und path's linears, attention over the cache and lm_head; the time of
// the lm_head (logits) call is reported separately, since a quantized model keeps it in bf16
// (a kept tensor of the checkpoint) and it is read every token.
#include "cli/bench_decode.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
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
  int rounds = 3;  // interleaved decode rounds per model; the best is reported (and the median)
  std::vector<fwd::HeadFormat> quant_heads = {fwd::HeadFormat::Stored};  // one quantized run per entry
};

const char* head_name(fwd::HeadFormat h) {
  return h == fwd::HeadFormat::Int4 ? "int4" : h == fwd::HeadFormat::Int8 ? "int8" : "stored";
}

void usage(FILE* out) {
  std::fprintf(out,
               "usage: lance-quant bench decode BASE_DIR QUANT_DIR [--prompt-tokens N] [--decode-tokens N]\n"
               "                                [--layers L] [--threads N] [--quant-head stored,int8,int4] [--rounds R]\n"
               "                                [--json]\n\n"
               "Greedy decode (und path, KV cache, lm_head) of a full-precision model (bf16 weights) and a\n"
               "quantized checkpoint, each in its own child process: decode tokens/s, their ratio, the lm_head's\n"
               "share of decode time, and resident memory (peak and at the end; anonymous vs file-backed)\n"
               "against the checkpoint's size on disk. --layers L loads only the first L decoder layers.\n"
               "--quant-head: the quantized model's lm_head as stored (bf16) and / or quantized at load to INT8 / INT4\n"
               "(run --head int8|int4); one quantized run per entry, all in this invocation.\n"
               "--rounds R (default 3): every model stays loaded in its child and decodes R times, the models\n"
               "taking turns, so drift of the machine's memory bandwidth hits all alike; decode/s is the best\n"
               "round (the median is reported beside it).\n");
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

// One round in the child: a fresh KV cache, the prompt's prefill, greedy decode steps.
nlohmann::json decode_round(const fwd::Engine& e, const Options& o) {
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
  return {{"prefill_tokens_per_s", double(N) / prefill_s},
          {"decode_tokens_per_s", double(o.decode_tokens) / decode_s},
          {"lm_head_share_of_decode", decode_s > 0 ? head_s / decode_s : 0.0},
          {"generated", generated}};
}

// A model loaded in a forked child that runs decode rounds on request, so the models' rounds can
// be interleaved (base, quantized, base, ...: drift of a shared machine's memory bandwidth hits
// every model alike) while each keeps its own resident-memory figures. Protocol, one line each:
// child -> parent JSON (the load report, then one per round, then the memory report);
// parent -> child one byte: 'r' (run a round) or 'q' (report memory and exit).
class ModelChild {
 public:
  ModelChild(const std::string& dir, const Options& o, fwd::HeadFormat head) : dir_(dir) {
    int cmd[2], res[2];
    if (pipe(cmd) != 0 || pipe(res) != 0) fail("bench decode", "pipe() failed");
    std::fflush(nullptr);
    pid_ = fork();
    if (pid_ < 0) fail("bench decode", "fork() failed");
    if (pid_ == 0) {
      close(cmd[1]);
      close(res[0]);
      _exit(serve(dir, o, head, cmd[0], res[1]));
    }
    close(cmd[0]);
    close(res[1]);
    cmd_ = cmd[1];
    res_ = fdopen(res[0], "r");
    report_ = next_line();
  }
  ModelChild(const ModelChild&) = delete;
  ModelChild& operator=(const ModelChild&) = delete;
  ~ModelChild() {
    if (cmd_ >= 0) close(cmd_);
    if (res_) std::fclose(res_);
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }

  nlohmann::json round() { return request('r'); }
  // The memory report; the child exits after it.
  nlohmann::json finish() {
    nlohmann::json m = request('q');
    close(cmd_);
    cmd_ = -1;
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    return m;
  }
  const nlohmann::json& load_report() const { return report_; }

 private:
  static void send_line(int fd, const nlohmann::json& j) {
    const std::string out = j.dump() + "\n";
    for (size_t done = 0; done < out.size();) {
      const ssize_t n = write(fd, out.data() + done, out.size() - done);
      if (n <= 0) return;
      done += size_t(n);
    }
  }

  static int serve(const std::string& dir, const Options& o, fwd::HeadFormat head, int cmd, int res) {
    try {
      const auto t_load = Clock::now();
      fwd::LoadOptions lo;
      lo.storage = fwd::WeightStorage::BF16;
      lo.num_layers = o.layers;
      lo.head = head;
      const fwd::Engine e = fwd::Engine::load(dir, lo);
      send_line(res, {{"dir", dir},
                      {"head", head_name(head)},
                      {"disk_bytes", directory_bytes(dir)},
                      {"layers", e.num_layers()},
                      {"layer_weight_bytes", e.layer_weight_bytes()},
                      {"load_s", seconds(t_load, Clock::now())}});
      for (char c; read(cmd, &c, 1) == 1;) {
        if (c == 'q') break;
        send_line(res, decode_round(e, o));
      }
      send_line(res, {{"memory", memory_status()}});
      return 0;
    } catch (const std::exception& ex) {
      send_line(res, {{"error", ex.what()}});
      return 1;
    }
  }

  nlohmann::json request(char c) {
    if (write(cmd_, &c, 1) != 1) fail(dir_, "the benchmark child is gone (out of memory?)");
    return next_line();
  }

  nlohmann::json next_line() {
    char* line = nullptr;
    size_t cap = 0;
    const ssize_t n = getline(&line, &cap, res_);
    const std::string text = n > 0 ? std::string(line, size_t(n)) : std::string();
    std::free(line);
    if (text.empty()) fail(dir_, "the benchmark child died without a result (out of memory?)");
    nlohmann::json j = nlohmann::json::parse(text);
    if (j.contains("error")) fail("bench decode", j["error"].get<std::string>());
    return j;
  }

  std::string dir_;
  pid_t pid_ = -1;
  int cmd_ = -1;
  FILE* res_ = nullptr;
  nlohmann::json report_;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Loads every model (one child each, one after the other), runs `rounds` interleaved rounds and
// merges each model's load report, rounds and memory into one object: decode_tokens_per_s is the
// best round (as bench kernels keeps the best), with the median and every round alongside.
std::vector<nlohmann::json> measure_interleaved(const std::vector<std::pair<std::string, fwd::HeadFormat>>& models,
                                                const Options& o) {
  std::vector<std::unique_ptr<ModelChild>> children;
  for (const auto& [dir, head] : models) children.push_back(std::make_unique<ModelChild>(dir, o, head));
  std::vector<std::vector<nlohmann::json>> rounds(children.size());
  for (int r = 0; r < o.rounds; ++r)
    for (size_t k = 0; k < children.size(); ++k) rounds[k].push_back(children[k]->round());
  std::vector<nlohmann::json> out;
  for (size_t k = 0; k < children.size(); ++k) {
    nlohmann::json j = children[k]->load_report();
    const nlohmann::json mem = children[k]->finish();
    std::vector<double> speeds;
    size_t best = 0;
    bool same_tokens = true;
    for (size_t r = 0; r < rounds[k].size(); ++r) {
      speeds.push_back(rounds[k][r]["decode_tokens_per_s"].get<double>());
      if (speeds[r] > speeds[best]) best = r;
      same_tokens = same_tokens && rounds[k][r]["generated"] == rounds[k][0]["generated"];
    }
    for (auto& [key, value] : rounds[k][best].items()) j[key] = value;
    double prefill = 0.0;
    for (const auto& r : rounds[k]) prefill = std::max(prefill, r["prefill_tokens_per_s"].get<double>());
    j["prefill_tokens_per_s"] = prefill;
    j["prefill_tokens"] = o.prompt_tokens;
    j["decode_tokens"] = o.decode_tokens;
    j["decode_tokens_per_s_rounds"] = speeds;
    j["decode_tokens_per_s_median"] = median(speeds);
    j["same_tokens_every_round"] = same_tokens;
    j["memory"] = mem["memory"];
    out.push_back(j);
  }
  return out;
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
    else if (r.is("--rounds")) o.rounds = int(r.int_value());
    else if (r.is("--json")) o.json = true;
    else if (r.is("--quant-head")) {
      o.quant_heads.clear();
      std::string list = r.value() + ",";
      for (size_t b = 0, e; (e = list.find(',', b)) != std::string::npos; b = e + 1)
        if (e > b) o.quant_heads.push_back(fwd::parse_head_format(list.substr(b, e - b)));
      if (o.quant_heads.empty()) fail("bench decode --quant-head", "expected a list of stored, int8, int4");
    }
    else if (r.positional() && o.base.empty()) o.base = r.current();
    else if (r.positional() && o.quant.empty()) o.quant = r.current();
    else r.unknown();
  }
  if (o.base.empty() || o.quant.empty()) fail("bench decode", "needs BASE_DIR and QUANT_DIR (see --help)");
  if (o.prompt_tokens < 1 || o.decode_tokens < 1) fail("bench decode", "--prompt-tokens and --decode-tokens must be >= 1");
  if (o.layers == 0 || o.layers < -1) fail("bench decode --layers", "must be >= 1");
  if (o.rounds < 1) fail("bench decode --rounds", "must be >= 1");
  std::vector<std::pair<std::string, fwd::HeadFormat>> models = {{o.base, fwd::HeadFormat::Stored}};
  for (fwd::HeadFormat h : o.quant_heads) models.push_back({o.quant, h});
  std::vector<nlohmann::json> quants = measure_interleaved(models, o);
  const nlohmann::json base = quants.front();
  quants.erase(quants.begin());
  auto median_ratio_of = [&](const nlohmann::json& q) {
    return q["decode_tokens_per_s_median"].get<double>() / base["decode_tokens_per_s_median"].get<double>();
  };
  auto ratio_of = [&](const nlohmann::json& q) {
    return q["decode_tokens_per_s"].get<double>() / base["decode_tokens_per_s"].get<double>();
  };
  if (o.json) {
    nlohmann::json runs = nlohmann::json::array();
    for (const auto& q : quants) {
      nlohmann::json r = q;
      r["decode_speedup"] = ratio_of(q);
      r["decode_speedup_median"] = median_ratio_of(q);
      runs.push_back(r);
    }
    std::printf("%s\n", nlohmann::json{{"threads", kernels::num_threads()},
                                       {"rounds", o.rounds},
                                       {"q4_int8_max_tokens", kernels::q4_int8_max_tokens()},
                                       {"base", base},
                                       {"quantized", runs.at(0)},
                                       {"quantized_runs", runs},
                                       {"decode_speedup", ratio_of(quants.at(0))}}
                            .dump(2)
                            .c_str());
    return 0;
  }
  std::printf("threads %d; prompt %lld tokens, %lld decode steps; each model in its own process; %d interleaved\n"
              "rounds (base, quantized..., base, ...), decode/s the best round (median in brackets)\n",
              kernels::num_threads(), (long long)o.prompt_tokens, (long long)o.decode_tokens, o.rounds);
  std::printf("%-22s %6s %8s %10s %17s %9s %7s %8s %8s %8s\n", "model", "layers", "disk-GB", "linears-GB", "decode/s",
              "prefill/s", "head-%", "peak-GB", "anon-GB", "file-GB");
  auto row = [](const std::string& name, const nlohmann::json& m) {
    const auto& mem = m["memory"];
    std::printf("%-22s %6d %8.2f %10.2f %8.2f (%6.2f) %9.2f %6.1f%% %8.2f %8.2f %8.2f\n", name.c_str(), m["layers"].get<int>(),
                m["disk_bytes"].get<double>() / 1e9, m["layer_weight_bytes"].get<double>() / 1e9,
                m["decode_tokens_per_s"].get<double>(), m["decode_tokens_per_s_median"].get<double>(),
                m["prefill_tokens_per_s"].get<double>(),
                100.0 * m["lm_head_share_of_decode"].get<double>(), mem.value("VmHWM", 0.0) / 1e9,
                mem.value("RssAnon", 0.0) / 1e9, mem.value("RssFile", 0.0) / 1e9);
  };
  row("base", base);
  for (const auto& q : quants) row(std::string("quantized/") + q["head"].get<std::string>() + "-head", q);
  std::printf("linears-GB: every loaded layer's linears, und and gen paths (text decode reads the und half);\n"
              "head-%%: lm_head's share of decode time; peak = VmHWM, anon / file = RssAnon / RssFile at the end\n");
  for (const auto& q : quants)
    std::printf("decode speed-up of the quantized model (%s lm_head): %.2fx best / %.2fx median; same greedy tokens as base: %s\n",
                q["head"].get<std::string>().c_str(), ratio_of(q), median_ratio_of(q),
                base["generated"] == q["generated"] ? "yes" : "no");
  return 0;
}

}  // namespace lq::cli
