#include "formats/fold_scales.h"

#include <filesystem>

#include "io/error.h"
#include "io/model_files.h"
#include "io/safetensors.h"

namespace lq::formats {

namespace fs = std::filesystem;

namespace {
constexpr const char* kCol = ".col_scale";
constexpr const char* kRow = ".row_scale";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

void write_fold_scales(const std::string& dir, const FoldScaleMap& scales) {
  if (scales.empty()) return;
  io::SafetensorsWriter w((fs::path(dir) / kFoldScalesFile).string(), {{"content", "lance-quant AWQ fold scales"}});
  for (const auto& [base, s] : scales) {
    if (!s.col.empty()) w.declare(base + kCol, io::DType::F32, {int64_t(s.col.size())});
    if (!s.row.empty()) w.declare(base + kRow, io::DType::F32, {int64_t(s.row.size())});
  }
  for (const auto& [base, s] : scales) {
    if (!s.col.empty()) w.write(s.col.data(), s.col.size() * sizeof(float));
    if (!s.row.empty()) w.write(s.row.data(), s.row.size() * sizeof(float));
  }
  w.finish();
}

FoldScaleMap read_fold_scales(const std::string& dir) {
  FoldScaleMap out;
  const std::string file = io::model_file(dir, kFoldScalesFile);  // the symlink rule (io/model_files.h)
  if (file.empty()) return out;
  const fs::path p(file);
  const io::SafetensorsFile f(p.string());
  for (const auto& info : f.tensors()) {
    const std::string& n = info.name;
    if (info.shape.size() != 1) fail(p.string(), "tensor " + n + ": expected a 1-D scale vector");
    if (ends_with(n, kCol)) out[n.substr(0, n.size() - std::string(kCol).size())].col = f.read_f32(n);
    else if (ends_with(n, kRow)) out[n.substr(0, n.size() - std::string(kRow).size())].row = f.read_f32(n);
    else fail(p.string(), "unexpected tensor " + n + " (expected <linear>.col_scale / <linear>.row_scale)");
  }
  return out;
}

}  // namespace lq::formats
