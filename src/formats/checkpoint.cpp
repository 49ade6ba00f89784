// Generic writer and reader over the layout table (format_table.cpp).
#include "formats/checkpoint.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "formats/layout.h"
#include "io/error.h"
#include "io/model_files.h"
#include "num/formats.h"

namespace lq::formats {

namespace fs = std::filesystem;
using json = nlohmann::json;
using detail::Layout;
using detail::layout_of;

const char* format_name(FormatId f) { return layout_of(f).name; }

FormatId parse_format(const std::string& name, const std::string& where) {
  std::string known;
  for (const Layout* l : detail::all_layouts()) {
    if (name == l->name) return l->id;
    known += (known.empty() ? "" : ", ") + std::string(l->name);
  }
  fail(where, "unknown checkpoint format '" + name + "' (" + known + ")");
}

bool format_supports(FormatId f, quant::Scheme s) { return layout_of(f).supports(s); }

// ------------------------------------------------------------------------------------- writer

namespace {

std::string format_of(const LinearDecl& l) {
  if (l.scheme == quant::Scheme::NvFp4) return "nvfp4";
  return std::string(quant::scheme_name(l.scheme)) + " g" + std::to_string(l.group);
}

}  // namespace

void check_plan(FormatId format, const std::vector<PlanEntry>& plan) {
  const Layout& layout = layout_of(format);
  const std::string where = std::string(layout.name) + " writer";
  const LinearDecl* first = nullptr;
  for (const auto& e : plan)  // a mixed plan first: that is the problem to name, not the first unsupported linear
    if (auto* l = std::get_if<LinearDecl>(&e)) {
      if (layout.one_format && first && format_of(*first) != format_of(*l))
        fail(where, std::string(layout.name) + " records one number format per checkpoint, but '" + first->base + "' is " +
                        format_of(*first) + " and '" + l->base + "' is " + format_of(*l) +
                        " (write lance-quant-v1 or compressed-tensors for per-linear formats)");
      if (!first) first = l;
    }
  for (const auto& e : plan) {
    if (auto* l = std::get_if<LinearDecl>(&e)) {
      if (!layout.supports(l->scheme))
        fail(where, std::string(layout.name) + " cannot store " + quant::scheme_name(l->scheme) + " (linear '" + l->base + "')");
      if (l->group <= 0 || l->in % l->group != 0 || (l->scheme == quant::Scheme::NvFp4 && l->group != 16))
        fail(l->base, "group " + std::to_string(l->group) + " does not divide input width " + std::to_string(l->in));
      layout.check(*l);
    } else {
      const auto& p = std::get<PlainDecl>(e);
      if (p.dtype != io::DType::BF16 && p.dtype != io::DType::F32)
        fail(where, "plain tensor '" + p.name + "' must be written as BF16 or F32");
    }
  }
}

struct CheckpointWriter::Impl {
  std::string dir;
  const Layout* layout;
  std::vector<PlanEntry> plan;
  WriterOptions options;
  std::unique_ptr<io::SafetensorsWriter> st;
  size_t next = 0;  // index into plan of the entry to be written next
  bool finished = false;

  const PlanEntry& expect(const std::string& name, bool quantized) {
    if (finished) fail(dir, "write after finish()");
    if (next >= plan.size()) fail(dir, "tensor '" + name + "' was not in the checkpoint plan (or written twice)");
    const PlanEntry& e = plan[next];
    const std::string want = std::holds_alternative<LinearDecl>(e) ? std::get<LinearDecl>(e).base : std::get<PlainDecl>(e).name;
    if (want != name || std::holds_alternative<LinearDecl>(e) != quantized)
      fail(dir, "expected " + std::string(std::holds_alternative<LinearDecl>(e) ? "quantized linear '" : "plain tensor '") +
                    want + "' next (plan order), got '" + name + "'");
    ++next;
    return e;
  }
};

CheckpointWriter::CheckpointWriter(std::string dir, FormatId format, std::vector<PlanEntry> plan, WriterOptions options)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.dir = std::move(dir);
  m.layout = &layout_of(format);
  m.plan = std::move(plan);
  m.options = std::move(options);
  const std::string where = std::string(m.layout->name) + " writer " + m.dir;

  check_plan(format, m.plan);
  fs::create_directories(m.dir);
  const std::string file = m.layout->weights_file(m.plan);
  m.st = std::make_unique<io::SafetensorsWriter>(
      (fs::path(m.dir) / file).string(),
      std::map<std::string, std::string>{{"format", "pt"}, {"producer", "lance-quant"}, {"layout", m.layout->name}});
  for (const auto& e : m.plan) {
    if (auto* l = std::get_if<LinearDecl>(&e)) {
      for (const auto& part : m.layout->parts(*l)) m.st->declare(l->base + part.suffix, part.dtype, part.shape);
      if (l->has_bias) m.st->declare(l->base + ".bias", m.layout->bias_dtype, {l->out});
    } else {
      const auto& p = std::get<PlainDecl>(e);
      m.st->declare(p.name, p.dtype, p.shape);
    }
  }
}

CheckpointWriter::~CheckpointWriter() = default;

const std::string& CheckpointWriter::weights_path() const { return impl_->st->path(); }

void CheckpointWriter::write_quantized(const std::string& base, const quant::QTensor& qt, const float* bias) {
  Impl& m = *impl_;
  const LinearDecl& d = std::get<LinearDecl>(m.expect(base, true));
  qt.validate(base);
  if (qt.scheme != d.scheme || qt.out != d.out || qt.in != d.in || qt.group != d.group)
    fail(base, "quantized tensor (" + std::string(quant::scheme_name(qt.scheme)) + " " + std::to_string(qt.out) + "x" +
                   std::to_string(qt.in) + " g" + std::to_string(qt.group) + ") does not match its declaration");
  if (d.has_bias != (bias != nullptr)) fail(base, d.has_bias ? "declared with a bias but none given" : "bias given but not declared");
  for (const auto& bytes : m.layout->pack(d, qt)) m.st->write(bytes.data(), bytes.size());
  if (!bias) return;
  std::vector<uint16_t> b(size_t(d.out));
  for (int64_t i = 0; i < d.out; ++i)
    b[size_t(i)] = m.layout->bias_dtype == io::DType::F16 ? num::f32_to_f16(bias[i]) : num::f32_to_bf16(bias[i]);
  if (m.layout->bias_dtype == io::DType::F16)
    for (int64_t i = 0; i < d.out; ++i)
      if (std::isinf(num::f16_to_f32(b[size_t(i)])))
        fail(base, "bias value " + std::to_string(bias[i]) + " overflows fp16");
  m.st->write(b.data(), b.size() * 2);
}

void CheckpointWriter::write_plain(const std::string& name, const float* data) {
  Impl& m = *impl_;
  const PlainDecl& p = std::get<PlainDecl>(m.expect(name, false));
  int64_t n = 1;
  for (auto s : p.shape) n *= s;
  if (p.dtype == io::DType::F32) {
    m.st->write(data, size_t(n) * 4);
    return;
  }
  constexpr int64_t kChunk = 1 << 16;  // bounded scratch for large tensors
  std::vector<uint16_t> buf(size_t(std::min(n, kChunk)));
  for (int64_t i = 0; i < n; i += kChunk) {
    const int64_t c = std::min(kChunk, n - i);
    num::f32_to_bf16(data + i, buf.data(), size_t(c));
    m.st->write(buf.data(), size_t(c) * 2);
  }
}

void CheckpointWriter::write_plain_rows(const std::string& name, const RowSource& fill) {
  Impl& m = *impl_;
  const PlainDecl& p = std::get<PlainDecl>(m.expect(name, false));
  const int64_t rows = p.shape.empty() ? 1 : p.shape[0];
  int64_t row_elems = 1;
  for (size_t i = 1; i < p.shape.size(); ++i) row_elems *= p.shape[i];
  constexpr int64_t kChunkElems = 1 << 22;  // 16 MB of f32 scratch
  const int64_t chunk_rows = std::max<int64_t>(1, kChunkElems / std::max<int64_t>(row_elems, 1));
  std::vector<float> f32(size_t(std::min(rows, chunk_rows) * row_elems));
  std::vector<uint16_t> bf16(p.dtype == io::DType::F32 ? 0 : f32.size());
  for (int64_t b = 0; b < rows; b += chunk_rows) {
    const int64_t e = std::min(rows, b + chunk_rows);
    const size_t n = size_t((e - b) * row_elems);
    fill(b, e, f32.data());
    if (p.dtype == io::DType::F32) {
      m.st->write(f32.data(), n * 4);
    } else {
      num::f32_to_bf16(f32.data(), bf16.data(), n);
      m.st->write(bf16.data(), n * 2);
    }
  }
}

void CheckpointWriter::write_plain_bf16(const std::string& name, const uint16_t* data) {
  Impl& m = *impl_;
  const PlainDecl& p = std::get<PlainDecl>(m.expect(name, false));
  if (p.dtype != io::DType::BF16) fail(name, "declared as F32 but written from bf16 data");
  int64_t n = 1;
  for (auto s : p.shape) n *= s;
  m.st->write(data, size_t(n) * 2);
}

void CheckpointWriter::set_linear_method(const std::string& base, const std::string& method) {
  impl_->options.linear_methods[base] = method;
}

void CheckpointWriter::merge_extra_meta(const json& extra) { impl_->options.extra_meta.update(extra); }

void CheckpointWriter::finish() {
  Impl& m = *impl_;
  if (m.next != m.plan.size()) {
    const auto& e = m.plan[m.next];
    fail(m.dir, "finish() before writing '" +
                    (std::holds_alternative<LinearDecl>(e) ? std::get<LinearDecl>(e).base : std::get<PlainDecl>(e).name) + "'");
  }
  m.st->finish();
  for (const auto& [file, content] : m.layout->configs(m.plan, m.options)) {
    const fs::path path = fs::path(m.dir) / file;
    const std::string tmp = path.string() + ".tmp." + std::to_string(::getpid());
    {
      std::ofstream os(tmp, std::ios::trunc);
      os << content.dump(2) << "\n";
      if (!os.flush()) fail(tmp, "cannot write");
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) fail(path.string(), "rename failed: " + ec.message());
  }
  m.finished = true;
}

// ------------------------------------------------------------------------------------- reader

FormatId detect_format(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) fail(dir, "does not exist");
  if (!fs::is_directory(dir, ec)) fail(dir, "not a directory");
  for (const Layout* l : detail::all_layouts())
    if (l->detect(dir)) return l->id;
  fail(dir, "not a quantized checkpoint: no awq_meta.json / nvfp4_meta.json (lance-quant-v1), hf_quant_config.json "
            "(modelopt) or config.json with quantization_config quant_method awq / compressed-tensors");
}

struct CheckpointReader::Impl {
  const Layout* layout;
  json config;
  std::unique_ptr<io::SafetensorsFile> file;
  std::vector<LinearDecl> linears;
  std::map<std::string, size_t> index;
  std::set<std::string> owned;  // tensor names that belong to quantized linears
};

namespace {

// Every field a reader took from the file or config, checked before anything is sized by it: positive
// dimensions that keep every product inside 64 bits, a group that divides the input width, and what
// the layout itself requires (its writer-side check: even widths for nibble pairs, bf16 scales, ...).
void validate_decl(const Layout& layout, const LinearDecl& d, const std::string& file) {
  const std::string where = file + ": " + d.base;
  constexpr int64_t kMaxWidth = int64_t(1) << 31;
  if (d.out < 1 || d.in < 1 || d.out >= kMaxWidth || d.in >= kMaxWidth)
    fail(where, "quantized linear has shape [" + std::to_string(d.out) + ", " + std::to_string(d.in) + "]; both must be in [1, 2^31)");
  if (d.group < 1 || d.in % d.group != 0)
    fail(where, "group size " + std::to_string(d.group) + " does not divide the input width " + std::to_string(d.in));
  if (d.scheme == quant::Scheme::NvFp4 && d.group != 16) fail(where, "nvfp4 needs blocks of 16, got " + std::to_string(d.group));
  try {
    layout.check(d);
  } catch (const Error& e) {
    fail(where, std::string("cannot be a ") + layout.name + " linear: " + e.what());
  }
}

// Every stored part exists with the dtype and shape the layout gives it, and so does the bias.
// (Scalar parts may be stored as [] or [1]; compressed-tensors' weight_shape as I64 or I32.)
void check_parts(const Layout& layout, const io::SafetensorsFile& f, const LinearDecl& d) {
  for (const auto& p : layout.parts(d)) {
    const std::string name = d.base + p.suffix;
    if (!f.has(name)) fail(f.path(), "quantized linear '" + d.base + "' has no tensor '" + name + "'");
    const io::TensorInfo& t = f.info(name);
    const bool shape_tensor = p.suffix == ".weight_shape";
    const bool dtype_ok = t.dtype == p.dtype || (shape_tensor && t.dtype == io::DType::I32);
    if (!dtype_ok)
      fail(f.path(), "tensor '" + name + "' has dtype " + io::dtype_name(t.dtype) + ", expected " + io::dtype_name(p.dtype) +
                         " (" + layout.name + ")");
    const bool scalar = p.shape.empty() || p.shape == std::vector<int64_t>{1};
    const bool shape_ok = scalar ? t.numel() == 1 : shape_tensor ? t.numel() == 2 : t.shape == p.shape;
    if (!shape_ok) {
      auto join = [](const std::vector<int64_t>& shape) {
        std::string s;
        for (auto x : shape) {
          if (!s.empty()) s += ',';
          s += std::to_string(x);
        }
        return s;
      };
      const std::string got = join(t.shape), want = join(p.shape);
      fail(f.path(), "tensor '" + name + "' has shape [" + got + "], expected [" + want + "]");
    }
  }
  if (d.has_bias) {
    const io::TensorInfo& b = f.info(d.base + ".bias");
    if (b.dtype != io::DType::BF16 && b.dtype != io::DType::F16 && b.dtype != io::DType::F32)
      fail(f.path(), "tensor '" + d.base + ".bias' has dtype " + io::dtype_name(b.dtype) + ", expected a float dtype");
    if (b.shape != std::vector<int64_t>{d.out})
      fail(f.path(), "tensor '" + d.base + ".bias' must have shape [" + std::to_string(d.out) + "]");
  }
}

}  // namespace

CheckpointReader::CheckpointReader(const std::string& dir) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.layout = &layout_of(detect_format(dir));
  m.config = m.layout->load_config(dir);
  std::string path;
  // The file a plan of INT4 linears / of NVFP4 linears is written to (they differ for lance-quant-v1).
  const std::vector<PlanEntry> int4_plan = {LinearDecl{}}, nvfp4_plan = {LinearDecl{"", quant::Scheme::NvFp4}};
  for (const auto* plan : {&int4_plan, &nvfp4_plan})
    if (path.empty()) path = io::model_file(dir, m.layout->weights_file(*plan));  // the symlink rule applies
  if (path.empty()) fail(dir, std::string("no weights file for format ") + m.layout->name);
  m.file = std::make_unique<io::SafetensorsFile>(path);
  const std::string marker = m.layout->marker;
  for (const auto& t : m.file->tensors()) {
    if (!t.name.ends_with(marker)) continue;
    const std::string base = t.name.substr(0, t.name.size() - marker.size());
    LinearDecl d = m.layout->describe(*m.file, m.config, base);
    validate_decl(*m.layout, d, m.file->path());
    check_parts(*m.layout, *m.file, d);
    if (m.index.count(base)) fail(m.file->path(), "quantized linear '" + base + "' appears twice");
    m.index[base] = m.linears.size();
    for (const auto& p : m.layout->parts(d)) m.owned.insert(base + p.suffix);
    if (d.has_bias) m.owned.insert(base + ".bias");
    m.linears.push_back(std::move(d));
  }
}

CheckpointReader::~CheckpointReader() = default;
FormatId CheckpointReader::format() const { return impl_->layout->id; }
const std::vector<LinearDecl>& CheckpointReader::quantized_linears() const { return impl_->linears; }
bool CheckpointReader::is_quantized(const std::string& base) const { return impl_->index.count(base) > 0; }
const io::SafetensorsFile& CheckpointReader::file() const { return *impl_->file; }
const json& CheckpointReader::config() const { return impl_->config; }

quant::QTensor CheckpointReader::read_quantized(const std::string& base) const {
  auto it = impl_->index.find(base);
  if (it == impl_->index.end()) fail(impl_->file->path(), "no quantized linear '" + base + "'");
  quant::QTensor q = impl_->layout->unpack(*impl_->file, impl_->linears[it->second]);
  q.validate(impl_->file->path() + ": " + base);
  return q;
}

std::optional<std::vector<float>> CheckpointReader::read_bias(const std::string& base) const {
  if (!impl_->file->has(base + ".bias")) return std::nullopt;
  return impl_->file->read_f32(base + ".bias");
}

std::vector<std::string> CheckpointReader::plain_names() const {
  std::vector<std::string> v;
  for (const auto& t : impl_->file->tensors())
    if (!impl_->owned.count(t.name)) v.push_back(t.name);
  return v;
}

std::vector<float> CheckpointReader::read_plain(const std::string& name) const { return impl_->file->read_f32(name); }

}  // namespace lq::formats
