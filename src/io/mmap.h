// Read-only memory map of a whole file. Pages are brought in on access, so a 24.7 GB checkpoint
// costs only what is touched; callers advise the kernel to drop pages they are done with.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace lq::io {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Tell the kernel that [offset, offset+len) will not be needed soon (releases page cache RSS).
  void drop(size_t offset, size_t len) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace lq::io
