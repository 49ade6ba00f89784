// safetensors container: validated memory-mapped reader (single file or sharded index) and a
// streaming writer (declare tensors, then append their bytes in order; temp name + fsync + rename).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/mmap.h"

namespace lq::io {

// Every dtype the container defines (the Rust reference crate's list; new values go at the end).
enum class DType { F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U8, BOOL, U16, U32, U64 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
// Parses "F32", "BF16", ...; throws lq::Error naming `where` for unknown names.
DType parse_dtype(const std::string& name, const std::string& where);

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets relative to the data section
  int64_t numel() const;
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  int64_t row_elems() const;  // product of shape[1:]
  uint64_t nbytes() const { return end - begin; }
};

// What a validated header describes: where the data section starts and every tensor in it.
struct SafetensorsHeader {
  size_t data_offset = 0;             // 8 + header length
  std::vector<TensorInfo> tensors;    // sorted by offset; they tile the data section exactly
  std::map<std::string, std::string> metadata;
};

// The header size limit of the reference implementation (100,000,000 bytes, not 100 MiB).
inline constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;

// One validated .safetensors file. Construction checks the whole header (length bounds, JSON,
// duplicate keys, dtypes, shapes vs byte sizes, overflow, offsets that tile the data section with
// no overlap, gap or trailing bytes) and throws lq::Error naming the file and tensor on the first
// problem. Only the header is read at open time; tensor data is paged in on access.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  // Validates a whole file image held in memory (the header plus the data section it describes);
  // `name` is used in error messages. The constructor runs exactly this on the mapped file, and the
  // fuzzer runs it on arbitrary bytes. Reads nothing outside [data, data + size).
  static SafetensorsHeader parse_header(const uint8_t* data, size_t size, const std::string& name);

  const std::string& path() const { return map_.path(); }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in file order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return index_.count(name) > 0; }
  const TensorInfo& info(const std::string& name) const;  // throws naming the missing tensor
  std::span<const uint8_t> bytes(const TensorInfo& t) const;
  // Converts rows [row_begin, row_end) of a F32/F16/BF16 tensor into f32 / bf16.
  void read_rows_f32(const TensorInfo& t, int64_t row_begin, int64_t row_end, float* out) const;
  void read_rows_bf16(const TensorInfo& t, int64_t row_begin, int64_t row_end, uint16_t* out) const;
  std::vector<float> read_f32(const std::string& name) const;
  // Releases the pages of a tensor once it has been consumed: they leave this process's resident
  // set and, when no one else maps them and evict_cache is set, the page cache (bounded memory when
  // streaming a checkpoint).
  void drop(const TensorInfo& t, bool evict_cache = true) const;
  void drop_rows(const TensorInfo& t, int64_t row_begin, int64_t row_end, bool evict_cache = true) const;
  void prefetch(const TensorInfo& t) const;  // see MappedFile::prefetch
  size_t data_offset() const { return data_offset_; }

 private:
  const uint8_t* tensor_data(const TensorInfo& t, int64_t row_begin) const;
  std::string where(const TensorInfo& t) const;

  MappedFile map_;
  size_t data_offset_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A model directory or file: `model.safetensors`, a sharded `model.safetensors.index.json`, or a
// single .safetensors path. For an index, every listed shard must exist inside the index's
// directory, every listed tensor must be in its shard, and every tensor of every shard must be
// listed exactly once (a tensor present in two shards is an error).
class TensorStore {
 public:
  explicit TensorStore(const std::string& path);
  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // sorted
  bool has(const std::string& name) const { return where_.count(name) > 0; }
  const TensorInfo& info(const std::string& name) const;
  const SafetensorsFile& file_of(const std::string& name) const;
  std::vector<float> read_f32(const std::string& name) const;
  void read_rows_f32(const std::string& name, int64_t row_begin, int64_t row_end, float* out) const;
  void read_rows_bf16(const std::string& name, int64_t row_begin, int64_t row_end, uint16_t* out) const;
  void drop(const std::string& name, bool evict_cache = true) const;  // see SafetensorsFile::drop
  void drop_rows(const std::string& name, int64_t row_begin, int64_t row_end, bool evict_cache = true) const;
  void prefetch(const std::string& name) const;                       // see MappedFile::prefetch
  size_t num_files() const { return files_.size(); }
  uint64_t total_tensor_bytes() const;

 private:
  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;
};

// Streaming writer. Usage: declare every tensor (name, dtype, shape) in the order it will be
// written, then write each tensor's bytes (possibly in several chunks, split anywhere) in that
// order, then finish(). The file appears at `path` only after finish(): it is written to
// `path.tmp.<pid>.<n>` in the same directory, fsynced, renamed, and the directory is fsynced.
// Destroying an unfinished writer (including during exception unwinding) removes the temporary
// file, so no partial file is ever visible at `path`. The header lists `__metadata__` first and
// the tensors in data order, padded with spaces so the data section is 8-byte aligned.
class SafetensorsWriter {
 public:
  SafetensorsWriter(std::string path, std::map<std::string, std::string> metadata = {});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;
  void declare(const std::string& name, DType dtype, std::vector<int64_t> shape);
  void write(const void* data, size_t nbytes);  // appends to the current tensor
  void finish();
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_path_; }

 private:
  void begin_data();
  void check_open(const char* operation) const;
  std::string path_, tmp_path_;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> tensors_;
  int fd_ = -1;
  bool started_ = false, finished_ = false;
  size_t current_ = 0;        // index of the tensor being written
  uint64_t written_in_current_ = 0;
  int signal_slot_ = -1;  // the temporary file, removed on SIGINT / SIGTERM (io/signals.h)
};

}  // namespace lq::io
