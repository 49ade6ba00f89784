// `lance-quant export MODEL --to gguf|mlx|hf --path und [--type T] [--base DIR] --out DIR`:
// the understanding path as a standard decoder other runtimes load (export/export.h, docs/exports.md).
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "export/export.h"
#include "export/ggml_types.h"
#include "io/error.h"

namespace lq::cli {

namespace {

const char* kUsage =
    "usage: lance-quant export MODEL --to gguf|mlx|hf|coreml --out DIR [--path und] [--type T] [--base DIR]\n"
    "         [--stats STATS.safetensors [--gptq [--gptq-damp F]]] [--pure] [--original DIR] [--force] [--json]\n"
    "  MODEL        a dense checkpoint directory or a quantized one (lance-quant-v1, autoawq, ...)\n"
    "  --to         gguf: llama.cpp 'qwen3' (q/k norm, q/k/v bias, untied output), one model.gguf\n"
    "               mlx:  mlx-lm 'glm4_moe' with all layers dense; integer-quantized linears stay\n"
    "                     quantized (MLX affine, bias = -scale * zero, exact)\n"
    "               hf:   Hugging Face 'qwen3' with attention_bias (dense safetensors)\n"
    "               coreml: Core ML ML Program (stateful KV cache, iOS 18 / macOS 15), --out DIR.mlpackage,\n"
    "                     --type int4|int8 (the checkpoint's codes, not re-quantized) or f16, [--max-context N];\n"
    "                     runs `python -m lance_quant.coreml`: needs the lance_quant Python package with\n"
    "                     coremltools (pip install '.[coreml]'); $LQ_PYTHON names the python (default python3)\n"
    "  --path       und (the only path with a standard-architecture equivalent)\n"
    "  --type       gguf: a llama.cpp file type: f16 (default), f32, q8_0, q4_0, q4_1, q4_k_s, q4_k_m,\n"
    "                     q4_k (= q4_k_m, as llama-quantize), q5_k_s, q5_k_m, q5_k, q6_k, iq4_nl, iq4_xs;\n"
    "                     each tensor gets the type llama-quantize gives it in that file type\n"
    "                     (output head Q6_K, chosen attn_v / ffn_down in Q5_K / Q6_K, ...)\n"
    "               mlx/hf: f32 (default) or f16 for dense tensors\n"
    "  --stats F    gguf: MODEL's calibration statistics (`calibrate` output): the mean x^2 of each input\n"
    "               column weights the quantized types' scale searches (llama.cpp's importance matrix)\n"
    "  --gptq       gguf: GPTQ codes inside each type's blocks (second-order rounding with the calibration\n"
    "               X^T X: --stats from `calibrate --hessian`); scales from the same weighted searches\n"
    "  --gptq-damp F  damping added to X^T X's diagonal, relative to its mean (default 0.01)\n"
    "  --pure       gguf: every quantized tensor in the file type's base type (llama-quantize --pure)\n"
    "  --original D gguf from a quantized MODEL whose grid no ggml type holds exactly (e.g. INT4 g128):\n"
    "               quantize the dense original D instead (with --stats of D). INT4 g32 checkpoints map\n"
    "               exactly to q4_0 (symmetric) / q4_1 (asymmetric) and are copied without re-rounding\n"
    "  --importance llama|plain  gguf: per-element weights imp*sqrt(sigma2+x^2) (llama.cpp's, default) or imp\n"
    "  --json       print the result (per-tensor types and bytes, bits per weight) as JSON\n"
    "  --base DIR   where to read llm_config.json and the tokenizer if MODEL has none\n"
    "  --force      replace an existing DIR that lance-quant wrote\n"
    "DIR is written as DIR.lq-partial-PID and renamed at the end; it must not be or lie inside an input.\n";

// `--to coreml` is the Python package's exporter (coremltools): the C++ core has no Python dependency, so
// the command hands its arguments to `python -m lance_quant.coreml` and becomes that process.
int run_coreml_export(const Args& args) {
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--to") {
      ++i;  // "coreml"
      continue;
    }
    rest.push_back(args[i]);
  }
  const char* env = std::getenv("LQ_PYTHON");
  const std::string python = env && *env ? env : "python3";
  const std::string script =
      "import sys\n"
      "try:\n"
      "    import lance_quant.coreml as m, coremltools\n"
      "except ImportError as e:\n"
      "    sys.exit('lance-quant export: error: [export --to coreml] needs the lance_quant Python package with '\n"
      "             'coremltools (pip install \\'.[coreml]\\' from the checkout; LQ_PYTHON names its python): ' + str(e))\n"
      "sys.exit(m.main(sys.argv[1:]))\n";
  std::vector<std::string> argv_s = {python, "-c", script};
  argv_s.insert(argv_s.end(), rest.begin(), rest.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  ::execvp(python.c_str(), argv.data());
  fail("export --to coreml", "cannot run '" + python + "' (" + std::strerror(errno) +
                                 "): the Core ML export needs Python with the lance_quant package (set LQ_PYTHON)");
}

}  // namespace

int cmd_export(const Args& args) {
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == "--to" && args[i + 1] == "coreml") return run_coreml_export(args);
  std::string model;
  exporter::ExportOptions o;
  bool have_target = false, json_out = false;
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
    } else if (r.is("--stats")) {
      o.stats_path = r.value();
    } else if (r.is("--gptq")) {
      o.gptq = true;
    } else if (r.is("--gptq-damp")) {
      o.gptq_damp = r.double_value();
    } else if (r.is("--pure")) {
      o.pure = true;
    } else if (r.is("--original")) {
      o.original_dir = r.value();
    } else if (r.is("--json")) {
      json_out = true;
    } else if (r.is("--importance")) {
      const std::string v = r.value();
      if (v == "llama") exporter::set_importance_weighting(exporter::ImportanceWeighting::LlamaCpp);
      else if (v == "plain") exporter::set_importance_weighting(exporter::ImportanceWeighting::Plain);
      else fail("export --importance", "expected llama or plain, not '" + v + "'");
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
  if (json_out) {
    nlohmann::ordered_json j = {{"architecture", res.architecture}, {"files", res.files}, {"tensors", res.tensors},
                                {"from_quantized", res.from_quantized}, {"out", o.out_dir}};
    if (!res.file_type.empty()) {
      j["file_type"] = res.file_type;
      j["linear_bpw"] = res.linear_bpw;
      j["file_bpw"] = res.file_bpw;
      auto& ts = j["tensor_types"] = nlohmann::ordered_json::array();
      for (const auto& t : res.tensor_report)
        ts.push_back({{"name", t.name}, {"type", t.type}, {"elements", t.elements}, {"bytes", t.bytes},
                      {"importance", t.importance}, {"exact", t.exact}, {"gptq", t.gptq}});
    }
    if (!res.note.empty()) j["note"] = res.note;
    if (!res.vit_not_exported.empty()) j["vit_not_exported"] = res.vit_not_exported;
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("exported %s path of %s as '%s' (%d tensors%s) to %s:", "und", model.c_str(), res.architecture.c_str(),
              res.tensors, res.from_quantized ? ", from the quantized weights" : "", o.out_dir.c_str());
  for (const auto& f : res.files) std::printf(" %s", f.c_str());
  std::printf("\n");
  if (!res.file_type.empty()) {
    std::map<std::string, int> count;
    int with_imp = 0, with_gptq = 0;
    for (const auto& t : res.tensor_report) {
      if (t.type == "f32" && !t.layer_linear && t.name != "token_embd.weight" && t.name != "output.weight") continue;
      ++count[t.type];
      with_imp += t.importance;
      with_gptq += t.gptq;
    }
    std::printf("  file type %s:", res.file_type.c_str());
    for (const auto& [type, n] : count) std::printf(" %d x %s", n, type.c_str());
    std::printf("; %d tensors quantized with calibration statistics", with_imp);
    if (with_gptq) std::printf(", %d with GPTQ codes", with_gptq);
    std::printf("\n");
    std::printf("  bits per weight: layer linears %.4f, all tensors %.4f (llama.cpp's BPW)\n", res.linear_bpw, res.file_bpw);
    if (!res.note.empty()) std::printf("  note: %s\n", res.note.c_str());
  } else if (!res.note.empty()) {
    std::printf("  note: %s\n", res.note.c_str());
  }
  return 0;
}

}  // namespace lq::cli
