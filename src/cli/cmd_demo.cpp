// `lance-quant demo`: the whole toolkit in one command on the default model. Quantizes it with
// rtn-int4, awq-int4 and nvfp4 (AWQ on real activations of the shipped calibration data, both
// paths), evaluates each against the original on the held-out evaluation data, and prints a
// comparison table with the path of each full report. Runs the `quantize` and `eval` subcommands
// in-process, so it does exactly what a user typing them would.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "eval/locate.h"
#include "io/error.h"
#include "model/synth.h"
#include "pipeline/bit_plan.h"

namespace lq::cli {

namespace {

namespace fs = std::filesystem;

void usage(FILE* out) {
  std::fprintf(out,
               "usage: lance-quant demo [--model DIR] [--out DIR] [--schemes a,b,c] [--threads N]\n"
               "  --model DIR     model to quantize (default: lance-mini from ../shared when present, else a\n"
               "                  synthetic `small` checkpoint written under --out; random weights, so its\n"
               "                  numbers only exercise the pipeline)\n"
               "  --out DIR       work directory (default lance-quant-demo): quantized models and reports\n"
               "  --schemes LIST  default rtn-int4,awq-int4,nvfp4; SCHEME:gN sets the INT4 group size\n"
               "                  (e.g. rtn-int4:g64,legacy-awq:g64,awq-int4:g64), SCHEME:bpwB a mixed-precision\n"
               "                  budget (quantize --bpw B, e.g. awq-gptq-int4:bpw4.5), SCHEME:noseq quantize\n"
               "                  --no-sequential; legacy-awq and awq-proxy run `calibrate` first (same inputs)\n"
               "  --quick         smaller calibration / evaluation budget\n"
               "  --calib-t2i FILE  t2i calibration captions (default data/calib's)\n"
               "  --eval-text FILE  evaluation text instead of data/eval/text.txt (repeatable; e.g. lance-mini's\n"
               "                  held-out val_tinystories.txt / val_brown.txt)\n"
               "  --max-t2i N     t2i evaluation prompts per scheme (default 4; the final-latent error of\n"
               "                  one prompt varies a lot, so compare schemes on 16 or more)\n");
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b <= s.size()) {
    const size_t e = std::min(s.find(',', b), s.size());
    if (e > b) out.push_back(s.substr(b, e - b));
    b = e + 1;
  }
  return out;
}

// Runs a subcommand in-process; a non-zero status stops the demo naming the step.
void run_step(const char* name, int (*cmd)(const Args&), const Args& args) {
  std::string line = std::string("lance-quant ") + name;
  for (const auto& a : args) line += " " + a;
  std::printf("\n$ %s\n", line.c_str());
  std::fflush(stdout);
  if (const int rc = cmd(args); rc != 0) fail(std::string("demo: ") + name, "failed with status " + std::to_string(rc));
}

std::vector<std::string> split_colons(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  for (;;) {
    const size_t e = s.find(':', b);
    out.push_back(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) return out;
    b = e + 1;
  }
}

std::string default_model(const fs::path& out) {
  if (std::string mini = eval::find_lance_mini(); !mini.empty()) return mini;
  const fs::path dir = out / "model-small";
  if (!fs::exists(dir / "model.safetensors")) {
    std::printf("lance-mini (../shared) not found: writing a synthetic `small` checkpoint to %s\n", dir.string().c_str());
    model::SynthOptions s;
    s.preset = "small";
    s.out_dir = dir.string();
    s.force = true;
    model::synthesize(s);
  }
  return dir.string();
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) fail(p.string(), "cannot open");
  return nlohmann::json::parse(in);
}

std::string num(const nlohmann::json& v, const char* fmt) {
  if (!v.is_number()) return "-";
  char b[32];
  std::snprintf(b, sizeof b, fmt, v.get<double>());
  return b;
}

uint64_t dir_bytes(const fs::path& dir) {
  uint64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}

// One entry of --schemes: "SCHEME" with optional ":gN" (INT4 group size N), ":bpwB" (quantize --bpw B)
// and ":noseq" (quantize --no-sequential) suffixes.
struct DemoScheme {
  std::string text, scheme, group, bpw;
  bool no_sequential = false;
  std::string dir_name() const {
    std::string d = scheme;
    if (!group.empty()) d += "-g" + group;
    if (!bpw.empty()) d += "-bpw" + bpw;
    if (no_sequential) d += "-noseq";
    return d;
  }
  bool needs_stats() const { return scheme == "legacy-awq" || scheme == "awq-proxy"; }
};

DemoScheme parse_demo_scheme(const std::string& text) {
  DemoScheme d{text, text, "", ""};
  const std::vector<std::string> parts = split_colons(text);
  d.scheme = parts.front();
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p.size() >= 2 && p[0] == 'g' && p.find_first_not_of("0123456789", 1) == std::string::npos) d.group = p.substr(1);
    else if (p.size() > 3 && p.compare(0, 3, "bpw") == 0 && p.find_first_not_of("0123456789.", 3) == std::string::npos)
      d.bpw = p.substr(3);
    else if (p == "noseq") d.no_sequential = true;
    else fail("demo --schemes " + text, "expected SCHEME[:gN][:bpwB][:noseq] (e.g. awq-int4:g64, awq-gptq-int4:bpw4.5)");
  }
  return d;
}

// Mean per-linear output error of one path (report.json layers.linears), or null.
nlohmann::json mean_linear_error(const nlohmann::json& report, const std::string& path) {
  if (!report.contains("layers")) return nullptr;
  double sum = 0;
  int n = 0;
  for (const auto& l : report["layers"].value("linears", nlohmann::json::array()))
    if (l.value("path", "") == path && l["rel_error"].is_number()) sum += l["rel_error"].get<double>(), ++n;
  return n ? nlohmann::json(sum / n) : nlohmann::json();
}

}  // namespace

int cmd_demo(const Args& args) {
  std::string model, out = "lance-quant-demo", schemes = "rtn-int4,awq-int4,nvfp4", threads;
  std::string calib_t2i;
  std::vector<std::string> eval_texts;
  std::string max_t2i;
  bool quick = false;
  ArgReader r(args, "demo");
  while (r.next()) {
    if (r.is("--help") || r.is("-h")) {
      usage(stdout);
      return 0;
    } else if (r.is("--model")) model = r.value();
    else if (r.is("--out")) out = r.value();
    else if (r.is("--schemes")) schemes = r.value();
    else if (r.is("--threads")) threads = r.value();
    else if (r.is("--quick")) quick = true;
    else if (r.is("--calib-t2i")) calib_t2i = r.value();
    else if (r.is("--eval-text")) eval_texts.push_back(r.value());
    else if (r.is("--max-t2i")) max_t2i = r.value();
    else r.unknown();
  }
  std::vector<DemoScheme> plan;
  for (const auto& t : split_commas(schemes)) plan.push_back(parse_demo_scheme(t));
  const std::string calib = eval::find_data_dir("calib"), evald = eval::find_data_dir("eval");
  if (calib.empty() || evald.empty()) fail("demo", "data/calib and data/eval not found above the executable or here (set LQ_DATA_DIR)");
  fs::create_directories(out);
  if (model.empty()) model = default_model(out);
  const bool toy = fs::exists(fs::path(model) / "lance_config.json") &&
                   read_json(fs::path(model) / "lance_config.json").contains("toy_vae");
  const std::string t2i_calib = !calib_t2i.empty() ? calib_t2i : calib + (toy ? "/t2i_toy_prompts.txt" : "/t2i_prompts.txt");
  std::vector<std::string> common;
  if (!threads.empty()) common = {"--threads", threads};
  // The same calibration inputs and budget for every method (AWQ reads them itself; the statistics
  // schemes get them through `calibrate`).
  const Args calib_inputs = {"--calib", "text:" + calib + "/text.txt", "--calib", "t2i:" + t2i_calib,
                             "--max-tokens", quick ? "1024" : "4096", "--max-prompts", quick ? "2" : "8"};

  std::string stats;
  for (const auto& d : plan)
    if (d.needs_stats() && stats.empty()) {
      stats = (fs::path(out) / "calib-stats.safetensors").string();
      Args c = {model, "--out", stats, "--force"};
      c.insert(c.end(), calib_inputs.begin(), calib_inputs.end());
      c.insert(c.end(), common.begin(), common.end());
      run_step("calibrate", cmd_calibrate, c);
    }

  struct Row {
    std::string scheme, report;
    nlohmann::json j;
    uint64_t bytes = 0;
    double bpw = 0;
  };
  std::vector<Row> rows;
  for (const auto& d : plan) {
    const fs::path qdir = fs::path(out) / d.dir_name(), rdir = fs::path(out) / ("report-" + d.dir_name());
    Args q = {model, "--scheme", d.scheme, "--out", qdir.string(), "--force"};
    if (!d.group.empty()) q.insert(q.end(), {"--group-size", d.group});
    if (!d.bpw.empty()) q.insert(q.end(), {"--bpw", d.bpw});
    if (d.no_sequential) q.push_back("--no-sequential");
    if (d.needs_stats()) q.insert(q.end(), {"--stats", stats});
    else q.insert(q.end(), calib_inputs.begin(), calib_inputs.end());
    q.insert(q.end(), common.begin(), common.end());
    run_step("quantize", cmd_quantize, q);
    Args e = {model, qdir.string(), "--out", rdir.string(), "--force", "--data-dir", evald, "--max-text-tokens",
              quick ? "1024" : "4096", "--max-chat", quick ? "4" : "12", "--max-t2i",
              !max_t2i.empty() ? max_t2i : quick ? "2" : "4"};
    if (quick) e.insert(e.end(), {"--steps", "10"});
    for (const auto& t : eval_texts) e.insert(e.end(), {"--text", t});
    e.insert(e.end(), common.begin(), common.end());
    run_step("eval", cmd_eval, e);
    rows.push_back({d.text, (rdir / "report.md").string(), read_json(rdir / "report.json"), dir_bytes(qdir),
                    pipeline::target_bits_per_weight(qdir.string(), model)});
  }

  // bpw: bits per weight of the target linears as --bpw counts them (pipeline/bit_plan.h);
  // ppl: held-out perplexity of the quantized model (delta vs the original); KL / top-1 vs the original's
  // next-token distribution; lin und / gen: mean per-linear output error of each path on held-out
  // probes (original basis); latent error / PSNR: final latents of the full CFG sampler from the same noise.
  std::printf("\nmodel: %s (%.1f MB)\n\n", model.c_str(), double(dir_bytes(model)) / 1e6);
  std::printf("%-20s %6s %6s %9s %7s %8s %7s %9s %8s %8s %8s %7s  %s\n", "scheme", "MB", "bpw", "ppl", "dppl %", "KL mean",
              "top-1", "chat sim", "lin und", "lin gen", "lat err", "PSNR", "report");
  for (const auto& row : rows) {
    const auto& u = row.j.value("und", nlohmann::json::object());
    const auto& g = row.j.value("gen", nlohmann::json::object());
    const auto chat = u.value("chat", nlohmann::json::object());
    nlohmann::json dppl;
    if (u.value("base_perplexity", nlohmann::json()).is_number() && u.value("quant_perplexity", nlohmann::json()).is_number())
      dppl = 100.0 * (u["quant_perplexity"].get<double>() / u["base_perplexity"].get<double>() - 1.0);
    std::printf("%-20s %6.1f %6.4f %9s %7s %8s %6s%% %9s %8s %8s %8s %7s  %s\n", row.scheme.c_str(), double(row.bytes) / 1e6, row.bpw,
                num(u.value("quant_perplexity", nlohmann::json()), "%.2f").c_str(), num(dppl, "%+.3f").c_str(),
                num(u.value("kl_mean", nlohmann::json()), "%.5f").c_str(),
                num(u.contains("top1_agreement") ? nlohmann::json(100 * u["top1_agreement"].get<double>()) : nlohmann::json(), "%.1f").c_str(),
                num(chat.value("levenshtein_similarity", nlohmann::json()), "%.3f").c_str(),
                num(mean_linear_error(row.j, "und"), "%.4f").c_str(), num(mean_linear_error(row.j, "gen"), "%.4f").c_str(),
                num(g.value("latent_rel_error", nlohmann::json()), "%.4f").c_str(),
                num(g.value("latent_psnr_db", nlohmann::json()), "%.2f").c_str(), row.report.c_str());
  }
  if (!rows.empty() && rows.front().j.contains("und"))
    std::printf("\nbase perplexity %.3f\n", rows.front().j["und"].value("base_perplexity", 0.0));
  return 0;
}

}  // namespace lq::cli
