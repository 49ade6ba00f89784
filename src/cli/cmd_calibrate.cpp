// `lance-quant calibrate` and `lance-quant merge-stats`: activation statistics of both paths.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "api/api.h"
#include "calib/calibrate.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "forward/prompts.h"
#include "io/output.h"
#include "io/progress.h"
#include "kernels/linear.h"
#include "tokenizer/tokenizer.h"
#include "vit/x2t_input.h"

namespace lq::cli {

namespace {

const char* kCalibrateUsage =
    "usage: lance-quant calibrate MODEL --calib KIND:FILE [--calib KIND:FILE ...] --out STATS.safetensors\n"
    "         [--max-tokens N] [--max-prompts N] [--seq-len N] [--shard I/N] [--hessian] [--steps N]\n"
    "         [--seed S] [--threads N] [--dtype f32|bf16] [--stream-weights] [--allow-partial] [--force] [--json]\n"
    "         [--vae VAE] [--t2v-frames N] [--edit-resolution R] [--edit-max-frames N] [--vit DIR] [--x2t-resolution R]\n"
    "         [--edit-vit-resolution R] [--no-vit-reference]\n\n"
    "KIND: text (plain text, cut into --seq-len windows), chat (JSONL {\"question\", \"answer\"}),\n"
    "t2i / t2v (one prompt per line, run through the full CFG sampler; every step is observed; t2v on the\n"
    "t2i grid with t = (--t2v-frames - 1) / 4 + 1, default 17 frames or what the model allows),\n"
    "image_edit / video_edit (JSONL {\"image\" | \"video\": path relative to the file, \"prompt\": instruction};\n"
    "the source is encoded by the Wan2.2 VAE given with --vae at --edit-resolution (default 16 sqrt(h w) of the\n"
    "t2i grid), videos cut to --edit-max-frames (default 17); the clean source rows are observed at tau 0; as in\n"
    "Lance the same frames also give a ViT reference block (the ViT from --vit DIR or vit_model.*, at the\n"
    "resolution paired with the VAE's, 7/8 of it off Lance's pairs, or --edit-vit-resolution);\n"
    "--no-vit-reference calibrates edits without it),\n"
    "x2t_image / x2t_video (JSONL {\"image\"|\"video\": path, \"question\"[, \"answer\"]}: the ViT's tokens in\n"
    "Lance's understanding prompt; the ViT from --vit DIR or the checkpoint's vit_model.* tensors; images at\n"
    "R = 672, video at 616 unless --x2t-resolution).\n"
    "--max-tokens caps the tokens taken from each text/chat file, --max-prompts the prompts of each t2i/t2v/edit/x2t file.\n"
    "--shard I/N keeps samples k with k % N == I; merge the shards with merge-stats.\n"
    "--no-capture runs the same forwards without observing and writes nothing (capture overhead benchmark).\n"
    "--stream-weights releases each layer's mapped weights after it runs (bounded memory for a checkpoint\n"
    "larger than RAM; every forward reads the weights again).\n"
    "A target linear without calibration rows is an error unless --allow-partial.\n";

bool parse_shard(const std::string& v, int& index, int& count) {
  return std::sscanf(v.c_str(), "%d/%d", &index, &count) == 2 && count >= 1 && index >= 0 && index < count;
}

// The statistics file must not be an input; an existing one is replaced only with --force and only
// when lance-quant wrote it (io/output.h).
void check_output(const std::string& out, bool force, const std::vector<std::string>& inputs) {
  io::check_output_file(out, force, inputs, "--out");
}

}  // namespace

int cmd_calibrate(const Args& args) {
  ArgReader r(args, "calibrate");
  std::string model_dir, out;
  std::vector<calib::Source> sources;
  calib::CalibOptions o;
  bool allow_partial = false, force = false, json_out = false;
  fwd::LoadOptions load;
  int steps = -1;
  std::string vit_dir;
  int x2t_resolution = 0;
  while (r.next()) {
    if (r.is("--help") || r.is("-h")) {
      std::printf("%s", kCalibrateUsage);
      return 0;
    } else if (r.is("--calib")) sources.push_back(calib::parse_source(r.value()));
    else if (r.is("--out")) out = r.value();
    else if (r.is("--max-tokens")) o.max_tokens = r.int_value();
    else if (r.is("--max-prompts")) o.max_prompts = r.int_value();
    else if (r.is("--seq-len")) o.seq_len = r.int_value();
    else if (r.is("--shard")) {
      const std::string v = r.value();
      if (!parse_shard(v, o.shard_index, o.shard_count)) fail("--shard " + v, "expected I/N with 0 <= I < N");
    } else if (r.is("--hessian")) o.hessian = true;
    else if (r.is("--steps")) steps = int(r.int_value());
    else if (r.is("--seed")) o.seed = uint64_t(r.int_value());
    else if (read_gen_task_flag(r, o)) continue;
    else if (r.is("--threads")) kernels::set_num_threads(int(r.int_value()));
    else if (r.is("--dtype")) {
      const std::string d = r.value();
      if (d != "f32" && d != "bf16") fail("--dtype " + d, "expected f32 or bf16");
      load.storage = d == "f32" ? fwd::WeightStorage::F32 : fwd::WeightStorage::BF16;
    } else if (r.is("--allow-partial")) allow_partial = true;
    else if (r.is("--no-capture")) o.capture = false;
    else if (r.is("--stream-weights")) load.release_layer_pages = true;
    else if (r.is("--vit")) vit_dir = r.value();
    else if (r.is("--x2t-resolution")) {
      x2t_resolution = int(r.int_value());
      if (x2t_resolution < 28) fail("calibrate --x2t-resolution", "must be at least 28 pixels");
    }
    else if (r.is("--force")) force = true;
    else if (r.is("--json")) json_out = true;
    else if (r.positional() && model_dir.empty()) model_dir = r.current();
    else r.unknown();
  }
  api::CalibrateRequest req;
  req.model_dir = model_dir;
  req.out = out;
  req.sources = sources;
  req.options = o;
  req.load = load;
  req.steps = steps;
  req.allow_partial = allow_partial;
  req.force = force;
  req.vit_dir = vit_dir;
  req.x2t_resolution = x2t_resolution;
  io::Progress progress("calibrate", 0, "samples");
  const api::CalibrateResult res = api::calibrate(req, [&progress](int64_t done, int64_t total) {
    progress.set_total(double(total));
    progress.update(double(done));
  });
  progress.finish();
  if (!o.capture) {
    std::printf("forwards without capture: %.2f s (model load excluded; nothing written)\n", res.forward_seconds);
    return 0;
  }

  if (json_out) {
    std::printf("%s\n", res.to_json().dump(2).c_str());
  } else {
    std::printf("calibration statistics: %s (%.1f s, of which forwards %.2f s)\n", out.c_str(), res.seconds, res.forward_seconds);
    for (const auto& [path, c] : res.coverage)
      std::printf("  %s: %d/%d target linears covered, rows per linear %lld..%lld\n", path.c_str(), c.covered, c.linears,
                  (long long)c.min_rows, (long long)c.max_rows);
    if (!res.uncovered.empty()) std::printf("  PARTIAL: %zu target linears uncovered (--allow-partial)\n", res.uncovered.size());
  }
  return 0;
}

int cmd_merge_stats(const Args& args) {
  ArgReader r(args, "merge-stats");
  std::vector<std::string> inputs;
  std::string out;
  bool force = false;
  while (r.next()) {
    if (r.is("--help") || r.is("-h")) {
      std::printf("usage: lance-quant merge-stats A.safetensors B.safetensors ... --out MERGED.safetensors [--force]\n\n"
                  "Token-weighted, associative merge of calibration statistics of the same model (shards).\n");
      return 0;
    } else if (r.is("--out")) out = r.value();
    else if (r.is("--force")) force = true;
    else if (r.positional()) inputs.push_back(r.current());
    else r.unknown();
  }
  if (inputs.empty()) fail("merge-stats", "no input statistics files given");
  check_output(out, force, inputs);
  calib::StatsFile merged = calib::StatsFile::load(inputs[0]);
  for (size_t i = 1; i < inputs.size(); ++i) merged.merge(calib::StatsFile::load(inputs[i]), inputs[i]);
  merged.extra_metadata["shard"] = "merged";
  merged.save(out);
  std::printf("merged %zu files into %s (%zu linears)\n", inputs.size(), out.c_str(), merged.linears.size());
  return 0;
}

}  // namespace lq::cli
