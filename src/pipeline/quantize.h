// `lance-quant quantize`: stream a Lance checkpoint layer by layer into a quantized checkpoint.
//
// Methods (the part of a scheme name before the number format):
//   rtn      round-to-nearest min-max (the quality floor)
//   awq      activation-aware scaling searched on REAL activations: every decoder layer is run through
//            the native forward on cached calibration rows (text windows and t2i sequences); the
//            layer's quantized output feeds the next layer
//   proxy    the same four folds per path, scales chosen from calibration statistics only (no forward)
//   legacy   the original Python lance-quant's AWQ, kept as a baseline
//   gptq     GPTQ on each linear's H = 2 X^T X / n from the same cached rows (pipeline/gptq_layer.h);
//            awq-gptq: AWQ's scale search and folds first, then GPTQ on the folded weights
// Memory: one decoder layer's weights are resident at a time (read from the memory map, pages dropped
// once written), plus AWQ's cached residual rows; the output goes to a temporary directory beside
// DIR that is renamed into place at the very end (a killed run leaves no checkpoint at DIR).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "calib/calibrate.h"
#include "formats/checkpoint.h"
#include "model/spec.h"
#include "quant/gptq.h"
#include "quant/quantizer.h"

namespace lq::pipeline {

enum class Method { Rtn, Awq, Proxy, Legacy, Gptq, AwqGptq };
bool method_runs_forward(Method m);  // AWQ and GPTQ: calibration rows through the native forward
bool method_uses_gptq(Method m);

// A scheme name: rtn-int4, awq-int4, awq-proxy, legacy-awq, nvfp4, awq-nvfp4, rtn-int8, gptq-int4,
// awq-gptq-int4, gptq-nvfp4, awq-gptq-nvfp4.
struct SchemeChoice {
  std::string name;
  Method method = Method::Rtn;
  quant::QuantParams params;
};
// Throws lq::Error listing the known schemes. `sym` selects symmetric INT4.
SchemeChoice parse_scheme_choice(const std::string& name, int64_t group, bool sym);
std::vector<std::string> known_schemes();

// A number format for some target linears (--gen-scheme, --override PATTERN=SPEC). Only the number
// format varies per linear; the method (rtn / awq / proxy) is always the one of --scheme.
//   SPEC = FORMAT[:gN] | bf16 | keep | a scheme name (its number format)
//   FORMAT = int4 (asymmetric, or symmetric with --sym) | int4-asym | int4-sym | int8 | nvfp4
//   :gN    = group size 32, 64, 128 or 0 (per channel); default --group-size; not for nvfp4 (blocks of 16)
struct FormatSpec {
  std::string text;          // as given, for messages
  bool keep = false;         // bf16 / keep: left unquantized like --keep
  quant::QuantParams params;  // when !keep
};
// `group` and `sym` are the --group-size / --sym defaults. Throws naming `where` and the SPEC.
FormatSpec parse_format_spec(const std::string& spec, int64_t group, bool sym, const std::string& where);

struct FormatOverride {
  std::string pattern;  // glob or substring of a linear's base name, as --keep
  FormatSpec format;
};
// "PATTERN=SPEC" (the last '=' separates them).
FormatOverride parse_override(const std::string& arg, int64_t group, bool sym);

struct AwqOptions {
  int64_t rows_per_layer = 2048;   // calibration rows per path kept for the search (bounded sample)
  int64_t clip_rows = 256;         // rows used by the clip search
  int grid = 20;                   // scale grid points (plus the identity)
  bool duo_scaling = true;
  bool clip = true;
  int64_t seq_len = 256;           // text window length
  int64_t max_tokens = 0;          // per text/chat source; 0 = all
  int64_t max_prompts = 0;         // per t2i source; 0 = all
  int t2i_taus = 4;                // taus of the sampler schedule sampled per t2i prompt
  int t2i_steps = 0;               // 0: the model's prompt settings
};

// GPTQ inside the pipeline (gptq-*, awq-gptq-*).
struct GptqSettings {
  quant::GptqOptions gptq = {.block = 128, .damp = 0.01, .act_order = true};  // act-order: static groups
  bool awq_clip = false;     // awq-gptq: apply AWQ's clip ratios where GPTQ fixes group parameters
};

struct QuantizeOptions {
  std::string model_dir, out_dir;
  SchemeChoice scheme;
  formats::FormatId format = formats::FormatId::LanceQuantV1;
  std::vector<std::string> keep;                 // glob or substring of a linear's base name: stays bf16
  // Per-linear number formats. Precedence: --keep > --override (the last matching one wins) >
  // --gen-scheme (every linear of the gen path) > --scheme.
  std::optional<FormatSpec> gen_format;
  std::vector<FormatOverride> overrides;
  // Exact per-linear formats by base name (the --bpw plan), applied after --override, before --keep.
  std::map<std::string, FormatSpec> per_linear;
  // Mixed precision under a budget (pipeline/bit_plan.h): > 0 chooses per_linear by measured
  // sensitivity so that the target linears average at most `bpw` bits per weight.
  double bpw = 0;
  std::vector<calib::Source> calib;              // AWQ inputs
  std::string vit_dir;                           // x2t inputs: the ViT (empty: the checkpoint's vit_model.*)
  vit::X2tSettings x2t;                          // x2t resolutions and frame sampling
  // t2v / image_edit / video_edit inputs, as `calibrate` runs them (calib/calibrate.h): t2v frames (0: 17 or
  // what the model allows), edit sources encoded by the Wan2.2 VAE `vae` at edit_resolution (0: 16 sqrt(h w)
  // of the t2i grid), videos cut to edit_max_frames, with the ViT reference (the ViT of vit_dir or the
  // checkpoint, at edit_vit_resolution, 0: paired with the VAE's) unless edit_without_vit.
  std::string vae;
  int t2v_frames = 0, edit_resolution = 0, edit_max_frames = 17, edit_vit_resolution = 0;
  bool edit_without_vit = false;
  std::string stats_path;                        // proxy / legacy inputs
  bool allow_partial = false, force = false;
  io::DType kept_dtype = io::DType::BF16;
  AwqOptions awq;
  GptqSettings gptq;
  // Forward-based methods: each layer is calibrated on the outputs of the already QUANTIZED layers
  // before it (and GPTQ's steps inside a layer on the quantized earlier steps); false: on the
  // full-precision model's activations.
  bool sequential = true;
  // Evaluation aid: also write DIR/model.safetensors, a dense f32 model computing what the quantized
  // checkpoint computes with every fold undone (W' / (row x column fold scales), original norms), so
  // the forward and per-linear comparisons can load it like the original. Empty = off.
  std::string dense_out;
  // Called after each layer (layer index, layers) for progress display.
  std::function<void(int, int)> on_layer;
  // --vit: the ViT's linears (of vit_dir, else the model's vit_model.*) written 4-bit into the output
  // (pipeline/vit_quantize.h); on_vit_linear(done, total) after each of them.
  bool quantize_vit = false;
  std::function<void(int, int)> on_vit_linear;
};

// Per quantized linear: relative weight error ||W' - W||/||W|| (W' = dequantized, folds undone) and,
// for the searched methods, the chosen scale exponent and clip statistics and the output error on the
// search rows.
struct LinearReport {
  std::string name;
  std::string format;         // number format written, e.g. "int4_asym:g64", "int8_sym:g128", "nvfp4"
  // The method that produced it: the scheme's ("awq", "awq-proxy", "legacy-awq") when the linear's path
  // was calibrated, "rtn" ("legacy-rtn" for legacy-awq) when a partial calibration left it without
  // data (--allow-partial); "rtn" for rtn schemes.
  std::string method;
  bool calibrated = false;    // the search saw calibration data of this linear's path
  double weight_rel_error = 0;
  double alpha = -1;          // -1: no scaling searched; 0 with identity means scales of 1
  bool identity = false;      // AWQ chose the identity candidate
  double mean_clip = 1.0;     // mean clip ratio over groups
  double output_rel_error = -1;  // on the search rows (AWQ), -1 when not measured
  double gptq_damp = -1;         // GPTQ: damping fraction used (-1: not GPTQ)
  int64_t gptq_rows = 0;         // GPTQ: calibration rows of its H
};

struct QuantizeReport {
  std::string scheme, format, out_dir;
  int64_t quantized_linears = 0, kept_linears = 0;
  uint64_t output_bytes = 0;
  double seconds = 0;
  int64_t calib_rows_und = 0, calib_rows_gen = 0;  // AWQ: rows cached per layer (both paths)
  int64_t calib_tokens_und = 0, calib_tokens_gen = 0;  // tokens read from the calibration inputs
  std::vector<std::string> tasks_calibrated;  // calibration input kinds used ("text", "chat", "t2i"); empty for rtn
  bool partial_calibration = false;           // some quantized linears got no calibration data (--allow-partial)
  std::vector<LinearReport> linears;
  nlohmann::json bit_plan;  // --bpw: the plan (BitPlan::to_json), null otherwise
  double setup_seconds = 0;                 // until the first layer starts (calibration rows, --bpw pass)
  std::vector<double> layer_seconds;        // search + quantize + write, per decoder layer
  // --vit: what the ViT became (pipeline/vit_quantize.h: scheme, groups, kept-dense list, bytes before
  // and after, per-linear weight errors); null otherwise.
  nlohmann::json vit;
  nlohmann::json to_json() const;
};

QuantizeReport quantize_model(const QuantizeOptions& options);

// The number format of every target linear, resolved once from the options (see QuantizeOptions for
// the precedence). Searches fake-quantize each linear with params_for(its base name), the same
// parameters that write it.
class LinearFormats {
 public:
  LinearFormats(const model::ModelSpec& spec, const QuantizeOptions& o);
  bool quantized(const std::string& base) const;
  // Throws for a kept linear or a name that is not a target.
  const quant::QuantParams& params_for(const std::string& base) const;
  bool mixed() const { return mixed_; }

 private:
  std::map<std::string, std::optional<quant::QuantParams>> by_base_;  // nullopt: kept in bf16
  bool mixed_ = false;
};

// "int4_asym:g64", "int8_sym:g128", "nvfp4" (the per-linear format in reports).
std::string format_label(const quant::QuantParams& p, int64_t in);

// True when `base` matches a --keep pattern: glob (fnmatch, when it holds * ? or [) or substring.
bool matches_pattern(const std::string& base, const std::string& pattern);

// Refuses outputs (--out, --dense-out) that are, contain or lie inside an input (model, --stats,
// --calib files), an existing directory without --force, and with --force one this tool did not write
// (io/output.h). Run before any slow work.
void check_output_dir(const QuantizeOptions& o);

}  // namespace lq::pipeline
