// `lance-quant quantize`: a Lance checkpoint -> a quantized checkpoint, streaming layer by layer.
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include <optional>
#include <nlohmann/json.hpp>

#include "api/api.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "io/progress.h"
#include "kernels/linear.h"
#include "pipeline/quantize.h"

namespace lq::cli {

namespace {

const char* kQuantizeUsage =
    "usage: lance-quant quantize MODEL --out DIR [--scheme S] [--group-size 32|64|128|0] [--sym]\n"
    "         [--calib KIND:FILE ...] [--stats STATS.safetensors] [--allow-partial] [--format F]\n"
    "         [--keep PATTERN ...] [--gen-scheme SPEC] [--override PATTERN=SPEC ...] [--keep-dtype bf16|f32]\n"
    "         [--threads N] [--force] [--json]\n"
    "         [--awq-rows N] [--clip-rows N] [--no-clip] [--seq-len N] [--max-tokens N] [--max-prompts N]\n"
    "         [--t2i-taus N] [--steps N] [--dense-out DIR] [--vit-dir DIR] [--x2t-resolution R]\n"
    "         [--no-sequential] [--no-act-order] [--gptq-block N] [--gptq-damp F] [--gptq-awq-clip] [--bpw B]\n"
    "         [--vae VAE] [--t2v-frames N] [--edit-resolution R] [--edit-max-frames N] [--edit-vit-resolution R]\n"
    "         [--no-vit-reference] [--vit]\n\n"
    "Schemes: awq-int4 (default; AWQ on real activations of the --calib inputs, layer by layer through the\n"
    "native forward), rtn-int4 (min-max, the floor), awq-proxy (AWQ folds from --stats only), legacy-awq\n"
    "(the original Python lance-quant's method, from --stats), nvfp4, awq-nvfp4, rtn-int8, gptq-int4 / gptq-nvfp4\n"
    "(GPTQ: second-order rounding with each linear's H = 2 X^T X / n of the --calib rows), awq-gptq-int4 /\n"
    "awq-gptq-nvfp4 (AWQ's scaling, then GPTQ).\n"
    "--group-size: INT4 / INT8 elements per scale along the input axis, 32, 64 or 128 (default 128), or 0 for one\n"
    "  group per row (per channel). NVFP4 has fixed blocks of 16: --group-size with nvfp4 / awq-nvfp4 is an error\n"
    "  unless an integer format is also asked for (--gen-scheme / --override).\n"
    "--calib takes the inputs of `calibrate` (text:FILE, chat:FILE, t2i:FILE, t2v:FILE, image_edit:FILE,\n"
    "  video_edit:FILE, x2t_image:FILE, x2t_video:FILE; repeatable). x2t inputs run through the ViT of the\n"
    "  checkpoint (vit_model.*) or of --vit-dir DIR (vit.safetensors + config.json), at Lance's resolutions unless\n"
    "  --x2t-resolution; they get half the und rows. The generation kinds share the gen rows, taking turns\n"
    "  (t2i, t2v, image_edit, video_edit, ...), each through the full-precision sampler as `calibrate` runs them\n"
    "  (--t2v-frames; edits: sources encoded by the Wan2.2 VAE --vae at --edit-resolution, videos cut to\n"
    "  --edit-max-frames, with their ViT reference from the same ViT unless --no-vit-reference).\n"
    "  AWQ and GPTQ need inputs for both paths (text/chat/x2t reach und, t2i/t2v/edits both); a path left without data is\n"
    "  refused unless --allow-partial, which writes its linears with RTN and records which linears got which method.\n"
    "--keep PATTERN leaves matching linears (glob or substring of the base name) in bf16.\n"
    "Per-linear number formats (the method stays the one of --scheme; AWQ searches each linear with its own format):\n"
    "  --gen-scheme SPEC          every linear of the gen path (*_moe_gen), e.g. --gen-scheme int8\n"
    "  --override PATTERN=SPEC    linears matching PATTERN (as --keep), e.g. --override 'down_proj=int4:g128'\n"
    "  SPEC: int4 | int4-asym | int4-sym | int8 | nvfp4, with an optional group suffix :g32 :g64 :g128 :g0\n"
    "  (per channel; default --group-size; not for nvfp4), bf16 or keep (= --keep), or a scheme name such as\n"
    "  rtn-int8 (its number format). int4 follows --sym.\n"
    "  Precedence: --keep > --override (the last matching one wins) > --gen-scheme > --scheme.\n"
    "  Mixed formats need lance-quant-v1 or compressed-tensors (autoawq and modelopt hold one format).\n"
    "--awq-rows caps the calibration rows per path cached for the search of each layer.\n"
    "--no-sequential: calibrate every layer on the full-precision model's activations instead of the outputs of\n"
    "the already quantized layers before it (and, for GPTQ, of the already rounded linears of the layer).\n"
    "GPTQ: act-order with static groups (standard layouts) unless --no-act-order; lazy blocks of --gptq-block\n"
    "(128) columns; --gptq-damp (0.01) of the mean diagonal of H, x10 per failed Cholesky; --gptq-awq-clip\n"
    "applies AWQ's clip ratios where group parameters are fixed.\n"
    "--bpw B: mixed precision under a budget: each linear gets int4 g128 / g64 / g32, int8 or bf16 (nvfp4 schemes:\n"
    "nvfp4, int8, bf16) by its measured effect on the calibration rows of both paths, so that the target linears\n"
    "average at most B bits per weight (codes + bf16 scales + 4-bit zero points, as llama.cpp counts them; bf16 =\n"
    "16). The plan is printed and stored as DIR/lance-quant.bit-plan.json. Needs --calib.\n"
    "--vit also writes the ViT (of --vit-dir DIR, else the model's vit_model.* tensors) with its linears 4-bit: RTN\n"
    "  asymmetric INT4, bf16 scales, group 64 (48 / 32 / 16 where 64 does not divide the input width), the quantizer\n"
    "  `eval --vit-quant int4` runs at load. The patch embedding and linears whose input width is not a multiple of 16\n"
    "  (Lance's down_proj, 3420) stay dense (--keep-dtype). Stored as vit_model.* in the output's weights file, in\n"
    "  the format's own per-linear layout (lance-quant-v1 or compressed-tensors); run / calibrate / eval then use it\n"
    "  without --vit DIR. --keep PATTERN (or --override PATTERN=keep) with a PATTERN that begins with vit_model.\n"
    "  keeps those ViT linears dense, e.g. --keep 'vit_model.merger.*'; other patterns apply to the LLM only. Without --vit, a\n"
    "  model's vit_model.* tensors are carried through unquantized (--keep-dtype) and --vit-dir is only read for x2t\n"
    "  calibration. Needs --format lance-quant-v1 or compressed-tensors; not with --dense-out.\n"
    "--dense-out DIR also writes the dequantized model, folds undone, as a dense f32 checkpoint (evaluation).\n"
    "Formats: lance-quant-v1 (default), autoawq, compressed-tensors, modelopt.\n"
    "DIR is written as DIR.lq-partial-PID and renamed at the end (removed on Ctrl-C / SIGTERM; a later run removes\n"
    "those of killed processes). DIR must not be or lie inside an input; an existing DIR is replaced only with\n"
    "--force and only when lance-quant wrote it.\n";

}  // namespace

int cmd_quantize(const Args& args) {
  ArgReader r(args, "quantize");
  pipeline::QuantizeOptions o;
  std::string scheme = "awq-int4";
  int64_t group = 128;
  bool group_given = false, sym = false, json_out = false;
  std::string gen_spec;
  std::vector<std::string> overrides;  // PATTERN=SPEC, parsed once --group-size / --sym are known
  while (r.next()) {
    if (r.is("--help") || r.is("-h")) {
      std::printf("%s", kQuantizeUsage);
      return 0;
    } else if (r.is("--out")) o.out_dir = r.value();
    else if (r.is("--scheme")) scheme = r.value();
    else if (r.is("--group-size")) group = r.int_value(), group_given = true;
    else if (r.is("--sym")) sym = true;
    else if (r.is("--calib")) o.calib.push_back(calib::parse_source(r.value()));
    else if (r.is("--stats")) o.stats_path = r.value();
    else if (r.is("--allow-partial")) o.allow_partial = true;
    else if (r.is("--format")) o.format = formats::parse_format(r.value(), "--format");
    else if (r.is("--keep")) o.keep.push_back(r.value());
    else if (r.is("--gen-scheme")) gen_spec = r.value();
    else if (r.is("--override")) overrides.push_back(r.value());
    else if (r.is("--keep-dtype")) {
      const std::string d = r.value();
      if (d != "bf16" && d != "f32") fail("--keep-dtype " + d, "expected bf16 or f32");
      o.kept_dtype = d == "f32" ? io::DType::F32 : io::DType::BF16;
    } else if (r.is("--threads")) kernels::set_num_threads(int(r.int_value()));
    else if (r.is("--force")) o.force = true;
    else if (r.is("--json")) json_out = true;
    else if (r.is("--awq-rows")) o.awq.rows_per_layer = r.int_value();
    else if (r.is("--clip-rows")) o.awq.clip_rows = r.int_value();
    else if (r.is("--no-clip")) o.awq.clip = false;
    else if (r.is("--seq-len")) o.awq.seq_len = r.int_value();
    else if (r.is("--max-tokens")) o.awq.max_tokens = r.int_value();
    else if (r.is("--max-prompts")) o.awq.max_prompts = r.int_value();
    else if (r.is("--t2i-taus")) o.awq.t2i_taus = int(r.int_value());
    else if (r.is("--steps")) o.awq.t2i_steps = int(r.int_value());
    else if (r.is("--dense-out")) o.dense_out = r.value();
    else if (r.is("--vit-dir")) o.vit_dir = r.value();
    else if (r.is("--vit")) o.quantize_vit = true;
    else if (read_gen_task_flag(r, o)) continue;
    else if (r.is("--x2t-resolution")) {
      const int64_t res = r.int_value();
      if (res < 28) fail("quantize --x2t-resolution", "must be at least 28 pixels");
      o.x2t.image_resolution = o.x2t.video_resolution = int(res);
    }
    else if (r.is("--sequential")) o.sequential = true;
    else if (r.is("--no-sequential")) o.sequential = false;
    else if (r.is("--act-order")) o.gptq.gptq.act_order = true;
    else if (r.is("--no-act-order")) o.gptq.gptq.act_order = false;
    else if (r.is("--gptq-block")) o.gptq.gptq.block = r.int_value();
    else if (r.is("--gptq-damp")) o.gptq.gptq.damp = r.double_value();
    else if (r.is("--gptq-awq-clip")) o.gptq.awq_clip = true;
    else if (r.is("--bpw")) {
      o.bpw = r.double_value();
      if (!(o.bpw > 0) || !std::isfinite(o.bpw)) fail("--bpw", "expected a positive number of bits per weight");
    }
    else if (r.positional() && o.model_dir.empty()) o.model_dir = r.current();
    else r.unknown();
  }
  o = api::quantize_options(std::move(o), scheme, group_given ? std::optional<int64_t>(group) : std::nullopt, sym,
                            gen_spec, overrides);

  io::Progress progress("quantize", 0, "layers");
  o.on_layer = [&progress](int done, int total) {
    progress.set_total(double(total));
    progress.update(double(done));
  };
  std::unique_ptr<io::Progress> vit_progress;
  o.on_vit_linear = [&progress, &vit_progress](int done, int total) {
    if (!vit_progress) {
      progress.finish();
      vit_progress = std::make_unique<io::Progress>("quantize vit", double(total), "linears");
    }
    vit_progress->update(double(done));
  };
  const pipeline::QuantizeReport rep = api::quantize(o);  // checks the output directory first
  progress.finish();
  if (vit_progress) vit_progress->finish();
  if (json_out) {
    std::printf("%s\n", rep.to_json().dump(2).c_str());
  } else {
    double worst = 0, mean = 0;
    for (const auto& l : rep.linears) worst = std::max(worst, l.weight_rel_error), mean += l.weight_rel_error;
    if (!rep.linears.empty()) mean /= double(rep.linears.size());
    std::printf("quantized %lld linears (%lld kept) with %s into %s (%s, %.1f MB, %.1f s)\n", (long long)rep.quantized_linears,
                (long long)rep.kept_linears, rep.scheme.c_str(), rep.out_dir.c_str(), rep.format.c_str(),
                double(rep.output_bytes) / 1e6, rep.seconds);
    std::printf("  weight relative error: mean %.4f, worst %.4f\n", mean, worst);
    if (rep.partial_calibration) {
      std::map<std::string, int> per_method;
      for (const auto& l : rep.linears) ++per_method[l.method];
      std::printf("  PARTIAL calibration (--allow-partial):");
      for (const auto& [m, n] : per_method) std::printf(" %s x%d", m.c_str(), n);
      std::printf(" (recorded per linear in the checkpoint)\n");
    }
    if (!rep.bit_plan.is_null()) {
      const auto& bp = rep.bit_plan;
      std::printf("  bit plan: %.4f bits per weight on average (budget %.4f), stored in %s/lance-quant.bit-plan.json\n",
                  bp["average_bpw"].get<double>(), bp["budget_bpw"].get<double>(), rep.out_dir.c_str());
      for (const auto& l : bp["linears"]) {
        const std::string f = l["format"].get<std::string>();
        std::printf("    %-58s %-10s %6.3f bits  sensitivity %.3e\n", l["name"].get<std::string>().c_str(), f.c_str(),
                    l["bits_per_weight"].get<double>(), l["sensitivity"][f].get<double>());
      }
    }
    if (!rep.vit.is_null()) {
      const auto& v = rep.vit;
      std::printf("  vit: %s, from %s; %.1f MB -> %.1f MB", v["summary"].get<std::string>().c_str(),
                  v["source"].get<std::string>().c_str(), double(v["source_bytes"].get<uint64_t>()) / 1e6,
                  double(v["output_bytes"].get<uint64_t>()) / 1e6);
      if (v.contains("weight_rel_error"))
        std::printf("; weight relative error mean %.4f, worst %.4f", v["weight_rel_error"]["mean"].get<double>(),
                    v["weight_rel_error"]["worst"].get<double>());
      std::printf("\n");
      std::map<std::string, std::vector<std::string>> by_reason;  // the full list is in --json and the checkpoint's meta
      for (const auto& k : v["kept_dense"]) by_reason[k["reason"].get<std::string>()].push_back(k["name"].get<std::string>());
      for (const auto& [why, names] : by_reason)
        std::printf("    kept dense: %s%s (%s)\n", names.front().c_str(),
                    names.size() > 1 ? (" and " + std::to_string(names.size() - 1) + " more").c_str() : "", why.c_str());
    }
    std::map<std::string, int> per_format;
    for (const auto& l : rep.linears) ++per_format[l.format];
    if (per_format.size() > 1) {
      std::printf("  number formats:");
      for (const auto& [f, n] : per_format) std::printf(" %s x%d", f.c_str(), n);
      std::printf("\n");
    }
  }
  return 0;
}

}  // namespace lq::cli
