#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>

#include "cli/commands.h"
#include "io/error.h"
#include "io/heap.h"
#include "io/signals.h"

namespace {

struct Command {
  const char* name;
  int (*run)(const lq::cli::Args&);
  const char* summary;
};

// Every subcommand, one row each.
const Command kCommands[] = {
    {"inspect", lq::cli::cmd_inspect, "describe a checkpoint: architecture, targets, sizes per scheme"},
    {"synth", lq::cli::cmd_synth, "write a synthetic Lance-shaped checkpoint (streaming)"},
    {"synth-vae", lq::cli::cmd_synth_vae, "write a synthetic Wan2.2 VAE (exact shapes, random weights)"},
    {"tokenize", lq::cli::cmd_tokenize, "encode stdin lines to ids (or --decode ids to text)"},
    {"calibrate", lq::cli::cmd_calibrate, "activation statistics of both paths (text, chat, t2i inputs)"},
    {"merge-stats", lq::cli::cmd_merge_stats, "merge calibration statistics (shards) of one model"},
    {"quantize", lq::cli::cmd_quantize, "quantize a checkpoint layer by layer: awq-int4, rtn-int4, nvfp4, ..."},
    {"demo", lq::cli::cmd_demo, "quantize the default model (rtn-int4, awq-int4, nvfp4) and compare the reports"},
    {"eval", lq::cli::cmd_eval, "compare QUANT with BASE on held-out data: report.md/json + plots"},
    {"export", lq::cli::cmd_export, "export the understanding path: gguf (llama.cpp), mlx (mlx-lm), hf"},
    {"import", lq::cli::cmd_import, "read a GGUF of the und path (ours or llama-quantize's) back into a dense checkpoint"},
    {"run", lq::cli::cmd_run, "run a model: --task text | t2i | t2v | edit | x2t"},
    {"bench", lq::cli::cmd_bench, "benchmarks: kernels, forward, decode"},
};

void usage(FILE* out) {
  std::fprintf(out, "usage: lance-quant COMMAND [ARGS...]\n\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(out, "  %-12s %s\n", c.name, c.summary);
  std::fprintf(out, "\n`lance-quant COMMAND --help` describes a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  lq::io::install_signal_cleanup();  // partial outputs are removed on SIGINT / SIGTERM / SIGBUS
  lq::io::fix_heap_mmap_threshold();  // freed large buffers leave the resident set (peak RSS of quantize)
  lq::cli::Args args(argv + 2, argv + argc);
  for (const auto& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    try {
      return c.run(args);
    } catch (const lq::Error& e) {
      std::fprintf(stderr, "lance-quant %s: error: %s\n", c.name, e.what());
      return 1;
    } catch (const std::filesystem::filesystem_error& e) {  // a path problem the command did not check itself
      std::fprintf(stderr, "lance-quant %s: error: [%s] %s\n", c.name, e.path1().c_str(), e.code().message().c_str());
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "lance-quant %s: internal error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "lance-quant: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
