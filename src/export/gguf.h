// GGUF v3 container (the llama.cpp / ggml model file): writer and a validating reader.
//
// File: "GGUF" magic, u32 version 3, u64 tensor count, u64 metadata count; metadata as
// (string key, u32 value type, value); tensor infos as (string name, u32 n_dims, u64 dims[n_dims]
// in ggml order, i.e. innermost first, u32 ggml type, u64 offset into the data section); padding to
// `general.alignment` (32 unless set); the data section, each tensor at an aligned offset.
// Strings are u64 length + bytes (no terminator). All little-endian.
//
// The writer streams: declare metadata and every tensor (so offsets are known), then write each
// tensor's encoded bytes in declaration order; finish() pads, fsyncs and renames the temporary file.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "export/ggml_types.h"

namespace lq::exporter {

struct GptqFactor;

// Metadata value types (gguf_type).
enum class GgufValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
  U64 = 10, I64 = 11, F64 = 12
};

// The metadata values this exporter needs. Arrays hold strings, i32 or f32.
using GgufValue = std::variant<uint32_t, int32_t, float, bool, std::string, uint64_t,
                               std::vector<std::string>, std::vector<int32_t>, std::vector<float>>;

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // row-major (outermost first), as the rest of the project writes shapes
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;  // in the data section
  uint64_t nbytes = 0;
};

class GgufWriter {
 public:
  explicit GgufWriter(std::string path, uint32_t alignment = 32);
  ~GgufWriter();
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  void set(const std::string& key, GgufValue value);  // before the first write_tensor
  // Declares a tensor of `shape` [outer..., inner] stored as `type`; the inner dim must be a
  // multiple of the type's block size.
  void declare(const std::string& name, std::vector<int64_t> shape, GgmlType type);
  // Encodes `data` (numel floats, row-major) as the declared type, row by row; `importance` (one value
  // per column, or nullptr) steers the quantized types' scale searches; with `gptq` (export/ggml_gptq.h,
  // a factor of the row width) the codes are GPTQ's. Declaration order.
  void write_tensor(const std::string& name, const float* data, const float* importance = nullptr,
                    const GptqFactor* gptq = nullptr);
  // Writes already-encoded bytes (exactly the declared tensor's size). Declaration order.
  void write_raw(const std::string& name, const uint8_t* bytes, size_t n);
  uint64_t tensor_bytes(const std::string& name) const;  // encoded size of a declared tensor
  void finish();

 private:
  void write_header();
  const GgufTensorInfo& next_tensor(const std::string& name);
  std::string path_, tmp_path_;
  uint32_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  int fd_ = -1;
  bool header_written_ = false, finished_ = false;
  size_t next_ = 0;
  uint64_t data_written_ = 0;
};

// Reads and validates a whole GGUF file (bounds, types, offsets, alignment); keeps the data mapped
// in memory. Meant for tests and for checking our own output.
class GgufFile {
 public:
  explicit GgufFile(const std::string& path);
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo& tensor(const std::string& name) const;
  std::vector<float> read_f32(const std::string& name) const;  // decoded with our reference decoder
  const uint8_t* raw(const GgufTensorInfo& t) const;

 private:
  std::string path_;
  std::vector<uint8_t> bytes_;
  uint32_t version_ = 0, alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
};

}  // namespace lq::exporter
