// Reader of PyTorch checkpoints written by torch.save (>= 1.6: a zip archive holding `data.pkl` and one
// entry per storage under `data/`), e.g. Wan's `Wan2.2_VAE.pth`, without Python.
//
// Only what a state dict needs is understood: the pickle is run by a small stack machine that knows the
// opcodes of protocols 2-4 used for dicts, tuples, lists, strings, numbers and tensors, and accepts only
// these globals: collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter and the
// typed storages torch.{Float,Half,BFloat16,Double}Storage. Anything else (any other callable, in
// particular) is refused, so a malicious file cannot run code; malformed archives (bad zip records,
// compressed entries, out-of-bounds offsets, truncated pickles, tensors beyond their storage, storage
// sizes that disagree with their entries) throw lq::Error naming the file and the entry or tensor.
// The top-level object must be a dict of tensors (nested dicts such as {"state_dict": {...}} are
// flattened with '.'-joined keys). Tensor data stays in the memory map until read.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/mmap.h"
#include "io/safetensors.h"  // DType

namespace lq::io {

struct TorchTensorInfo {
  std::string name;
  DType dtype = DType::F32;  // F32, F16, BF16 or F64
  std::vector<int64_t> shape, stride;  // stride in elements
  int64_t storage_offset = 0;          // in elements
  std::string storage;                 // storage key (entry data/<key>)
  int64_t numel() const;
  bool contiguous() const;  // row-major dense
};

class TorchCheckpoint {
 public:
  explicit TorchCheckpoint(const std::string& path);
  // Parses an archive image held in memory (what the constructor runs on the mapped file; tests and
  // fuzzing feed arbitrary bytes); the bytes must outlive the object. `name` appears in errors.
  static TorchCheckpoint from_memory(const uint8_t* data, size_t size, const std::string& name);

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // sorted
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  const TorchTensorInfo& info(const std::string& name) const;  // throws naming the missing tensor
  // The tensor's elements in row-major order converted to f32 (any strides, any supported dtype).
  std::vector<float> read_f32(const std::string& name) const;
  // Raw bytes of a contiguous tensor (throws for a strided view).
  std::span<const uint8_t> bytes(const std::string& name) const;
  // Releases the mapped pages of a tensor's storage once it has been consumed (see MappedFile::drop;
  // no-op for an in-memory archive).
  void drop(const std::string& name, bool evict_cache = true) const;

 private:
  struct Storage {
    DType dtype = DType::F32;
    int64_t numel = 0;
    const uint8_t* data = nullptr;  // inside the mapped archive
  };
  TorchCheckpoint() = default;
  void parse(const uint8_t* data, size_t size);

  std::string path_;
  std::unique_ptr<MappedFile> map_;
  std::map<std::string, Storage> storages_;
  std::map<std::string, TorchTensorInfo> tensors_;
};

}  // namespace lq::io
