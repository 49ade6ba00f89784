// The thread pool behind parallel_for. Between jobs, workers (and the caller waiting for them) spin
// for a bounded time (kSpinIterations pauses, tens of microseconds) before sleeping on a condition
// variable: batch-1 decoding issues hundreds of short jobs per token, and a futex wake-up per job
// cost more than the job's tail; the bound keeps an idle pool off shared cores. Each job is split
// into at most num_threads() chunks whose bounds are a pure function of (n, grain, thread count).
#include "kernels/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace lq::kernels {

namespace {

thread_local bool t_inside_parallel_for = false;

// Spin-wait pauses before sleeping (a pause is a few to tens of ns: well under 100 us in all).
constexpr int kSpinIterations = 4000;

inline void cpu_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until pred() or the bound; true when pred() held.
template <class P>
bool spin_until(P&& pred) {
  for (int i = 0; i < kSpinIterations; ++i) {
    if (pred()) return true;
    cpu_pause();
  }
  return pred();
}

struct Chunking {
  int64_t n, grain, units;
  int chunks;
  // Range of chunk c: [c*units/chunks, (c+1)*units/chunks) in units of grain, clipped to n.
  std::pair<int64_t, int64_t> range(int c) const {
    const int64_t ub = units * c / chunks, ue = units * (c + 1) / chunks;
    return {ub * grain, std::min(ue * grain, n)};
  }
};

class ThreadPool {
 public:
  explicit ThreadPool(int threads) : threads_(threads) {
    for (int w = 1; w < threads; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_.store(true, std::memory_order_release);
    }
    start_cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int threads() const { return threads_; }

  void run(const Chunking& job, detail::RangeFn fn, void* ctx) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = job;
      fn_ = fn;
      ctx_ = ctx;
      error_ = nullptr;
      pending_.store(job.chunks - 1, std::memory_order_relaxed);
      // One atomic word carries the job's generation and chunk count, so a worker decides whether it
      // takes part from the same value that announced the job (job_ may already be the next job's
      // for a worker that did not take part).
      ++generation_count_;
      ticket_.store(generation_count_ << kChunkBits | uint64_t(job.chunks), std::memory_order_release);
    }
    if (job.chunks > 1) start_cv_.notify_all();
    run_chunk(0);
    if (!spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    std::lock_guard<std::mutex> lock(mu_);  // error_ is written under the lock
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run_chunk(int c) {
    const auto [b, e] = job_.range(c);
    try {
      if (b < e) fn_(ctx_, b, e);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
  }

  void worker_loop(int index) {
    t_inside_parallel_for = true;
    uint64_t seen = 0;
    for (;;) {
      const auto has_work = [&] { return ticket_.load(std::memory_order_acquire) != seen; };
      if (!spin_until([&] { return has_work() || stop_.load(std::memory_order_acquire); })) {
        std::unique_lock<std::mutex> lock(mu_);
        start_cv_.wait(lock, [&] { return stop_.load(std::memory_order_acquire) || has_work(); });
      }
      if (stop_.load(std::memory_order_acquire)) return;
      seen = ticket_.load(std::memory_order_acquire);
      if (uint64_t(index) < (seen & kChunkMask)) {  // job_ stays this job's until we decrement pending_
        run_chunk(index);
        // The last worker to finish wakes the caller if it went to sleep; notifying under the lock
        // means the caller is either before its predicate check or inside wait().
        if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
          std::lock_guard<std::mutex> lock(mu_);
          done_cv_.notify_one();
        }
      }
    }
  }

  const int threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  static constexpr int kChunkBits = 16;  // chunks <= threads; run_parallel caps threads below 2^16
  static constexpr uint64_t kChunkMask = (uint64_t(1) << kChunkBits) - 1;
  uint64_t generation_count_ = 0;    // written by the caller only
  std::atomic<uint64_t> ticket_{0};  // generation << kChunkBits | chunks of the current job
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  Chunking job_{};
  detail::RangeFn fn_ = nullptr;
  void* ctx_ = nullptr;
  std::exception_ptr error_;
};

std::mutex g_pool_mu;  // serialises external callers and pool resizing
int g_requested_threads = 0;
std::unique_ptr<ThreadPool> g_pool;

int default_threads() { return std::clamp(int(std::thread::hardware_concurrency()), 1, 4096); }

}  // namespace

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lock(g_pool_mu);
  g_requested_threads = std::clamp(n, 0, 4096);
  g_pool.reset();  // rebuilt lazily with the new size
}

int num_threads() {
  std::lock_guard<std::mutex> lock(g_pool_mu);
  return g_requested_threads > 0 ? g_requested_threads : default_threads();
}

namespace detail {

void run_parallel(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t units = (n + grain - 1) / grain;
  if (t_inside_parallel_for || units == 1) {
    fn(ctx, 0, n);  // nested or trivial: serial on this thread
    return;
  }
  std::lock_guard<std::mutex> lock(g_pool_mu);
  const int threads = g_requested_threads > 0 ? g_requested_threads : default_threads();
  if (!g_pool || g_pool->threads() != threads) g_pool = std::make_unique<ThreadPool>(threads);
  const Chunking job{n, grain, units, int(std::min<int64_t>(threads, units))};
  t_inside_parallel_for = true;
  struct Reset {
    ~Reset() { t_inside_parallel_for = false; }
  } reset;
  g_pool->run(job, fn, ctx);
}

}  // namespace detail

}  // namespace lq::kernels
