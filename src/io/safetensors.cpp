#include "io/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "io/error.h"
#include "io/model_files.h"
#include "io/signals.h"
#include "num/formats.h"

namespace lq::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Tensor data is little-endian in the file and is handed out as host values without swapping.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

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
    {DType::U16, "U16", 2},   {DType::U32, "U32", 4},         {DType::U64, "U64", 8},
};
constexpr char kMetadataKey[] = "__metadata__";
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

// ---------------------------------------------------------------------------------------------
// JSON with duplicate keys rejected. nlohmann (like most parsers) silently keeps the last copy of
// a repeated key, while other readers keep the first: a file whose tensors mean different things
// to different tools must be refused. The same pass bounds the nesting depth so that hostile input
// cannot build a pathologically deep document.
namespace {
constexpr int kMaxJsonDepth = 16;  // a safetensors header needs 3, an index 2

std::string quoted_path(const std::vector<std::string>& keys) {
  std::string s;
  for (const auto& k : keys) s += (s.empty() ? "'" : ".'") + k + "'";
  return s;
}

// `where` prefixes errors; `last_top_key` (optional) receives the most recent top-level key, so
// that a syntax error can say which tensor it follows.
json parse_json_strict(const char* begin, const char* end, const std::string& where,
                       std::string* last_top_key) {
  struct Level {
    bool is_object;
    std::set<std::string> keys;
    std::string key;  // the key whose value is being parsed
  };
  std::vector<Level> stack;
  auto key_path = [&stack] {
    std::vector<std::string> keys;
    for (const auto& l : stack) if (l.is_object) keys.push_back(l.key);
    return keys;
  };
  json::parser_callback_t on_event = [&](int, json::parse_event_t ev, json& parsed) {
    using E = json::parse_event_t;
    if (ev == E::object_start || ev == E::array_start) {
      if (int(stack.size()) >= kMaxJsonDepth)
        fail(where, "JSON nests deeper than " + std::to_string(kMaxJsonDepth) + " levels at " + quoted_path(key_path()));
      stack.push_back({ev == E::object_start, {}, {}});
    } else if (ev == E::object_end || ev == E::array_end) {
      if (!stack.empty()) stack.pop_back();
    } else if (ev == E::key && !stack.empty()) {
      Level& top = stack.back();
      top.key = parsed.get<std::string>();
      if (!top.keys.insert(top.key).second)
        fail(where, "duplicate key " + quoted_path(key_path()) + " (JSON readers disagree on which copy wins)");
      if (stack.size() == 1 && last_top_key) *last_top_key = top.key;
    }
    return true;
  };
  try {
    return json::parse(begin, end, on_event);
  } catch (const json::exception& e) {
    std::string after = last_top_key && !last_top_key->empty() ? " (after key '" + *last_top_key + "')" : "";
    fail(where, "invalid JSON" + after + ": " + e.what());
  }
}

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string shape_string(const json& shape) {
  std::string s = shape.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

// Parses one tensor entry of the header; `where` names the file and tensor.
TensorInfo parse_tensor_entry(const std::string& name, const json& e, const std::string& where) {
  if (!e.is_object()) fail(where, std::string("entry is a JSON ") + e.type_name() + ", expected an object");
  auto field = [&](const char* key) -> const json& {
    auto it = e.find(key);
    if (it == e.end()) fail(where, std::string("missing field '") + key + "'");
    return *it;
  };
  const json& dtype = field("dtype");
  const json& shape = field("shape");
  const json& offsets = field("data_offsets");
  if (!dtype.is_string()) fail(where, std::string("field 'dtype' is a JSON ") + dtype.type_name() + ", expected a string");
  if (!shape.is_array()) fail(where, std::string("field 'shape' is a JSON ") + shape.type_name() + ", expected an array");
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
    fail(where, "field 'data_offsets' must be an array of two non-negative integers, got " + shape_string(offsets));

  TensorInfo t;
  t.name = name;
  t.dtype = parse_dtype(dtype.get<std::string>(), where + ": field 'dtype'");
  // Element and byte counts in checked 64-bit arithmetic, as the reference implementation does:
  // a product that overflows is an error even when a later dimension is zero.
  uint64_t elems = 1;
  for (const auto& d : shape) {
    if (!d.is_number_unsigned()) fail(where, "field 'shape' " + shape_string(shape) + " has a negative or non-integer dimension");
    const uint64_t v = d.get<uint64_t>();
    if (v > uint64_t(std::numeric_limits<int64_t>::max()) || __builtin_mul_overflow(elems, v, &elems) ||
        elems > uint64_t(std::numeric_limits<int64_t>::max()))
      fail(where, "field 'shape' " + shape_string(shape) + ": element count overflows 64 bits");
    t.shape.push_back(int64_t(v));
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(elems, uint64_t(dtype_size(t.dtype)), &nbytes))
    fail(where, "field 'shape' " + shape_string(shape) + ": byte count overflows 64 bits");
  t.begin = offsets[0].get<uint64_t>();
  t.end = offsets[1].get<uint64_t>();
  if (t.begin > t.end)
    fail(where, "field 'data_offsets': begin " + std::to_string(t.begin) + " > end " + std::to_string(t.end));
  if (nbytes != t.end - t.begin)
    fail(where, "shape " + shape_string(shape) + " x " + dtype_name(t.dtype) + " is " + std::to_string(nbytes) +
                    " bytes but field 'data_offsets' spans " + std::to_string(t.end - t.begin));
  return t;
}

std::map<std::string, std::string> parse_metadata(const json& m, const std::string& where) {
  if (!m.is_object()) fail(where, std::string("is a JSON ") + m.type_name() + ", expected an object of strings");
  std::map<std::string, std::string> out;
  for (auto it = m.begin(); it != m.end(); ++it) {
    if (!it->is_string()) fail(where + ": key '" + it.key() + "'", std::string("value is a JSON ") + it->type_name() + ", expected a string");
    out[it.key()] = it->get<std::string>();
  }
  return out;
}

// The reference implementation requires the tensors, in offset order, to tile the data section
// exactly: the first starts at 0, each starts where the previous ended, the last ends at the end of
// the file. Overlaps would alias tensors, and gaps or trailing bytes hide data no reader checks.
void check_tiling(std::vector<TensorInfo>& tensors, uint64_t data_size, const std::string& file) {
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  const TensorInfo* prev = nullptr;
  for (const auto& t : tensors) {
    const std::string where = file + ": tensor '" + t.name + "'";
    if (t.end > data_size)
      fail(where, "field 'data_offsets' [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                      ") runs past the data section (" + std::to_string(data_size) + " bytes): file truncated?");
    if (t.begin < expected)
      fail(where, "data [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + ") overlaps tensor '" + prev->name + "'");
    if (t.begin > expected)
      fail(where, "data starts at " + std::to_string(t.begin) + ", leaving a gap of " + std::to_string(t.begin - expected) +
                      " bytes after " + (prev ? "tensor '" + prev->name + "'" : std::string("the start of the data section")));
    expected = t.end;
    prev = &t;
  }
  if (expected != data_size)
    fail(file + ": data section", std::to_string(data_size - expected) + " trailing bytes after " +
                                      (prev ? "tensor '" + prev->name + "'" : std::string("the header")) +
                                      " are not covered by any tensor");
}
}  // namespace

SafetensorsHeader SafetensorsFile::parse_header(const uint8_t* data, size_t size, const std::string& name) {
  const std::string where_len = name + ": header length";
  if (size < 8) fail(where_len, "file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  const uint64_t n = read_le64(data);
  if (n > kMaxSafetensorsHeader)
    fail(where_len, std::to_string(n) + " exceeds the limit of " + std::to_string(kMaxSafetensorsHeader) + " bytes");
  if (n > size - 8)
    fail(where_len, std::to_string(n) + " runs past the end of the file (" + std::to_string(size) + " bytes)");
  const std::string where = name + ": header";
  const char* text = reinterpret_cast<const char*>(data + 8);
  if (n == 0 || text[0] != '{') fail(where, "does not start with '{' (not a safetensors file?)");

  std::string last_tensor;
  const json h = parse_json_strict(text, text + n, where, &last_tensor);
  if (!h.is_object()) fail(where, "is not a JSON object");

  SafetensorsHeader out;
  out.data_offset = size_t(8 + n);
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == kMetadataKey) {
      out.metadata = parse_metadata(*it, name + ": " + kMetadataKey);
      continue;
    }
    out.tensors.push_back(parse_tensor_entry(it.key(), *it, name + ": tensor '" + it.key() + "'"));
  }
  check_tiling(out.tensors, size - out.data_offset, name);
  return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : map_(path) {
  SafetensorsHeader h = parse_header(map_.data(), map_.size(), path);
  data_offset_ = h.data_offset;
  tensors_ = std::move(h.tensors);
  metadata_ = std::move(h.metadata);
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail(path() + ": tensor '" + name + "'", "no such tensor in the file");
  return tensors_[it->second];
}

std::string SafetensorsFile::where(const TensorInfo& t) const { return path() + ": tensor '" + t.name + "'"; }

const uint8_t* SafetensorsFile::tensor_data(const TensorInfo& t, int64_t row_begin) const {
  // A TensorInfo taken from another file must not become a read outside this mapping.
  if (t.end > map_.size() - data_offset_) fail(where(t), "does not belong to this file (offsets past its data section)");
  return map_.data() + data_offset_ + t.begin + uint64_t(row_begin) * uint64_t(t.row_elems()) * dtype_size(t.dtype);
}

std::span<const uint8_t> SafetensorsFile::bytes(const TensorInfo& t) const {
  return {map_.data() + data_offset_ + t.begin, size_t(t.nbytes())};
}

namespace {
constexpr size_t kChunk = 4096;  // elements converted per step through a stack buffer

void check_rows(const std::string& where, const TensorInfo& t, int64_t b, int64_t e) {
  if (b < 0 || e < b || e > t.rows())
    fail(where, "row range [" + std::to_string(b) + ", " + std::to_string(e) + ") is outside [0, " + std::to_string(t.rows()) + ")");
}

// Runs convert(const Src*, Dst*, count) over n elements at `src`. The data section starts at 8 +
// header length, which files from other writers need not align, so a misaligned source is copied
// through an aligned buffer instead of being dereferenced as Src*.
template <typename Src, typename Dst, typename Convert>
void convert_from(const uint8_t* src, Dst* out, size_t n, Convert convert) {
  if (reinterpret_cast<uintptr_t>(src) % alignof(Src) == 0) {
    convert(reinterpret_cast<const Src*>(src), out, n);
    return;
  }
  std::array<Src, kChunk> buf;
  for (size_t i = 0; i < n; i += kChunk) {
    const size_t m = std::min(kChunk, n - i);
    std::memcpy(buf.data(), src + i * sizeof(Src), m * sizeof(Src));
    convert(buf.data(), out + i, m);
  }
}

// (n may be 0 with null pointers: an empty row range of an empty vector; memcpy must not see them.)
void copy_f32(const float* s, float* d, size_t n) {
  if (n) std::memcpy(d, s, n * sizeof(float));
}
void copy_u16(const uint16_t* s, uint16_t* d, size_t n) {
  if (n) std::memcpy(d, s, n * sizeof(uint16_t));
}
void f16_to_bf16(const uint16_t* s, uint16_t* d, size_t n) {
  std::array<float, kChunk> f;
  for (size_t i = 0; i < n; i += kChunk) {
    const size_t m = std::min(kChunk, n - i);
    num::f16_to_f32(s + i, f.data(), m);  // exact: every f16 is an f32
    num::f32_to_bf16(f.data(), d + i, m);
  }
}
}  // namespace

void SafetensorsFile::read_rows_f32(const TensorInfo& t, int64_t b, int64_t e, float* out) const {
  check_rows(where(t), t, b, e);
  const size_t n = size_t((e - b) * t.row_elems());
  const uint8_t* src = tensor_data(t, b);
  switch (t.dtype) {
    case DType::F32: convert_from<float>(src, out, n, copy_f32); break;
    case DType::BF16: convert_from<uint16_t>(src, out, n, [](const uint16_t* s, float* d, size_t m) { num::bf16_to_f32(s, d, m); }); break;
    case DType::F16: convert_from<uint16_t>(src, out, n, [](const uint16_t* s, float* d, size_t m) { num::f16_to_f32(s, d, m); }); break;
    default: fail(where(t), std::string("cannot convert dtype ") + dtype_name(t.dtype) + " to f32 (F32, F16 or BF16 only)");
  }
}

void SafetensorsFile::read_rows_bf16(const TensorInfo& t, int64_t b, int64_t e, uint16_t* out) const {
  check_rows(where(t), t, b, e);
  const size_t n = size_t((e - b) * t.row_elems());
  const uint8_t* src = tensor_data(t, b);
  switch (t.dtype) {
    case DType::BF16: convert_from<uint16_t>(src, out, n, copy_u16); break;
    case DType::F32: convert_from<float>(src, out, n, [](const float* s, uint16_t* d, size_t m) { num::f32_to_bf16(s, d, m); }); break;
    case DType::F16: convert_from<uint16_t>(src, out, n, f16_to_bf16); break;
    default: fail(where(t), std::string("cannot convert dtype ") + dtype_name(t.dtype) + " to bf16 (F32, F16 or BF16 only)");
  }
}

std::vector<float> SafetensorsFile::read_f32(const std::string& name) const {
  const TensorInfo& t = info(name);
  std::vector<float> out(size_t(t.numel()));
  read_rows_f32(t, 0, t.rows(), out.data());
  return out;
}

void SafetensorsFile::drop(const TensorInfo& t, bool evict_cache) const {
  map_.drop(data_offset_ + t.begin, t.nbytes(), evict_cache);
}
void SafetensorsFile::drop_rows(const TensorInfo& t, int64_t b, int64_t e, bool evict_cache) const {
  check_rows(where(t), t, b, e);
  const size_t row_bytes = size_t(t.row_elems()) * dtype_size(t.dtype);
  map_.drop(data_offset_ + t.begin + size_t(b) * row_bytes, size_t(e - b) * row_bytes, evict_cache);
}
void SafetensorsFile::prefetch(const TensorInfo& t) const { map_.prefetch(data_offset_ + t.begin, t.nbytes()); }

// ---------------------------------------------------------------------------------------------
namespace {
std::string read_small_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) fail(p.string(), std::string("cannot open: ") + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A shard name from an index must stay inside the index's directory.
fs::path shard_path(const fs::path& index, const std::string& tensor, const std::string& file) {
  const fs::path rel(file);
  const std::string where = index.string() + ": tensor '" + tensor + "'";
  if (file.empty() || rel.is_absolute() || std::any_of(rel.begin(), rel.end(), [](const fs::path& c) { return c == ".."; }))
    fail(where, "shard name '" + file + "' must be a relative path inside the index's directory");
  const fs::path p = index.parent_path() / rel;
  std::error_code ec;  // the non-throwing overloads: errors must surface as lq::Error
  if (!fs::exists(fs::symlink_status(p, ec))) fail(where, "shard '" + file + "' does not exist (" + p.string() + ")");
  check_model_file(index.parent_path().string(), p.string());  // the symlink rule (io/model_files.h)
  return p;
}
}  // namespace

TensorStore::TensorStore(const std::string& path) : path_(path) {
  fs::path p(path);
  std::error_code ec;  // the non-throwing overloads: errors must surface as lq::Error
  if (!fs::exists(p, ec)) fail(path, "does not exist");
  if (fs::is_directory(p, ec)) {
    if (const std::string idx = model_file(path, "model.safetensors.index.json"); !idx.empty()) {
      p = idx;
    } else if (const std::string single = model_file(path, "model.safetensors"); !single.empty()) {
      p = single;
    } else {
      fail(path, "directory has neither model.safetensors nor model.safetensors.index.json");
    }
  }
  if (p.extension() != ".json") {
    files_.push_back(std::make_unique<SafetensorsFile>(p.string()));
    for (const auto& t : files_[0]->tensors()) where_[t.name] = 0;
    return;
  }
  const std::string text = read_small_file(p);
  const json idx = parse_json_strict(text.data(), text.data() + text.size(), p.string(), nullptr);
  if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
    fail(p.string() + ": weight_map", "index has no 'weight_map' object");
  const json& weight_map = idx["weight_map"];
  if (weight_map.empty()) fail(p.string() + ": weight_map", "index lists no tensors");
  std::map<std::string, size_t> file_ids;
  for (auto it = weight_map.begin(); it != weight_map.end(); ++it) {
    if (!it->is_string())
      fail(p.string() + ": tensor '" + it.key() + "'", std::string("weight_map value is a JSON ") + it->type_name() + ", expected a shard file name");
    const std::string f = it->get<std::string>();
    if (!file_ids.count(f)) {
      file_ids[f] = files_.size();
      files_.push_back(std::make_unique<SafetensorsFile>(shard_path(p, it.key(), f).string()));
    }
    const auto& shard = *files_[file_ids[f]];
    if (!shard.has(it.key()))
      fail(shard.path() + ": tensor '" + it.key() + "'", "listed in the index " + p.string() + " but missing from the shard");
    where_[it.key()] = file_ids[f];
  }
  // Every tensor of every shard is listed, and only in the shard the index names.
  for (size_t i = 0; i < files_.size(); ++i)
    for (const auto& t : files_[i]->tensors()) {
      auto w = where_.find(t.name);
      if (w == where_.end())
        fail(files_[i]->path() + ": tensor '" + t.name + "'", "present in the shard but not listed in the index " + p.string());
      if (w->second != i)
        fail(files_[i]->path() + ": tensor '" + t.name + "'", "also present in shard " + files_[w->second]->path() +
                                                                  ", which the index names; a tensor must live in one shard");
    }
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : where_) out.push_back(k);
  return out;
}
const SafetensorsFile& TensorStore::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(path_ + ": tensor '" + name + "'", "no such tensor in the model");
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
void TensorStore::drop(const std::string& name, bool evict_cache) const {
  const auto& f = file_of(name);
  f.drop(f.info(name), evict_cache);
}
void TensorStore::drop_rows(const std::string& name, int64_t b, int64_t e, bool evict_cache) const {
  const auto& f = file_of(name);
  f.drop_rows(f.info(name), b, e, evict_cache);
}
void TensorStore::prefetch(const std::string& name) const {
  const auto& f = file_of(name);
  f.prefetch(f.info(name));
}
uint64_t TensorStore::total_tensor_bytes() const {
  uint64_t s = 0;
  for (const auto& f : files_)
    for (const auto& t : f->tensors()) s += t.nbytes();
  return s;
}

// ---------------------------------------------------------------------------------------------
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

// Makes a completed rename durable: the new directory entry survives a crash.
void fsync_directory_of(const std::string& path) {
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail(dir.string(), std::string("cannot open directory to fsync: ") + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) fail(dir.string(), std::string("directory fsync failed: ") + std::strerror(err));
}

std::string unique_temp_name(const std::string& path) {
  static std::atomic<uint64_t> counter{0};  // several writers in one process may target one path
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
}
}  // namespace

SafetensorsWriter::SafetensorsWriter(std::string path, std::map<std::string, std::string> metadata)
    : path_(std::move(path)), tmp_path_(unique_temp_name(path_)), metadata_(std::move(metadata)) {}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
  unregister_partial_output(signal_slot_);
  if (started_ && !finished_) ::unlink(tmp_path_.c_str());
}

void SafetensorsWriter::check_open(const char* operation) const {
  if (finished_) fail(path_, std::string("cannot ") + operation + ": the writer has already finished");
}

void SafetensorsWriter::declare(const std::string& name, DType dtype, std::vector<int64_t> shape) {
  check_open("declare a tensor");
  const std::string where = path_ + ": tensor '" + name + "'";
  if (started_) fail(where, "cannot declare a tensor after writing started");
  if (name.empty() || name == kMetadataKey) fail(where, "is not a valid tensor name");
  if (dtype_size(dtype) == 0) fail(where, "invalid dtype");
  for (const auto& t : tensors_)
    if (t.name == name) fail(where, "declared twice");
  uint64_t bytes = dtype_size(dtype);
  for (int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(bytes, uint64_t(d), &bytes)) fail(where, "negative dimension or size overflow in shape");
  TensorInfo t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.begin = tensors_.empty() ? 0 : tensors_.back().end;
  if (__builtin_add_overflow(t.begin, bytes, &t.end)) fail(where, "file size overflows 64 bits");
  tensors_.push_back(std::move(t));
}

void SafetensorsWriter::begin_data() {
  // ordered_json keeps insertion order: metadata first, then tensors in data order.
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata_.empty()) h[kMetadataKey] = metadata_;
  for (const auto& t : tensors_)
    h[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}};
  std::string s;
  try {
    s = h.dump();
  } catch (const nlohmann::json::exception& e) {  // e.g. a name that is not valid UTF-8
    fail(path_, std::string("cannot encode the header: ") + e.what());
  }
  while (s.size() % 8 != 0) s.push_back(' ');  // 8 + header is then 8-byte aligned
  if (s.size() > kMaxSafetensorsHeader) fail(path_, "header of " + std::to_string(s.size()) + " bytes exceeds the format's limit");
  signal_slot_ = register_partial_output(tmp_path_, false);  // before it exists: SIGINT / SIGTERM remove it (io/signals.h)
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int err = errno;
    unregister_partial_output(signal_slot_);
    signal_slot_ = -1;
    fail(tmp_path_, std::string("cannot create: ") + std::strerror(err));
  }
  started_ = true;  // from here on the destructor removes the temporary file
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(s.size()) >> (8 * i));
  write_all(fd_, len, 8, tmp_path_);
  write_all(fd_, s.data(), s.size(), tmp_path_);
  current_ = 0;
  written_in_current_ = 0;
}

void SafetensorsWriter::write(const void* data, size_t nbytes) {
  check_open("write");
  if (!started_) begin_data();
  while (nbytes > 0) {
    if (current_ >= tensors_.size())
      fail(path_, std::to_string(nbytes) + " bytes written beyond the declared tensors");
    const TensorInfo& t = tensors_[current_];
    const uint64_t room = t.nbytes() - written_in_current_;
    const size_t n = size_t(std::min<uint64_t>(room, nbytes));
    write_all(fd_, data, n, tmp_path_);
    data = static_cast<const uint8_t*>(data) + n;
    nbytes -= n;
    written_in_current_ += n;
    if (written_in_current_ == t.nbytes()) {
      ++current_;
      written_in_current_ = 0;
    }
  }
  // Skip zero-byte tensors so `current_` always names the tensor that still needs bytes.
  while (current_ < tensors_.size() && tensors_[current_].nbytes() == 0) ++current_;
}

void SafetensorsWriter::finish() {
  check_open("finish");
  if (!started_) begin_data();
  while (current_ < tensors_.size() && tensors_[current_].nbytes() == 0) ++current_;
  if (current_ != tensors_.size())
    fail(path_ + ": tensor '" + tensors_[current_].name + "'",
         "declared but only " + std::to_string(written_in_current_) + " of " + std::to_string(tensors_[current_].nbytes()) +
             " bytes written");
  if (::fsync(fd_) != 0) fail(tmp_path_, std::string("fsync failed: ") + std::strerror(errno));
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail(tmp_path_, std::string("close failed: ") + std::strerror(errno));
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) fail(path_, std::string("rename failed: ") + std::strerror(errno));
  finished_ = true;
  unregister_partial_output(signal_slot_);
  signal_slot_ = -1;
  fsync_directory_of(path_);
}

}  // namespace lq::io
