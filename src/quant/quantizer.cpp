#include "quant/quantizer.h"

#include <algorithm>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "io/error.h"
#include "quant/nvfp4.h"
#include "quant/rtn.h"

namespace lq::quant {

int64_t QuantParams::effective_group(int64_t in) const {
  if (scheme == Scheme::NvFp4) return 16;
  return group == 0 ? in : group;
}

namespace {
RtnParams rtn_params(const QuantParams& p, int64_t in) { return {p.scheme, p.effective_group(in), p.scale_dtype}; }
}  // namespace

QTensor quantize(const float* w, int64_t out, int64_t in, const QuantParams& p, const float* clip_ratios) {
  if (p.scheme == Scheme::NvFp4) {
    if (clip_ratios) fail("quantize", "clip ratios apply to integer schemes only");
    return quantize_nvfp4(w, out, in, p);
  }
  return quantize_rtn(w, out, in, rtn_params(p, in), clip_ratios);
}

void fake_quantize(const float* w, int64_t out, int64_t in, const QuantParams& p, float* wq, const float* clip_ratios) {
  if (p.scheme == Scheme::NvFp4) {
    if (clip_ratios) fail("fake_quantize", "clip ratios apply to integer schemes only");
    fake_quantize_nvfp4(w, out, in, p, wq);
    return;
  }
  fake_quantize_rtn(w, out, in, rtn_params(p, in), wq, clip_ratios);
}

void parallel_rows(int64_t rows, int64_t elems_per_row, const std::function<void(int64_t, int64_t)>& body) {
  constexpr int64_t kMinElemsPerThread = 1 << 16;  // below this, thread start-up costs more than it saves
  const int64_t hw = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t by_work = std::max<int64_t>(1, rows * std::max<int64_t>(elems_per_row, 1) / kMinElemsPerThread);
  const int64_t nthreads = std::min({hw, by_work, rows});
  if (nthreads <= 1) {
    body(0, rows);
    return;
  }
  std::vector<std::thread> threads;
  std::exception_ptr first_error;
  std::mutex mu;
  for (int64_t t = 0; t < nthreads; ++t) {
    const int64_t r0 = rows * t / nthreads, r1 = rows * (t + 1) / nthreads;
    threads.emplace_back([&, r0, r1] {
      try {
        body(r0, r1);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!first_error) first_error = std::current_exception();
      }
    });
  }
  for (auto& th : threads) th.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace lq::quant
