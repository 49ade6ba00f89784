// `lance-quant import FILE.gguf --base MODEL --out DIR`: a GGUF of the und path (our export, or
// llama-quantize's re-quantization of it) read back into a dense checkpoint of MODEL, so that `eval`
// measures llama.cpp's quantized files and ours with one evaluator (export/export.h).
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/args.h"
#include "cli/commands.h"
#include "export/export.h"
#include "io/error.h"

namespace lq::cli {

namespace {

const char* kUsage =
    "usage: lance-quant import FILE.gguf --base MODEL --out DIR [--force] [--json]\n"
    "  FILE.gguf  a llama.cpp 'qwen3' / 'qwen2' GGUF of MODEL's und path (`export --to gguf`, possibly\n"
    "             re-quantized by llama-quantize); every ggml type of export --type is read\n"
    "  --base     the dense MODEL it was exported from: its other tensors (the gen path, ...) are kept\n"
    "  --out      a new directory: a dense f32 checkpoint of MODEL with the GGUF's und tensors,\n"
    "             dequantized (then: lance-quant eval MODEL DIR); written as DIR.lq-partial-PID, renamed at\n"
    "             the end; it must not be or lie inside an input\n"
    "  --force    replace an existing DIR that lance-quant wrote\n";

}  // namespace

int cmd_import(const Args& args) {
  std::string file, base, out;
  bool json_out = false, force = false;
  ArgReader r(args, "import");
  while (r.next()) {
    if (r.is("--help") || r.is("-h")) {
      std::printf("%s", kUsage);
      return 0;
    } else if (r.is("--base")) {
      base = r.value();
    } else if (r.is("--out")) {
      out = r.value();
    } else if (r.is("--force")) {
      force = true;
    } else if (r.is("--json")) {
      json_out = true;
    } else if (r.positional() && file.empty()) {
      file = r.current();
    } else {
      r.unknown();
    }
  }
  if (file.empty() || base.empty() || out.empty()) {
    std::fprintf(stderr, "%s", kUsage);
    return 2;
  }
  const exporter::ImportResult res = exporter::import_gguf_und(file, base, out, force);
  if (json_out) {
    const nlohmann::ordered_json j = {{"out", out}, {"replaced", res.replaced}, {"types", res.types},
                                      {"linear_bpw", res.linear_bpw}, {"file_bpw", res.file_bpw}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("imported %s into %s: %d und tensors replaced (", file.c_str(), out.c_str(), res.replaced);
  bool first = true;
  for (const auto& [type, n] : res.types) {
    std::printf("%s%d x %s", first ? "" : ", ", n, type.c_str());
    first = false;
  }
  std::printf("); bits per weight: layer linears %.4f, all und tensors %.4f\n", res.linear_bpw, res.file_bpw);
  return 0;
}

}  // namespace lq::cli
