#include "kernels/cpu_caches.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

namespace lq::kernels {

namespace fs = std::filesystem;

namespace {

std::string first_line(const fs::path& p) {
  std::ifstream in(p);
  std::string s;
  std::getline(in, s);
  return s;
}

// "32768K", "1M", "512" (bytes) -> bytes; 0 when unreadable.
uint64_t parse_size(const std::string& s) {
  size_t used = 0;
  uint64_t v = 0;
  try {
    v = std::stoull(s, &used);
  } catch (const std::exception&) {
    return 0;
  }
  const char unit = used < s.size() ? s[used] : ' ';
  if (unit == 'K' || unit == 'k') return v << 10;
  if (unit == 'M' || unit == 'm') return v << 20;
  if (unit == 'G' || unit == 'g') return v << 30;
  return v;
}

std::string mib(uint64_t b) { return std::to_string(b >> 20) + " MiB"; }

}  // namespace

std::vector<CacheLevel> read_sysfs_caches(const std::string& cpu_root) {
  std::map<int, std::pair<uint64_t, std::set<std::string>>> by_level;  // level -> size, sharing lists
  std::error_code ec;
  for (fs::directory_iterator cpu(cpu_root, ec), end; !ec && cpu != end; cpu.increment(ec)) {
    const std::string name = cpu->path().filename().string();
    if (name.size() < 4 || name.compare(0, 3, "cpu") != 0 || name.find_first_not_of("0123456789", 3) != std::string::npos) continue;
    std::error_code ec2;
    for (fs::directory_iterator idx(cpu->path() / "cache", ec2), end2; !ec2 && idx != end2; idx.increment(ec2)) {
      if (idx->path().filename().string().rfind("index", 0) != 0) continue;
      const std::string type = first_line(idx->path() / "type");
      if (type != "Data" && type != "Unified") continue;
      const int level = std::atoi(first_line(idx->path() / "level").c_str());
      const uint64_t size = parse_size(first_line(idx->path() / "size"));
      if (level <= 0 || size == 0) continue;
      auto& e = by_level[level];
      e.first = std::max(e.first, size);
      e.second.insert(first_line(idx->path() / "shared_cpu_list"));
    }
  }
  std::vector<CacheLevel> out;
  for (const auto& [level, e] : by_level) out.push_back({level, e.first, int(e.second.size())});
  return out;
}

LastLevelCache last_level_cache(const std::string& cpu_root) {
  LastLevelCache r;
  const std::vector<CacheLevel> levels = read_sysfs_caches(cpu_root);
  if (!levels.empty()) {
    const CacheLevel& l = levels.back();
    r.bytes = l.total();
    r.description = "sysfs L" + std::to_string(l.level) + " " + mib(l.bytes_per_instance) + " x " + std::to_string(l.instances);
  } else {
    r.description = "sysfs: no cache information";
  }
#if defined(_SC_LEVEL3_CACHE_SIZE)
  for (const auto& [name, id] : {std::pair<const char*, int>{"L4", _SC_LEVEL4_CACHE_SIZE}, {"L3", _SC_LEVEL3_CACHE_SIZE},
                                 {"L2", _SC_LEVEL2_CACHE_SIZE}}) {
    const long v = ::sysconf(id);
    if (v <= 0) continue;
    r.description += std::string("; sysconf ") + name + " " + mib(uint64_t(v));
    r.bytes = std::max(r.bytes, uint64_t(v));
    break;
  }
#endif
  return r;
}

uint64_t streaming_working_set_bytes(uint64_t llc) { return std::max<uint64_t>(uint64_t(1) << 30, 4 * llc); }

}  // namespace lq::kernels
