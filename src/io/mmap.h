// Read-only memory map of a whole file. Pages are brought in on access, so a 24.7 GB checkpoint
// costs only what is touched; callers advise the kernel to drop pages they are done with. A file
// truncated while mapped makes the next access of a lost page raise SIGBUS: the mapping is registered
// with io/signals.h, whose handler reports "[FILE] input changed during the run" and exits 1.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace lq::io {

class MappedFile {
 public:
  // Throws lq::Error naming `path` when it cannot be opened, is not a regular file, or cannot be mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Tell the kernel that [offset, offset+len) will not be needed again: the whole pages inside the
  // range leave this process's resident set (MADV_DONTNEED) and, where nobody else maps them, the
  // page cache (POSIX_FADV_DONTNEED). Partial pages at either end are kept: a neighbour may use them.
  // With evict_cache false the page cache is left to the kernel (the range may be read again soon).
  void drop(size_t offset, size_t len, bool evict_cache = true) const;
  // Starts reading [offset, offset+len) into the page cache in the background (MADV_WILLNEED), so a
  // streaming reader's next pages arrive while it computes on the current ones.
  void prefetch(size_t offset, size_t len) const;

 private:
  std::string path_;
  int fd_ = -1;  // kept open for posix_fadvise
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  int signal_slot_ = -1;  // io/signals.h: a SIGBUS inside the mapping names this file
};

}  // namespace lq::io
