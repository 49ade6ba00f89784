#include "io/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/error.h"
#include "num/formats.h"

namespace lq::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
struct DTypeRow {
  DType type;
  const char* name;
  size_t size;
};
// Table of every dtype the container defines.
constexpr DTypeRow kDTypes[] = {
    {DType::F64, "F64", 8},   {DType::F32, "F32", 4},         {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
    {DType::I64, "I64", 8},   {DType::I32, "I32", 4},         {DType::I16, "I16", 2},
    {DType::I8, "I8", 1},     {DType::U8, "U8", 1},           {DType::BOOL, "BOOL", 1},
};
constexpr uint64_t kMaxHeader = 100ull << 20;  // same bound as the reference implementation
}  // namespace

size_t dtype_size(DType t) {
  for (const auto& r : kDTypes) if (r.type == t) return r.size;
  return 0;
}
const char* dtype_name(DType t) {
  for (const auto& r : kDTypes) if (r.type == t) return r.name;
  return "?";
}
DType parse_dtype(const std::string& name, const std::string& where) {
  for (const auto& r : kDTypes) if (name == r.name) return r.type;
  fail(where, "unknown dtype '" + name + "'");
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}
int64_t TensorInfo::row_elems() const {
  int64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
  return n;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : map_(path) {
  const size_t size = map_.size();
  if (size < 8) fail(path, "file too short for a safetensors header (" + std::to_string(size) + " bytes)");
  uint64_t n = 0;
  std::memcpy(&n, map_.data(), 8);  // little-endian hosts only
  if (n > kMaxHeader) fail(path, "header length " + std::to_string(n) + " exceeds the 100 MiB limit");
  if (n > size - 8) fail(path, "header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(size) + " bytes)");
  data_offset_ = 8 + n;
  json h;
  try {
    h = json::parse(map_.data() + 8, map_.data() + 8 + n);
  } catch (const json::exception& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!h.is_object()) fail(path, "header is not a JSON object");
  const uint64_t data_size = size - data_offset_;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const std::string where = path + ": tensor '" + name + "'";
    if (name == "__metadata__") {
      if (!it->is_object()) fail(where, "__metadata__ must be an object of strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) fail(where, "__metadata__ value for '" + m.key() + "' is not a string");
        metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const json& e = *it;
    if (!e.is_object()) fail(where, "entry is not an object");
    if (!e.contains("dtype") || !e["dtype"].is_string()) fail(where, "missing or non-string 'dtype'");
    if (!e.contains("shape") || !e["shape"].is_array()) fail(where, "missing or non-array 'shape'");
    if (!e.contains("data_offsets") || !e["data_offsets"].is_array() || e["data_offsets"].size() != 2)
      fail(where, "'data_offsets' must be an array of two integers");
    TensorInfo t;
    t.name = name;
    t.dtype = parse_dtype(e["dtype"].get<std::string>(), where);
    unsigned __int128 elems = 1;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_unsigned()) fail(where, "shape has a negative or non-integer dimension");
      uint64_t v = d.get<uint64_t>();
      t.shape.push_back(int64_t(v));
      elems *= v;
      if (elems > (unsigned __int128)data_size) elems = (unsigned __int128)data_size + 1;  // clamp; mismatch caught below
    }
    for (const auto& o : e["data_offsets"])
      if (!o.is_number_unsigned()) fail(where, "data_offsets must be non-negative integers");
    t.begin = e["data_offsets"][0].get<uint64_t>();
    t.end = e["data_offsets"][1].get<uint64_t>();
    if (t.begin > t.end) fail(where, "data_offsets begin " + std::to_string(t.begin) + " > end " + std::to_string(t.end));
    if (t.end > data_size)
      fail(where, "data_offsets end " + std::to_string(t.end) + " is past the data section (" + std::to_string(data_size) + " bytes; file truncated?)");
    unsigned __int128 want = elems * dtype_size(t.dtype);
    if (want != (unsigned __int128)(t.end - t.begin))
      fail(where, "shape/dtype imply " + std::to_string((uint64_t)want) + " bytes but data_offsets span " + std::to_string(t.end - t.begin));
    tensors_.push_back(std::move(t));
  }
  std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (i > 0 && tensors_[i].begin < tensors_[i - 1].end)
      fail(path + ": tensor '" + tensors_[i].name + "'", "data overlaps tensor '" + tensors_[i - 1].name + "'");
    index_[tensors_[i].name] = i;
  }
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail(path(), "no tensor named '" + name + "'");
  return tensors_[it->second];
}

std::span<const uint8_t> SafetensorsFile::bytes(const TensorInfo& t) const {
  return {map_.data() + data_offset_ + t.begin, size_t(t.end - t.begin)};
}

namespace {
void check_rows(const std::string& file, const TensorInfo& t, int64_t b, int64_t e) {
  if (b < 0 || e < b || e > t.rows())
    fail(file + ": tensor '" + t.name + "'", "row range [" + std::to_string(b) + ", " + std::to_string(e) + ") out of [0, " + std::to_string(t.rows()) + ")");
}
}  // namespace

void SafetensorsFile::read_rows_f32(const TensorInfo& t, int64_t b, int64_t e, float* out) const {
  check_rows(path(), t, b, e);
  const size_t n = size_t((e - b) * t.row_elems());
  const uint8_t* src = map_.data() + data_offset_ + t.begin + size_t(b * t.row_elems()) * dtype_size(t.dtype);
  switch (t.dtype) {
    case DType::F32: std::memcpy(out, src, n * 4); break;
    case DType::BF16: num::bf16_to_f32(reinterpret_cast<const uint16_t*>(src), out, n); break;
    case DType::F16: num::f16_to_f32(reinterpret_cast<const uint16_t*>(src), out, n); break;
    default: fail(path() + ": tensor '" + t.name + "'", std::string("cannot convert dtype ") + dtype_name(t.dtype) + " to f32");
  }
}

void SafetensorsFile::read_rows_bf16(const TensorInfo& t, int64_t b, int64_t e, uint16_t* out) const {
  check_rows(path(), t, b, e);
  const size_t n = size_t((e - b) * t.row_elems());
  const uint8_t* src = map_.data() + data_offset_ + t.begin + size_t(b * t.row_elems()) * dtype_size(t.dtype);
  switch (t.dtype) {
    case DType::BF16: std::memcpy(out, src, n * 2); break;
    case DType::F32: num::f32_to_bf16(reinterpret_cast<const float*>(src), out, n); break;
    case DType::F16: {
      std::vector<float> tmp(n);
      num::f16_to_f32(reinterpret_cast<const uint16_t*>(src), tmp.data(), n);
      num::f32_to_bf16(tmp.data(), out, n);
      break;
    }
    default: fail(path() + ": tensor '" + t.name + "'", std::string("cannot convert dtype ") + dtype_name(t.dtype) + " to bf16");
  }
}

std::vector<float> SafetensorsFile::read_f32(const std::string& name) const {
  const TensorInfo& t = info(name);
  std::vector<float> out(size_t(t.numel()));
  read_rows_f32(t, 0, t.rows(), out.data());
  return out;
}

void SafetensorsFile::drop(const TensorInfo& t) const { map_.drop(data_offset_ + t.begin, t.end - t.begin); }

// ---------------------------------------------------------------------------------------------
TensorStore::TensorStore(const std::string& path) : path_(path) {
  fs::path p(path);
  std::vector<std::string> shard_files;
  if (fs::is_directory(p)) {
    if (fs::exists(p / "model.safetensors.index.json")) {
      p /= "model.safetensors.index.json";
    } else if (fs::exists(p / "model.safetensors")) {
      p /= "model.safetensors";
    } else {
      fail(path, "directory has neither model.safetensors nor model.safetensors.index.json");
    }
  }
  if (p.extension() == ".json") {
    std::ifstream in(p);
    if (!in) fail(p.string(), "cannot open index");
    json idx;
    try {
      idx = json::parse(in);
    } catch (const json::exception& e) {
      fail(p.string(), std::string("index is not valid JSON: ") + e.what());
    }
    if (!idx.contains("weight_map") || !idx["weight_map"].is_object()) fail(p.string(), "index has no 'weight_map' object");
    std::map<std::string, size_t> file_ids;
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      if (!it->is_string()) fail(p.string(), "weight_map entry for '" + it.key() + "' is not a file name");
      std::string f = it->get<std::string>();
      if (!file_ids.count(f)) {
        file_ids[f] = files_.size();
        files_.push_back(std::make_unique<SafetensorsFile>((p.parent_path() / f).string()));
      }
      const auto& sf = *files_[file_ids[f]];
      if (!sf.has(it.key())) fail(sf.path(), "index lists tensor '" + it.key() + "' but the shard does not contain it");
      where_[it.key()] = file_ids[f];
    }
    for (size_t i = 0; i < files_.size(); ++i)
      for (const auto& t : files_[i]->tensors())
        if (!where_.count(t.name)) fail(files_[i]->path(), "tensor '" + t.name + "' is not listed in the index");
  } else {
    files_.push_back(std::make_unique<SafetensorsFile>(p.string()));
    for (const auto& t : files_[0]->tensors()) where_[t.name] = 0;
  }
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : where_) out.push_back(k);
  return out;
}
const SafetensorsFile& TensorStore::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(path_, "no tensor named '" + name + "'");
  return *files_[it->second];
}
const TensorInfo& TensorStore::info(const std::string& name) const { return file_of(name).info(name); }
std::vector<float> TensorStore::read_f32(const std::string& name) const { return file_of(name).read_f32(name); }
void TensorStore::read_rows_f32(const std::string& name, int64_t b, int64_t e, float* out) const {
  const auto& f = file_of(name);
  f.read_rows_f32(f.info(name), b, e, out);
}
void TensorStore::read_rows_bf16(const std::string& name, int64_t b, int64_t e, uint16_t* out) const {
  const auto& f = file_of(name);
  f.read_rows_bf16(f.info(name), b, e, out);
}
uint64_t TensorStore::total_tensor_bytes() const {
  uint64_t s = 0;
  for (const auto& f : files_)
    for (const auto& t : f->tensors()) s += t.end - t.begin;
  return s;
}

// ---------------------------------------------------------------------------------------------
SafetensorsWriter::SafetensorsWriter(std::string path, std::map<std::string, std::string> metadata)
    : path_(std::move(path)), metadata_(std::move(metadata)) {
  tmp_path_ = path_ + ".tmp." + std::to_string(::getpid());
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!finished_) ::unlink(tmp_path_.c_str());
}

void SafetensorsWriter::declare(const std::string& name, DType dtype, std::vector<int64_t> shape) {
  if (started_) fail(path_, "cannot declare tensor '" + name + "' after writing started");
  for (const auto& t : tensors_)
    if (t.name == name) fail(path_, "duplicate tensor '" + name + "'");
  TensorInfo t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.begin = tensors_.empty() ? 0 : tensors_.back().end;
  t.end = t.begin + uint64_t(t.numel()) * dtype_size(dtype);
  tensors_.push_back(std::move(t));
}

namespace {
void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(path, std::string("write failed: ") + std::strerror(errno));
    }
    p += w;
    n -= size_t(w);
  }
}
}  // namespace

void SafetensorsWriter::begin_data() {
  json h = json::object();
  if (!metadata_.empty()) h["__metadata__"] = metadata_;
  for (const auto& t : tensors_)
    h[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}};
  std::string s = h.dump();
  while ((8 + s.size()) % 8 != 0) s.push_back(' ');  // data section 8-byte aligned
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(tmp_path_, std::string("cannot create: ") + std::strerror(errno));
  uint64_t n = s.size();
  write_all(fd_, &n, 8, tmp_path_);
  write_all(fd_, s.data(), s.size(), tmp_path_);
  started_ = true;
  current_ = 0;
  written_in_current_ = 0;
}

void SafetensorsWriter::write(const void* data, size_t nbytes) {
  if (!started_) begin_data();
  while (nbytes > 0) {
    if (current_ >= tensors_.size()) fail(path_, "more bytes written than the declared tensors hold");
    const TensorInfo& t = tensors_[current_];
    uint64_t room = (t.end - t.begin) - written_in_current_;
    size_t n = size_t(std::min<uint64_t>(room, nbytes));
    write_all(fd_, data, n, tmp_path_);
    data = static_cast<const uint8_t*>(data) + n;
    nbytes -= n;
    written_in_current_ += n;
    if (written_in_current_ == t.end - t.begin) {
      ++current_;
      written_in_current_ = 0;
    }
  }
}

void SafetensorsWriter::finish() {
  if (!started_) begin_data();
  while (current_ < tensors_.size() && tensors_[current_].end == tensors_[current_].begin) ++current_;
  if (current_ != tensors_.size())
    fail(path_, "tensor '" + tensors_[current_].name + "' was declared but not completely written");
  if (::fsync(fd_) != 0) fail(tmp_path_, std::string("fsync failed: ") + std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0)
    fail(path_, std::string("rename failed: ") + std::strerror(errno));
  finished_ = true;
}

}  // namespace lq::io
