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
               "  --schemes LIST  default rtn-int4,awq-int4,nvfp4\n"
               "  --quick         smaller calibration / evaluation budget\n");
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

}  // namespace

int cmd_demo(const Args& args) {
  std::string model, out = "lance-quant-demo", schemes = "rtn-int4,awq-int4,nvfp4", threads;
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
    else r.unknown();
  }
  const std::string calib = eval::find_data_dir("calib"), evald = eval::find_data_dir("eval");
  if (calib.empty() || evald.empty()) fail("demo", "data/calib and data/eval not found above the executable or here (set LQ_DATA_DIR)");
  fs::create_directories(out);
  if (model.empty()) model = default_model(out);
  const bool toy = fs::exists(fs::path(model) / "lance_config.json") &&
                   read_json(fs::path(model) / "lance_config.json").contains("toy_vae");
  const std::string t2i_calib = calib + (toy ? "/t2i_toy_prompts.txt" : "/t2i_prompts.txt");
  std::vector<std::string> common;
  if (!threads.empty()) common = {"--threads", threads};

  struct Row {
    std::string scheme, report;
    nlohmann::json j;
    uint64_t bytes = 0;
  };
  std::vector<Row> rows;
  for (const auto& scheme : split_commas(schemes)) {
    const fs::path qdir = fs::path(out) / scheme, rdir = fs::path(out) / ("report-" + scheme);
    Args q = {model, "--scheme", scheme, "--out", qdir.string(), "--force", "--calib", "text:" + calib + "/text.txt",
              "--calib", "t2i:" + t2i_calib, "--max-tokens", quick ? "1024" : "4096", "--max-prompts", quick ? "2" : "8"};
    q.insert(q.end(), common.begin(), common.end());
    run_step("quantize", cmd_quantize, q);
    Args e = {model, qdir.string(), "--out", rdir.string(), "--data-dir", evald, "--max-text-tokens",
              quick ? "1024" : "4096", "--max-chat", quick ? "4" : "12", "--max-t2i", quick ? "2" : "4"};
    if (quick) e.insert(e.end(), {"--steps", "10"});
    e.insert(e.end(), common.begin(), common.end());
    run_step("eval", cmd_eval, e);
    rows.push_back({scheme, (rdir / "report.md").string(), read_json(rdir / "report.json"), dir_bytes(qdir)});
  }

  std::printf("\nmodel: %s (%.1f MB)\n\n", model.c_str(), double(dir_bytes(model)) / 1e6);
  std::printf("%-10s %9s %9s %9s %8s %9s %10s %9s %8s  %s\n", "scheme", "MB", "ppl base", "ppl quant", "KL mean",
              "top-1", "chat sim", "lat. err", "PSNR dB", "report");
  for (const auto& row : rows) {
    const auto& u = row.j.value("und", nlohmann::json::object());
    const auto& g = row.j.value("gen", nlohmann::json::object());
    const auto chat = u.value("chat", nlohmann::json::object());
    std::printf("%-10s %9.1f %9s %9s %8s %8s%% %10s %9s %8s  %s\n", row.scheme.c_str(), double(row.bytes) / 1e6,
                num(u.value("base_perplexity", nlohmann::json()), "%.2f").c_str(),
                num(u.value("quant_perplexity", nlohmann::json()), "%.2f").c_str(),
                num(u.value("kl_mean", nlohmann::json()), "%.4f").c_str(),
                num(u.contains("top1_agreement") ? nlohmann::json(100 * u["top1_agreement"].get<double>()) : nlohmann::json(), "%.1f").c_str(),
                num(chat.value("levenshtein_similarity", nlohmann::json()), "%.3f").c_str(),
                num(g.value("latent_rel_error", nlohmann::json()), "%.4f").c_str(),
                num(g.value("latent_psnr_db", nlohmann::json()), "%.1f").c_str(), row.report.c_str());
  }
  return 0;
}

}  // namespace lq::cli
