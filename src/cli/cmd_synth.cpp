// `lance-quant synth`: write a synthetic Lance-structured checkpoint (see model/synth.h).
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/commands.h"
#include "io/error.h"
#include "io/progress.h"
#include "model/synth.h"
#include "vit/vit_synth.h"

namespace lq::cli {

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: lance-quant synth --preset NAME --out DIR [--dtype f32|bf16] [--seed N]\n"
               "                         [--layers N] [--tokenizer DIR] [--force] [--json]\n\n"
               "Writes a Lance-structured checkpoint (model.safetensors, llm_config.json, lance_config.json,\n"
               "tokenizer files) with exact names and shapes and deterministic random weights.\n\npresets:\n");
  for (const auto& p : model::synth_presets()) std::fprintf(out, "  %-9s %s\n", p.name.c_str(), p.summary.c_str());
  std::fprintf(out,
               "\n       lance-quant synth --vit NAME --out DIR [--vit-out-hidden N] [--dtype f32|bf16] [--seed N] [--force]\n\n"
               "Writes a ViT directory (vit.safetensors + config.json, as Lance_3B keeps its vision tower) with\n"
               "exact names and shapes; --vit-out-hidden sets the merger's output to the LLM's hidden size.\n"
               "Random weights test the plumbing only. ViT presets:\n");
  for (const auto& p : vit::vit_presets()) std::fprintf(out, "  %-11s %s\n", p.name.c_str(), p.summary.c_str());
}


}  // namespace

int cmd_synth(const Args& args) {
  model::SynthOptions o;
  bool json_out = false, have_preset = false;
  std::string vit_preset;
  int vit_out_hidden = 0;
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
    } else if (a == "--vit") {
      vit_preset = value();
    } else if (a == "--vit-out-hidden") {
      const std::string v = value();
      try {
        size_t pos = 0;
        vit_out_hidden = std::stoi(v, &pos);
        if (pos != v.size() || vit_out_hidden <= 0) throw std::invalid_argument(v);
      } catch (const std::exception&) {
        fail("--vit-out-hidden", "expected a positive integer, got '" + v + "'");
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
  if (!vit_preset.empty()) {
    if (have_preset) fail("--vit", "writes a ViT directory on its own; run synth --preset separately for the LLM");
    if (o.out_dir.empty()) fail("--out", "an output directory is required");
    vit::VitSynthOptions vo;
    vo.preset = vit_preset;
    vo.out_dir = o.out_dir;
    vo.dtype = o.dtype;
    vo.seed = o.seed;
    vo.out_hidden = vit_out_hidden;
    vo.force = o.force;
    io::Progress progress("synth", 0, "GB");
    vo.progress = [&progress](uint64_t done, uint64_t total) {
      progress.set_total(double(total) / 1e9);
      progress.update(double(done) / 1e9);
    };
    const vit::VitSynthResult r = vit::synthesize_vit(vo);
    if (json_out) {
      nlohmann::ordered_json j = {{"out", o.out_dir}, {"vit_preset", vit_preset}, {"dtype", io::dtype_name(o.dtype)},
                                  {"seed", o.seed}, {"tensors", r.num_tensors}, {"bytes", r.bytes},
                                  {"config", r.config.to_json()}};
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("wrote %s: ViT preset %s, %d tensors (%s), vit.safetensors %llu bytes, merger output %d\n", o.out_dir.c_str(),
                  vit_preset.c_str(), r.num_tensors, io::dtype_name(o.dtype), (unsigned long long)r.bytes,
                  r.config.out_hidden_size);
    }
    return 0;
  }
  if (vit_out_hidden) fail("--vit-out-hidden", "only with --vit");
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
