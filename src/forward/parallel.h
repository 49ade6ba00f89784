// Local fallback for kernels' parallel_for until src/kernels/parallel.h lands: splits [0, n) into
// contiguous ranges, one per worker thread (kernels::num_threads()), and runs fn(begin, end) on each.
#pragma once
#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#include "kernels/linear.h"

namespace lq::fwd {

template <class Fn>
void parallel_for(int64_t n, Fn&& fn) {
  const int64_t workers = std::min<int64_t>(n, kernels::num_threads());
  if (workers <= 1) {
    if (n > 0) fn(int64_t(0), n);
    return;
  }
  std::vector<std::thread> threads;
  threads.reserve(size_t(workers - 1));
  for (int64_t w = 1; w < workers; ++w)
    threads.emplace_back([&fn, n, w, workers] { fn(n * w / workers, n * (w + 1) / workers); });
  fn(int64_t(0), n / workers);
  for (auto& t : threads) t.join();
}

}  // namespace lq::fwd
