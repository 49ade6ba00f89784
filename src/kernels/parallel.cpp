// The thread pool behind parallel_for. Workers sleep on a condition variable between jobs (the
// build machines are shared, so no spinning); each job is split into at most num_threads() chunks
// whose bounds are a pure function of (n, grain, thread count).
#include "kernels/parallel.h"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace lq::kernels {

namespace {

thread_local bool t_inside_parallel_for = false;

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
      stop_ = true;
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
      pending_ = job.chunks - 1;
      ++generation_;
    }
    if (job.chunks > 1) start_cv_.notify_all();
    run_chunk(0);
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return pending_ == 0; });
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
      {
        std::unique_lock<std::mutex> lock(mu_);
        start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        if (index >= job_.chunks) continue;
      }
      run_chunk(index);
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }

  const int threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  Chunking job_{};
  detail::RangeFn fn_ = nullptr;
  void* ctx_ = nullptr;
  std::exception_ptr error_;
};

std::mutex g_pool_mu;  // serialises external callers and pool resizing
int g_requested_threads = 0;
std::unique_ptr<ThreadPool> g_pool;

int default_threads() { return std::max(1, int(std::thread::hardware_concurrency())); }

}  // namespace

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lock(g_pool_mu);
  g_requested_threads = std::max(n, 0);
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
