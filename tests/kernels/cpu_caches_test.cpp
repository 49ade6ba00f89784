// kernels/cpu_caches.h: cache sizes read from a sysfs tree, and the benchmark working set sized from
// them (issue 14: 256 MiB against hosts that report up to 480 MiB of L3).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "kernels/cpu_caches.h"
#include "test_paths.h"

namespace lq::kernels {
namespace {

namespace fs = std::filesystem;

void cache(const fs::path& root, int cpu, int index, int level, const char* type, const char* size, const char* shared) {
  const fs::path d = root / ("cpu" + std::to_string(cpu)) / "cache" / ("index" + std::to_string(index));
  fs::create_directories(d);
  std::ofstream(d / "level") << level << "\n";
  std::ofstream(d / "type") << type << "\n";
  std::ofstream(d / "size") << size << "\n";
  std::ofstream(d / "shared_cpu_list") << shared << "\n";
}

TEST(CpuCaches, ReadsLevelsAndInstancesFromSysfs) {
  const fs::path root = test::scratch_dir("cpu_caches");
  // Two sockets of 2 CPUs: per-CPU L1d / L2, one 240 MiB L3 per socket (480 MiB in all).
  for (int c = 0; c < 4; ++c) {
    cache(root, c, 0, 1, "Data", "48K", std::to_string(c).c_str());
    cache(root, c, 1, 1, "Instruction", "32K", std::to_string(c).c_str());
    cache(root, c, 2, 2, "Unified", "2048K", std::to_string(c).c_str());
    cache(root, c, 3, 3, "Unified", "245760K", c < 2 ? "0-1" : "2-3");
  }
  fs::create_directories(root / "cpufreq");  // not a cpuN directory
  const std::vector<CacheLevel> levels = read_sysfs_caches(root.string());
  ASSERT_EQ(levels.size(), 3u);
  EXPECT_EQ(levels[0].level, 1);
  EXPECT_EQ(levels[0].bytes_per_instance, 48u << 10);
  EXPECT_EQ(levels[0].instances, 4);
  EXPECT_EQ(levels[2].level, 3);
  EXPECT_EQ(levels[2].bytes_per_instance, 240ull << 20);
  EXPECT_EQ(levels[2].instances, 2);
  const LastLevelCache llc = last_level_cache(root.string());
  EXPECT_GE(llc.bytes, 480ull << 20);  // sysconf may report more, never less is used
  EXPECT_NE(llc.description.find("sysfs L3 240 MiB x 2"), std::string::npos) << llc.description;
  EXPECT_GE(streaming_working_set_bytes(llc.bytes), 4 * (480ull << 20));
}

TEST(CpuCaches, WorkingSetIsFourTimesTheCacheAndAtLeastOneGiB) {
  EXPECT_EQ(streaming_working_set_bytes(0), 1ull << 30);
  EXPECT_EQ(streaming_working_set_bytes(32ull << 20), 1ull << 30);
  EXPECT_EQ(streaming_working_set_bytes(480ull << 20), 1920ull << 20);
}

TEST(CpuCaches, ThisMachine) {
  const LastLevelCache llc = last_level_cache();
  EXPECT_FALSE(llc.description.empty());
  std::printf("this machine: %s -> working set %llu MiB\n", llc.description.c_str(),
              (unsigned long long)(streaming_working_set_bytes(llc.bytes) >> 20));
}

}  // namespace
}  // namespace lq::kernels
