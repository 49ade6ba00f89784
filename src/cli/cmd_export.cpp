// `lance-quant export MODEL --to gguf|mlx|hf --path und [--type T] [--base DIR] --out DIR`:
// the understanding path as a standard decoder other runtimes load (export/export.h, docs/exports.md).
#include <cstdio>
#include <string>

#include "cli/args.h"
#include "cli/commands.h"
#include "export/export.h"
#include "io/error.h"

namespace lq::cli {

namespace {

const char* kUsage =
    "usage: lance-quant export MODEL --to gguf|mlx|hf --out DIR [--path und] [--type T] [--base DIR]\n"
    "  MODEL        a dense checkpoint directory or a quantized one (lance-quant-v1, autoawq, ...)\n"
    "  --to         gguf: llama.cpp 'qwen3' (q/k norm, q/k/v bias, untied output), one model.gguf\n"
    "               mlx:  mlx-lm 'glm4_moe' with all layers dense; integer-quantized linears stay\n"
    "                     quantized (MLX affine, bias = -scale * zero, exact)\n"
    "               hf:   Hugging Face 'qwen3' with attention_bias (dense safetensors)\n"
    "  --path       und (the only path with a standard-architecture equivalent)\n"
    "  --type       gguf: f16 (default), f32, q8_0, q4_0, q4_k for the linears and lm_head\n"
    "               mlx/hf: f32 (default) or f16 for dense tensors\n"
    "  --base DIR   where to read llm_config.json and the tokenizer if MODEL has none\n"
    "  --force      replace an existing DIR that lance-quant wrote\n"
    "DIR is written as DIR.lq-partial-PID and renamed at the end; it must not be or lie inside an input.\n";

}  // namespace

int cmd_export(const Args& args) {
  std::string model;
  exporter::ExportOptions o;
  bool have_target = false;
  ArgReader r(args, "export");
  while (r.next()) {
    if (r.is("--help") || r.is("-h")) {
      std::printf("%s", kUsage);
      return 0;
    } else if (r.is("--to")) {
      o.target = exporter::parse_export_target(r.value(), "export --to");
      have_target = true;
    } else if (r.is("--path")) {
      const std::string p = r.value();
      if (p != "und") fail("export --path", "only 'und' can be exported ('" + p + "' has no standard architecture)");
    } else if (r.is("--type")) {
      o.type = r.value();
    } else if (r.is("--base")) {
      o.base_dir = r.value();
    } else if (r.is("--out")) {
      o.out_dir = r.value();
    } else if (r.is("--force")) {
      o.force = true;
    } else if (r.positional() && model.empty()) {
      model = r.current();
    } else {
      r.unknown();
    }
  }
  if (model.empty() || !have_target || o.out_dir.empty()) {
    std::fprintf(stderr, "%s", kUsage);
    return 2;
  }
  const exporter::ExportResult res = exporter::export_und(model, o);
  std::printf("exported %s path of %s as '%s' (%d tensors%s) to %s:", "und", model.c_str(), res.architecture.c_str(),
              res.tensors, res.from_quantized ? ", from the quantized weights" : "", o.out_dir.c_str());
  for (const auto& f : res.files) std::printf(" %s", f.c_str());
  std::printf("\n");
  return 0;
}

}  // namespace lq::cli
