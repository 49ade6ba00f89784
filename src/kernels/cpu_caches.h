// The machine's cache sizes as it reports them, for sizing benchmark working sets that must exceed
// the caches. Two sources, because they disagree on virtual machines: Linux sysfs
// (/sys/devices/system/cpu/cpu*/cache/index*: level, type, size and the CPUs sharing each instance)
// and the C library's sysconf(_SC_LEVELn_CACHE_SIZE) (CPUID). The last-level cache is the largest
// total either reports.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lq::kernels {

struct CacheLevel {
  int level = 0;
  uint64_t bytes_per_instance = 0;
  int instances = 0;  // distinct sets of CPUs sharing one instance
  uint64_t total() const { return bytes_per_instance * uint64_t(instances); }
};

// Data / unified caches under `cpu_root` (normally /sys/devices/system/cpu), one entry per level.
std::vector<CacheLevel> read_sysfs_caches(const std::string& cpu_root = "/sys/devices/system/cpu");

struct LastLevelCache {
  uint64_t bytes = 0;       // the largest of the sources below (0 when none reports anything)
  std::string description;  // what was read, e.g. "sysfs L3 32 MiB x 1; sysconf L3 256 MiB"
};
LastLevelCache last_level_cache(const std::string& cpu_root = "/sys/devices/system/cpu");

// A working set that streams from memory: at least 4x the last-level cache and never under 1 GiB.
uint64_t streaming_working_set_bytes(uint64_t last_level_cache_bytes);

}  // namespace lq::kernels
