#include "export/gguf.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "export/ggml_gptq.h"
#include "io/error.h"

namespace lq::exporter {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kVersion = 3;

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// ---- serialisation into a byte buffer ----
struct Buffer {
  std::vector<uint8_t> bytes;
  template <class T>
  void pod(T v) {
    const size_t at = bytes.size();
    bytes.resize(at + sizeof(T));
    std::memcpy(bytes.data() + at, &v, sizeof(T));
  }
  void str(const std::string& s) {
    pod<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
};

void put_value(Buffer& b, const GgufValue& v) {
  struct Visitor {
    Buffer& b;
    void operator()(uint32_t x) { b.pod(uint32_t(GgufValueType::U32)); b.pod(x); }
    void operator()(int32_t x) { b.pod(uint32_t(GgufValueType::I32)); b.pod(x); }
    void operator()(float x) { b.pod(uint32_t(GgufValueType::F32)); b.pod(x); }
    void operator()(bool x) { b.pod(uint32_t(GgufValueType::BOOL)); b.pod(uint8_t(x ? 1 : 0)); }
    void operator()(const std::string& s) { b.pod(uint32_t(GgufValueType::STRING)); b.str(s); }
    void operator()(uint64_t x) { b.pod(uint32_t(GgufValueType::U64)); b.pod(x); }
    void operator()(const std::vector<std::string>& a) {
      b.pod(uint32_t(GgufValueType::ARRAY)); b.pod(uint32_t(GgufValueType::STRING)); b.pod(uint64_t(a.size()));
      for (const auto& s : a) b.str(s);
    }
    void operator()(const std::vector<int32_t>& a) {
      b.pod(uint32_t(GgufValueType::ARRAY)); b.pod(uint32_t(GgufValueType::I32)); b.pod(uint64_t(a.size()));
      for (int32_t x : a) b.pod(x);
    }
    void operator()(const std::vector<float>& a) {
      b.pod(uint32_t(GgufValueType::ARRAY)); b.pod(uint32_t(GgufValueType::F32)); b.pod(uint64_t(a.size()));
      for (float x : a) b.pod(x);
    }
  };
  std::visit(Visitor{b}, v);
}

void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) fail(path, std::string("write failed: ") + std::strerror(errno));
    p += w;
    n -= size_t(w);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
GgufWriter::GgufWriter(std::string path, uint32_t alignment) : path_(std::move(path)), alignment_(alignment) {
  if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0) fail(path_, "GGUF alignment must be a power of two");
  static int counter = 0;
  tmp_path_ = path_ + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd_ < 0) fail(tmp_path_, std::string("cannot create: ") + std::strerror(errno));
  if (alignment_ != 32) metadata_.emplace_back("general.alignment", uint32_t(alignment_));
}

GgufWriter::~GgufWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!finished_) std::remove(tmp_path_.c_str());
}

void GgufWriter::set(const std::string& key, GgufValue value) {
  if (header_written_) fail(path_, "metadata '" + key + "' set after tensor data started");
  for (auto& [k, v] : metadata_)
    if (k == key) fail(path_, "metadata key '" + key + "' set twice");
  metadata_.emplace_back(key, std::move(value));
}

void GgufWriter::declare(const std::string& name, std::vector<int64_t> shape, GgmlType type) {
  if (header_written_) fail(path_, "tensor '" + name + "' declared after tensor data started");
  if (shape.empty()) fail(name, "GGUF tensors need at least one dimension");
  for (const auto& t : tensors_)
    if (t.name == name) fail(path_, "tensor '" + name + "' declared twice");
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
  GgufTensorInfo info;
  info.name = name;
  info.type = type;
  info.nbytes = uint64_t(rows) * ggml_row_bytes(type, shape.back(), name);
  info.shape = std::move(shape);
  info.offset = tensors_.empty() ? 0 : align_up(tensors_.back().offset + tensors_.back().nbytes, alignment_);
  tensors_.push_back(std::move(info));
}

void GgufWriter::write_header() {
  Buffer b;
  b.pod(kMagic);
  b.pod(kVersion);
  b.pod(uint64_t(tensors_.size()));
  b.pod(uint64_t(metadata_.size()));
  for (const auto& [key, value] : metadata_) {
    b.str(key);
    put_value(b, value);
  }
  for (const auto& t : tensors_) {
    b.str(t.name);
    b.pod(uint32_t(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) b.pod(uint64_t(*it));  // ggml order
    b.pod(uint32_t(t.type));
    b.pod(t.offset);
  }
  b.bytes.resize(align_up(b.bytes.size(), alignment_), 0);
  write_all(fd_, b.bytes.data(), b.bytes.size(), tmp_path_);
  header_written_ = true;
}

const GgufTensorInfo& GgufWriter::next_tensor(const std::string& name) {
  if (!header_written_) write_header();
  if (next_ >= tensors_.size() || tensors_[next_].name != name)
    fail(path_, "tensor '" + name + "' written out of declaration order");
  const GgufTensorInfo& t = tensors_[next_++];
  // Pad up to this tensor's aligned offset.
  const std::vector<uint8_t> pad(t.offset - data_written_, 0);
  write_all(fd_, pad.data(), pad.size(), tmp_path_);
  return t;
}

void GgufWriter::write_tensor(const std::string& name, const float* data, const float* importance,
                              const GptqFactor* gptq) {
  const GgufTensorInfo& t = next_tensor(name);
  std::vector<uint8_t> encoded(t.nbytes);
  const GgmlTypeTraits& tr = ggml_traits(t.type);
  const int64_t row = t.shape.back();
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < t.shape.size(); ++i) rows *= t.shape[i];
  const size_t row_bytes = t.nbytes / uint64_t(rows);
  // Rows are independent: encode them on all cores (each row's bytes depend on that row alone, so the
  // result does not depend on the thread count).
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const int64_t n_threads = std::min<int64_t>(int64_t(hw), std::max<int64_t>(1, rows / 16));
  std::atomic<int64_t> next_row{0};
  auto work = [&] {
    for (int64_t r; (r = next_row.fetch_add(1)) < rows;)
      if (gptq) gptq_encode_row(tr, data + r * row, row, importance, *gptq, encoded.data() + size_t(r) * row_bytes);
      else tr.encode(data + r * row, row, encoded.data() + size_t(r) * row_bytes, importance);
  };
  std::vector<std::thread> pool;
  for (int64_t k = 1; k < n_threads; ++k) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  write_all(fd_, encoded.data(), encoded.size(), tmp_path_);
  data_written_ = t.offset + t.nbytes;
}

void GgufWriter::write_raw(const std::string& name, const uint8_t* bytes, size_t n) {
  const GgufTensorInfo& t = next_tensor(name);
  if (n != t.nbytes)
    fail(path_, "tensor '" + name + "': " + std::to_string(n) + " bytes given, " + std::to_string(t.nbytes) + " declared");
  write_all(fd_, bytes, n, tmp_path_);
  data_written_ = t.offset + t.nbytes;
}

uint64_t GgufWriter::tensor_bytes(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return t.nbytes;
  fail(path_, "tensor '" + name + "' not declared");
}

void GgufWriter::finish() {
  if (!header_written_) write_header();
  if (next_ != tensors_.size())
    fail(path_, "finish() with " + std::to_string(tensors_.size() - next_) + " declared tensors not written");
  const std::vector<uint8_t> pad(align_up(data_written_, alignment_) - data_written_, 0);
  write_all(fd_, pad.data(), pad.size(), tmp_path_);
  if (::fsync(fd_) != 0) fail(tmp_path_, std::string("fsync failed: ") + std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  std::filesystem::rename(tmp_path_, path_);
  finished_ = true;
}

// ---------------------------------------------------------------------------------------------
namespace {

class Cursor {
 public:
  Cursor(const std::vector<uint8_t>& b, const std::string& path) : b_(b), path_(path) {}
  template <class T>
  T pod() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string str() {
    const uint64_t n = pod<uint64_t>();
    need(n);
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), size_t(n));
    pos_ += n;
    return s;
  }
  size_t pos() const { return pos_; }

 private:
  void need(uint64_t n) const {
    if (n > b_.size() - pos_) fail(path_, "truncated GGUF header at byte " + std::to_string(pos_));
  }
  const std::vector<uint8_t>& b_;
  std::string path_;
  size_t pos_ = 0;
};

GgufValue read_value(Cursor& c, uint32_t type, const std::string& where) {
  switch (GgufValueType(type)) {
    case GgufValueType::U32: return c.pod<uint32_t>();
    case GgufValueType::I32: return c.pod<int32_t>();
    case GgufValueType::F32: return c.pod<float>();
    case GgufValueType::BOOL: return c.pod<uint8_t>() != 0;
    case GgufValueType::STRING: return c.str();
    case GgufValueType::U64: return c.pod<uint64_t>();
    case GgufValueType::ARRAY: {
      const uint32_t et = c.pod<uint32_t>();
      const uint64_t n = c.pod<uint64_t>();
      if (et == uint32_t(GgufValueType::STRING)) {
        std::vector<std::string> a;
        for (uint64_t i = 0; i < n; ++i) a.push_back(c.str());
        return a;
      }
      if (et == uint32_t(GgufValueType::I32)) {
        std::vector<int32_t> a;
        for (uint64_t i = 0; i < n; ++i) a.push_back(c.pod<int32_t>());
        return a;
      }
      if (et == uint32_t(GgufValueType::F32)) {
        std::vector<float> a;
        for (uint64_t i = 0; i < n; ++i) a.push_back(c.pod<float>());
        return a;
      }
      fail(where, "array element type " + std::to_string(et) + " is not read by this reader");
    }
    default: fail(where, "value type " + std::to_string(type) + " is not read by this reader");
  }
}

}  // namespace

GgufFile::GgufFile(const std::string& path) : path_(path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open");
  bytes_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  Cursor c(bytes_, path);
  if (c.pod<uint32_t>() != kMagic) fail(path, "not a GGUF file (bad magic)");
  version_ = c.pod<uint32_t>();
  if (version_ != kVersion) fail(path, "GGUF version " + std::to_string(version_) + " (expected 3)");
  const uint64_t n_tensors = c.pod<uint64_t>(), n_kv = c.pod<uint64_t>();
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.str();
    const uint32_t type = c.pod<uint32_t>();
    GgufValue v = read_value(c, type, path + ": " + key);
    if (!metadata_.emplace(key, std::move(v)).second) fail(path, "duplicate metadata key '" + key + "'");
  }
  if (auto it = metadata_.find("general.alignment"); it != metadata_.end()) alignment_ = std::get<uint32_t>(it->second);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = c.str();
    const uint32_t nd = c.pod<uint32_t>();
    if (nd == 0 || nd > 4) fail(path, t.name + ": " + std::to_string(nd) + " dimensions");
    t.shape.resize(nd);
    for (uint32_t d = 0; d < nd; ++d) t.shape[nd - 1 - d] = int64_t(c.pod<uint64_t>());
    t.type = GgmlType(c.pod<uint32_t>());
    t.offset = c.pod<uint64_t>();
    if (t.offset % alignment_ != 0) fail(path, t.name + ": offset not aligned");
    int64_t rows = 1;
    for (size_t d = 0; d + 1 < t.shape.size(); ++d) rows *= t.shape[d];
    t.nbytes = uint64_t(rows) * ggml_row_bytes(t.type, t.shape.back(), t.name);
    tensors_.push_back(std::move(t));
  }
  data_offset_ = align_up(c.pos(), alignment_);
  for (const auto& t : tensors_)
    if (data_offset_ + t.offset + t.nbytes > bytes_.size()) fail(path, t.name + ": data past the end of the file");
}

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return t;
  fail(path_, "no tensor '" + name + "'");
}

const uint8_t* GgufFile::raw(const GgufTensorInfo& t) const { return bytes_.data() + data_offset_ + t.offset; }

std::vector<float> GgufFile::read_f32(const std::string& name) const {
  const GgufTensorInfo& t = tensor(name);
  int64_t numel = 1;
  for (int64_t d : t.shape) numel *= d;
  std::vector<float> out(static_cast<size_t>(numel));
  ggml_traits(t.type).decode(raw(t), numel, out.data());
  return out;
}

}  // namespace lq::exporter
