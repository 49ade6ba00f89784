// Shared by the file-based libFuzzer targets: the readers under test take directories, so each input
// is unpacked into a scratch directory (on /dev/shm when it exists) as a few files.
//
// Input layout ("bundle"): a sequence of parts, each a 4-byte little-endian length followed by that
// many bytes (a length past the end takes the rest). The targets name the files part by part.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace lq::fuzz {

// LQ_FUZZ_SHOW_ERRORS=1 prints each rejection's message (to check that the seeds are accepted).
inline void rejected(const char* what) {
  static const bool show = std::getenv("LQ_FUZZ_SHOW_ERRORS") != nullptr;
  if (show) std::fprintf(stderr, "rejected: %s\n", what);
}

inline std::vector<std::string> split_bundle(const uint8_t* data, size_t size, size_t parts) {
  std::vector<std::string> out;
  size_t pos = 0;
  for (size_t p = 0; p < parts; ++p) {
    if (p + 1 == parts || pos + 4 > size) {  // the last part takes the rest
      out.emplace_back(reinterpret_cast<const char*>(data) + std::min(pos, size), size - std::min(pos, size));
      pos = size;
      continue;
    }
    uint32_t n = uint32_t(data[pos]) | uint32_t(data[pos + 1]) << 8 | uint32_t(data[pos + 2]) << 16 | uint32_t(data[pos + 3]) << 24;
    pos += 4;
    n = uint32_t(std::min<size_t>(n, size - pos));
    out.emplace_back(reinterpret_cast<const char*>(data) + pos, n);
    pos += n;
  }
  return out;
}

inline std::string bundle(const std::vector<std::string>& parts) {
  std::string s;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i + 1 < parts.size()) {
      const uint32_t n = uint32_t(parts[i].size());
      for (int b = 0; b < 4; ++b) s.push_back(char((n >> (8 * b)) & 0xff));
    }
    s += parts[i];
  }
  return s;
}

// A per-process scratch directory, emptied before every input.
class Scratch {
 public:
  Scratch() {
    namespace fs = std::filesystem;
    const fs::path base = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    dir_ = (base / ("lq-fuzz-" + std::to_string(::getpid()))).string();
    fs::create_directories(dir_);
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  const std::string& dir() const { return dir_; }
  void clear() {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) std::filesystem::remove_all(e.path(), ec);
  }
  void write(const std::string& name, const std::string& bytes) const {
    FILE* f = std::fopen((dir_ + "/" + name).c_str(), "wb");
    if (!f) return;
    if (!bytes.empty()) std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
  }

 private:
  std::string dir_;
};

}  // namespace lq::fuzz
