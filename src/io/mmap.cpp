#include "io/mmap.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "io/error.h"
#include "io/signals.h"

namespace lq::io {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  auto fail_closing = [&](const std::string& what) {
    ::close(fd_);
    fd_ = -1;
    fail(path, what);
  };
  struct stat st {};
  if (::fstat(fd_, &st) != 0) fail_closing(std::string("cannot stat: ") + std::strerror(errno));
  // A directory opens fine with O_RDONLY but cannot be mapped; say what is wrong instead of ENODEV.
  if (!S_ISREG(st.st_mode)) fail_closing("is not a regular file");
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) fail_closing(std::string("cannot mmap: ") + std::strerror(errno));
    data_ = static_cast<const uint8_t*>(p);
    signal_slot_ = register_mapping(data_, size_, path_.c_str());
  }
}

MappedFile::~MappedFile() {
  unregister_mapping(signal_slot_);
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

void MappedFile::drop(size_t offset, size_t len, bool evict_cache) const {
  if (!data_ || offset >= size_ || len == 0) return;
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  const size_t last = offset + std::min(len, size_ - offset);
  const size_t begin = (offset + page - 1) / page * page;
  // The file's final partial page is ours alone, so it may go too.
  const size_t end = last == size_ ? (size_ + page - 1) / page * page : last / page * page;
  if (end <= begin) return;
  ::madvise(const_cast<uint8_t*>(data_) + begin, end - begin, MADV_DONTNEED);
  if (evict_cache) ::posix_fadvise(fd_, off_t(begin), off_t(std::min(end, size_) - begin), POSIX_FADV_DONTNEED);
}

void MappedFile::prefetch(size_t offset, size_t len) const {
  if (!data_ || offset >= size_ || len == 0) return;
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  const size_t begin = offset / page * page, end = offset + std::min(len, size_ - offset);
  ::madvise(const_cast<uint8_t*>(data_) + begin, end - begin, MADV_WILLNEED);  // advisory: errors ignored
}

}  // namespace lq::io
