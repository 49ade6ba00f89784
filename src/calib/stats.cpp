#include "calib/stats.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "io/error.h"
#include "io/safetensors.h"

namespace lq::calib {

int tau_bucket(float tau) { return std::clamp(int(std::floor(tau * kTauBuckets)), 0, kTauBuckets - 1); }

ChannelStats::ChannelStats(int64_t width)
    : sum_abs(size_t(width), 0.0), sum_sq(size_t(width), 0.0), max_abs(size_t(width), 0.0f) {}

void ChannelStats::add_rows(const float* x, int64_t rows, int64_t w) {
  if (width() == 0 && count == 0) *this = ChannelStats(w);
  if (w != width()) fail("calib", "row width " + std::to_string(w) + " does not match statistics width " + std::to_string(width()));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * w;
    for (int64_t c = 0; c < w; ++c) {
      const double v = row[c];
      sum_abs[size_t(c)] += std::fabs(v);
      sum_sq[size_t(c)] += v * v;
      max_abs[size_t(c)] = std::max(max_abs[size_t(c)], std::fabs(row[c]));
    }
  }
  count += rows;
}

void ChannelStats::merge(const ChannelStats& o) {
  if (o.count == 0 && o.width() == 0) return;
  if (count == 0 && width() == 0) { *this = o; return; }
  if (o.width() != width()) fail("calib", "cannot merge statistics of widths " + std::to_string(width()) + " and " + std::to_string(o.width()));
  for (size_t c = 0; c < sum_abs.size(); ++c) {
    sum_abs[c] += o.sum_abs[c];
    sum_sq[c] += o.sum_sq[c];
    max_abs[c] = std::max(max_abs[c], o.max_abs[c]);
  }
  count += o.count;
}

std::vector<float> ChannelStats::mean_abs() const {
  std::vector<float> m(sum_abs.size(), 0.0f);
  if (count) for (size_t c = 0; c < m.size(); ++c) m[c] = float(sum_abs[c] / double(count));
  return m;
}
std::vector<float> ChannelStats::mean_sq() const {
  std::vector<float> m(sum_sq.size(), 0.0f);
  if (count) for (size_t c = 0; c < m.size(); ++c) m[c] = float(sum_sq[c] / double(count));
  return m;
}

void LinearStats::add_rows(const float* x, int64_t rows, int64_t w, float tau, bool hessian) {
  all.add_rows(x, rows, w);
  if (tau >= 0) {
    if (by_tau.empty()) by_tau.assign(kTauBuckets, ChannelStats(w));
    by_tau[size_t(tau_bucket(tau))].add_rows(x, rows, w);
  }
  if (hessian) {
    if (xtx.empty()) xtx.assign(size_t(w * w), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x + r * w;
      for (int64_t i = 0; i < w; ++i) {
        const double xi = row[i];
        double* out = xtx.data() + i * w;
        for (int64_t j = 0; j < w; ++j) out[j] += xi * row[j];
      }
    }
  }
}

void LinearStats::merge(const LinearStats& o) {
  all.merge(o.all);
  if (!o.by_tau.empty()) {
    if (by_tau.empty()) by_tau.assign(kTauBuckets, ChannelStats(o.all.width()));
    for (int b = 0; b < kTauBuckets; ++b) by_tau[size_t(b)].merge(o.by_tau[size_t(b)]);
  }
  if (!o.xtx.empty()) {
    if (xtx.empty()) xtx.assign(o.xtx.size(), 0.0);
    if (xtx.size() != o.xtx.size()) fail("calib", "cannot merge X^T X of different sizes");
    for (size_t i = 0; i < xtx.size(); ++i) xtx[i] += o.xtx[i];
  }
}

std::string digest_hex(const std::string& bytes) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// File layout (safetensors): per linear `<name>.count` I64[1], `.sum_abs` F64[in], `.sum_sq` F64[in],
// `.max_abs` F32[in]; with tau buckets `.tau_count` I64[B], `.tau_sum_abs` F64[B,in], `.tau_sum_sq`
// F64[B,in]; with --hessian `.xtx` F64[in,in]. Metadata: format, model fingerprint, data sources.
namespace {
constexpr const char* kFormat = "lance-quant-stats-v1";

struct Entry {
  std::string name;
  io::DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

template <class T>
Entry make_entry(std::string name, io::DType dt, std::vector<int64_t> shape, const T* data, size_t n) {
  Entry e{std::move(name), dt, std::move(shape), std::vector<uint8_t>(n * sizeof(T))};
  if (n) std::memcpy(e.bytes.data(), data, n * sizeof(T));
  return e;
}
}  // namespace

void StatsFile::save(const std::string& path) const {
  std::map<std::string, std::string> meta = extra_metadata;
  meta["format"] = kFormat;
  meta["model_fingerprint"] = model_fingerprint;
  meta["data_sources"] = nlohmann::json(data_sources).dump();
  meta["tau_buckets"] = std::to_string(kTauBuckets);
  std::vector<Entry> entries;
  for (const auto& [name, s] : linears) {
    const int64_t w = s.all.width();
    entries.push_back(make_entry(name + ".count", io::DType::I64, {1}, &s.all.count, 1));
    entries.push_back(make_entry(name + ".sum_abs", io::DType::F64, {w}, s.all.sum_abs.data(), size_t(w)));
    entries.push_back(make_entry(name + ".sum_sq", io::DType::F64, {w}, s.all.sum_sq.data(), size_t(w)));
    entries.push_back(make_entry(name + ".max_abs", io::DType::F32, {w}, s.all.max_abs.data(), size_t(w)));
    if (!s.by_tau.empty()) {
      std::vector<int64_t> counts;
      std::vector<double> sa, sq;
      for (const auto& b : s.by_tau) {
        counts.push_back(b.count);
        sa.insert(sa.end(), b.sum_abs.begin(), b.sum_abs.end());
        sq.insert(sq.end(), b.sum_sq.begin(), b.sum_sq.end());
      }
      entries.push_back(make_entry(name + ".tau_count", io::DType::I64, {kTauBuckets}, counts.data(), counts.size()));
      entries.push_back(make_entry(name + ".tau_sum_abs", io::DType::F64, {kTauBuckets, w}, sa.data(), sa.size()));
      entries.push_back(make_entry(name + ".tau_sum_sq", io::DType::F64, {kTauBuckets, w}, sq.data(), sq.size()));
    }
    if (!s.xtx.empty()) entries.push_back(make_entry(name + ".xtx", io::DType::F64, {w, w}, s.xtx.data(), s.xtx.size()));
  }
  io::SafetensorsWriter out(path, meta);
  for (const auto& e : entries) out.declare(e.name, e.dtype, e.shape);
  for (const auto& e : entries) out.write(e.bytes.data(), e.bytes.size());
  out.finish();
}

namespace {
template <class T>
std::vector<T> read_as(const io::SafetensorsFile& f, const std::string& name, io::DType want) {
  const auto& t = f.info(name);
  if (t.dtype != want) fail(f.path(), "tensor '" + name + "' has dtype " + io::dtype_name(t.dtype) + ", expected " + io::dtype_name(want));
  auto b = f.bytes(t);
  std::vector<T> v(b.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), b.data(), b.size());
  return v;
}
}  // namespace

StatsFile StatsFile::load(const std::string& path) {
  io::SafetensorsFile f(path);
  const auto& meta = f.metadata();
  auto it = meta.find("format");
  if (it == meta.end() || it->second != kFormat) fail(path, std::string("not a lance-quant statistics file (metadata format != ") + kFormat + ")");
  if (meta.count("tau_buckets") && meta.at("tau_buckets") != std::to_string(kTauBuckets)) fail(path, "unsupported tau bucket count " + meta.at("tau_buckets"));
  StatsFile s;
  s.model_fingerprint = meta.count("model_fingerprint") ? meta.at("model_fingerprint") : "";
  if (meta.count("data_sources")) {
    try {
      s.data_sources = nlohmann::json::parse(meta.at("data_sources")).get<std::vector<std::string>>();
    } catch (const std::exception&) {
      fail(path, "metadata data_sources is not a JSON list of strings");
    }
  }
  for (const auto& [k, v] : meta)
    if (k != "format" && k != "model_fingerprint" && k != "data_sources" && k != "tau_buckets") s.extra_metadata[k] = v;
  const std::string suffix = ".count";
  for (const auto& t : f.tensors()) {
    if (t.name.size() <= suffix.size() || t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string base = t.name.substr(0, t.name.size() - suffix.size());
    LinearStats ls;
    ls.all.count = read_as<int64_t>(f, base + ".count", io::DType::I64).at(0);
    ls.all.sum_abs = read_as<double>(f, base + ".sum_abs", io::DType::F64);
    ls.all.sum_sq = read_as<double>(f, base + ".sum_sq", io::DType::F64);
    ls.all.max_abs = read_as<float>(f, base + ".max_abs", io::DType::F32);
    const size_t w = ls.all.sum_abs.size();
    if (ls.all.sum_sq.size() != w || ls.all.max_abs.size() != w) fail(path, "statistics of '" + base + "' have inconsistent widths");
    if (f.has(base + ".tau_count")) {
      auto counts = read_as<int64_t>(f, base + ".tau_count", io::DType::I64);
      auto sa = read_as<double>(f, base + ".tau_sum_abs", io::DType::F64);
      auto sq = read_as<double>(f, base + ".tau_sum_sq", io::DType::F64);
      if (counts.size() != size_t(kTauBuckets) || sa.size() != w * kTauBuckets || sq.size() != w * kTauBuckets)
        fail(path, "tau statistics of '" + base + "' have the wrong shape");
      for (int b = 0; b < kTauBuckets; ++b) {
        ChannelStats c{int64_t(w)};
        c.count = counts[size_t(b)];
        std::copy_n(sa.begin() + b * w, w, c.sum_abs.begin());
        std::copy_n(sq.begin() + b * w, w, c.sum_sq.begin());
        ls.by_tau.push_back(std::move(c));
      }
    }
    if (f.has(base + ".xtx")) {
      ls.xtx = read_as<double>(f, base + ".xtx", io::DType::F64);
      if (ls.xtx.size() != w * w) fail(path, "X^T X of '" + base + "' has the wrong shape");
    }
    s.linears.emplace(base, std::move(ls));
  }
  return s;
}

void StatsFile::merge(const StatsFile& o, const std::string& other_name) {
  if (model_fingerprint.empty() && linears.empty()) model_fingerprint = o.model_fingerprint;
  if (o.model_fingerprint != model_fingerprint)
    fail(other_name, "statistics are from a different model (fingerprint " + o.model_fingerprint + " vs " + model_fingerprint + ")");
  for (const auto& [name, s] : o.linears) linears[name].merge(s);
  data_sources.insert(data_sources.end(), o.data_sources.begin(), o.data_sources.end());
  std::sort(data_sources.begin(), data_sources.end());
}

}  // namespace lq::calib
