// `lance-quant synth`: write a synthetic Lance-structured checkpoint (see model/synth.h).
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/commands.h"
#include "io/error.h"
#include "io/progress.h"
#include "model/synth.h"

namespace lq::cli {

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: lance-quant synth --preset NAME --out DIR [--dtype f32|bf16] [--seed N]\n"
               "                         [--layers N] [--tokenizer DIR] [--force] [--json]\n\n"
               "Writes a Lance-structured checkpoint (model.safetensors, llm_config.json, lance_config.json,\n"
               "tokenizer files) with exact names and shapes and deterministic random weights.\n\npresets:\n");
  for (const auto& p : model::synth_presets()) std::fprintf(out, "  %-9s %s\n", p.name.c_str(), p.summary.c_str());
}


}  // namespace

int cmd_synth(const Args& args) {
  model::SynthOptions o;
  bool json_out = false, have_preset = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) fail(a, "needs a value");
      return args[++i];
    };
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else if (a == "--preset") {
      o.preset = value();
      have_preset = true;
    } else if (a == "--out") {
      o.out_dir = value();
    } else if (a == "--dtype") {
      const std::string d = value();
      if (d == "f32" || d == "F32") o.dtype = io::DType::F32;
      else if (d == "bf16" || d == "BF16") o.dtype = io::DType::BF16;
      else fail("--dtype", "expected f32 or bf16, got '" + d + "'");
    } else if (a == "--seed") {
      const std::string v = value();
      try {
        size_t pos = 0;
        o.seed = std::stoull(v, &pos);
        if (pos != v.size()) throw std::invalid_argument(v);
      } catch (const std::exception&) {
        fail("--seed", "expected a non-negative integer, got '" + v + "'");
      }
    } else if (a == "--layers") {
      const std::string v = value();
      try {
        size_t pos = 0;
        o.layers = std::stoi(v, &pos);
        if (pos != v.size() || o.layers <= 0) throw std::invalid_argument(v);
      } catch (const std::exception&) {
        fail("--layers", "expected a positive integer, got '" + v + "'");
      }
    } else if (a == "--tokenizer") {
      o.tokenizer_dir = value();
    } else if (a == "--force") {
      o.force = true;
    } else if (a == "--json") {
      json_out = true;
    } else {
      usage(stderr);
      fail(a, "unknown argument");
    }
  }
  if (!have_preset || o.out_dir.empty()) {
    usage(stderr);
    return 2;
  }
  io::Progress progress("synth", 0, "GB");  // a redrawn line on a terminal, plain lines every 5 s otherwise
  o.progress = [&progress](uint64_t done, uint64_t total) {
    progress.set_total(double(total) / 1e9);
    progress.update(double(done) / 1e9);
  };
  const model::SynthResult r = model::synthesize(o);
  if (json_out) {
    nlohmann::ordered_json j = {{"out", o.out_dir},     {"preset", o.preset},
                                {"dtype", io::dtype_name(o.dtype)}, {"seed", o.seed},
                                {"files", r.files},     {"tensors", r.num_tensors},
                                {"safetensors_bytes", r.safetensors_bytes}, {"bytes", r.total_bytes},
                                {"vocab_size", r.config.vocab_size}, {"len_tokenizer", r.config.len_tokenizer},
                                {"seconds", r.seconds}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("wrote %s: preset %s, %d tensors (%s), model.safetensors %llu bytes, %.1f s\n", o.out_dir.c_str(),
                o.preset.c_str(), r.num_tensors, io::dtype_name(o.dtype), (unsigned long long)r.safetensors_bytes,
                r.seconds);
  }
  return 0;
}

}  // namespace lq::cli
