// parallel_for: covers every index exactly once, partitions statically (same ranges on every call,
// boundaries on the grain), uses the configured number of threads, propagates exceptions, and runs
// nested calls serially instead of deadlocking.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kernels/parallel.h"

namespace {

using lq::kernels::parallel_for;
using Range = std::pair<int64_t, int64_t>;

// Restores the default thread count when a test ends.
struct ThreadCountGuard {
  explicit ThreadCountGuard(int n) { lq::kernels::set_num_threads(n); }
  ~ThreadCountGuard() { lq::kernels::set_num_threads(0); }
};

std::vector<Range> ranges_of(int64_t n, int64_t grain) {
  std::mutex mu;
  std::vector<Range> ranges;
  parallel_for(n, grain, [&](int64_t b, int64_t e) {
    std::lock_guard<std::mutex> lock(mu);
    ranges.emplace_back(b, e);
  });
  std::sort(ranges.begin(), ranges.end());
  return ranges;
}

TEST(ParallelFor, CoversEachIndexOnceOnGrainBoundaries) {
  for (int threads : {1, 2, 3, 5, 8}) {
    ThreadCountGuard guard(threads);
    for (int64_t n : {1, 2, 3, 7, 12, 100, 1001}) {
      for (int64_t grain : {1, 3, 4, 16, 2000}) {
        std::vector<std::atomic<int>> hits(n);
        parallel_for(n, grain, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) hits[i]++;
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n " << n << " i " << i;
        const auto ranges = ranges_of(n, grain);
        EXPECT_LE(int(ranges.size()), threads);
        for (auto [b, e] : ranges) {
          EXPECT_EQ(b % grain, 0) << "range start off the grain";
          EXPECT_TRUE(e == n || e % grain == 0) << "range end off the grain";
          EXPECT_LT(b, e);
        }
      }
    }
  }
}

TEST(ParallelFor, PartitionIsStaticAndBalanced) {
  ThreadCountGuard guard(4);
  const auto first = ranges_of(1000, 1);
  for (int rep = 0; rep < 50; ++rep) ASSERT_EQ(ranges_of(1000, 1), first);
  ASSERT_EQ(first.size(), 4u);
  EXPECT_EQ(first, (std::vector<Range>{{0, 250}, {250, 500}, {500, 750}, {750, 1000}}));
}

TEST(ParallelFor, UsesTheConfiguredNumberOfThreads) {
  ThreadCountGuard guard(3);
  EXPECT_EQ(lq::kernels::num_threads(), 3);
  std::mutex mu;
  std::set<std::thread::id> ids;
  parallel_for(3, [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> lock(mu);
    ids.insert(std::this_thread::get_id());
  });
  EXPECT_EQ(ids.size(), 3u);
  EXPECT_TRUE(ids.count(std::this_thread::get_id())) << "chunk 0 should run on the caller";
}

TEST(ParallelFor, PropagatesExceptions) {
  ThreadCountGuard guard(4);
  EXPECT_THROW(parallel_for(100, [](int64_t b, int64_t) {
                 if (b >= 50) throw std::runtime_error("chunk failed");
               }),
               std::runtime_error);
  // The pool still works afterwards.
  std::atomic<int64_t> sum{0};
  parallel_for(100, [&](int64_t b, int64_t e) { sum += e - b; });
  EXPECT_EQ(sum.load(), 100);
}

TEST(ParallelFor, NestedCallsRunSerially) {
  ThreadCountGuard guard(4);
  std::vector<std::atomic<int>> hits(40 * 40);
  parallel_for(40, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      parallel_for(40, [&](int64_t jb, int64_t je) {
        for (int64_t j = jb; j < je; ++j) hits[i * 40 + j]++;
      });
  });
  for (auto& h : hits) ASSERT_EQ(h.load(), 1);
}

TEST(ParallelFor, EmptyRangeCallsNothing) {
  bool called = false;
  parallel_for(0, [&](int64_t, int64_t) { called = true; });
  EXPECT_FALSE(called);
}

}  // namespace
