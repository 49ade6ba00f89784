// Writes the evaluation report directory: report.json (machine-readable, every number), report.md
// (for people: what was compared, on which data, how much of it, the results and the worst linears),
// SVG plots (per-linear / per-layer error, velocity error per tau) and, for a toy-VAE model, the
// decoded BASE | QUANT images side by side (PNG).
#pragma once
#include <string>
#include <vector>

#include "eval/evaluate.h"

namespace lq::eval {

struct ReportMeta {
  std::string base_dir, quant_dir;
  EvalData data;
  EvalOptions options;
  int num_layers = 0;
  double seconds = 0;
  bool toy_vae = false;
  fwd::T2iSettings t2i;  // toy VAE scaling
};

// The JSON document written as report.json (keys documented in report.md's appendix).
std::string report_json(const EvalResult& r, const ReportMeta& m);
// Writes report.md, report.json and the images into out_dir (created); returns the written file names.
std::vector<std::string> write_report(const std::string& out_dir, const EvalResult& r, const ReportMeta& m);
}  // namespace lq::eval
