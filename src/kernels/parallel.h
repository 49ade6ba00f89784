// A persistent thread pool with static, deterministic partitioning.
//
//   parallel_for(n, fn)         calls fn(begin, end) on disjoint ranges covering [0, n)
//   parallel_for(n, grain, fn)  the same, with every range boundary a multiple of `grain`
//
// The ranges depend only on n, grain and num_threads() (never on timing): chunk c of T is
// [c*n/T, (c+1)*n/T) in units of `grain`. Chunk 0 runs on the calling thread, chunk c > 0 on pool
// worker c - 1; the call returns when all are done and rethrows the first exception a chunk threw.
// A parallel_for issued from inside a chunk (nested) runs serially on that thread. Calls from
// several external threads at once are serialised.
#pragma once
#include <cstdint>
#include <type_traits>
#include <utility>

namespace lq::kernels {

// Threads used by all kernels (default: hardware concurrency). Results do not depend on it.
// set_num_threads(n <= 0) restores the default.
void set_num_threads(int n);
int num_threads();

namespace detail {
using RangeFn = void (*)(void* ctx, int64_t begin, int64_t end);
void run_parallel(int64_t n, int64_t grain, RangeFn fn, void* ctx);
}  // namespace detail

template <class F>
void parallel_for(int64_t n, int64_t grain, F&& fn) {
  using Fn = std::remove_reference_t<F>;
  detail::run_parallel(
      n, grain, [](void* ctx, int64_t b, int64_t e) { (*static_cast<Fn*>(ctx))(b, e); },
      const_cast<void*>(static_cast<const void*>(&fn)));
}

template <class F>
void parallel_for(int64_t n, F&& fn) {
  parallel_for(n, 1, std::forward<F>(fn));
}

}  // namespace lq::kernels
