// Weight reconstruction error of each quantizer on the 56 target linears of the lance-mini fixture
// (real trained weights). Lives beside the formats tests because it needs the safetensors reader.
// Prints a table (relative Frobenius error ||W - Q(W)||_F / ||W||_F averaged over the linears, and
// the quantizer throughput) and checks the orderings the formats' design relies on.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <regex>

#include "io/safetensors.h"
#include "quant/quantizer.h"
#include "test_paths.h"

namespace lq::quant {
namespace {

struct Method {
  const char* name;
  QuantParams params;
};

std::vector<Method> methods() {
  auto rtn = [](int64_t g) {
    QuantParams p;
    p.scheme = Scheme::Int4Asym;
    p.group = g;
    p.scale_dtype = ScaleDType::BF16;
    return p;
  };
  QuantParams fp4;
  fp4.scheme = Scheme::NvFp4;
  QuantParams fp4_max6 = fp4;  // the candidate search switched off: block scale = e4m3(max / 6t)
  fp4_max6.nvfp4_candidates = 0;
  QuantParams fp4_pow2 = fp4;
  fp4_pow2.nvfp4_pow2_tensor_scale = true;
  QuantParams legacy = fp4;
  legacy.nvfp4 = Nvfp4Encoding::Legacy;
  return {{"rtn int4 g32 (bf16 scales)", rtn(32)},   {"rtn int4 g64 (bf16 scales)", rtn(64)},
          {"rtn int4 g128 (bf16 scales)", rtn(128)}, {"nvfp4 (tensor scale, search)", fp4},
          {"nvfp4 (tensor scale, max/6)", fp4_max6}, {"nvfp4 (pow2 tensor scale)", fp4_pow2},
          {"nvfp4 legacy (no tensor scale)", legacy}};
}

TEST(Reconstruction, LanceMiniTargetLinears) {
  LQ_REQUIRE_SHARED();
  io::TensorStore store(test::lance_mini_dir() + "/model.safetensors");
  const std::regex target(R"(.*layers\.\d+\.(self_attn\.[qkvo]_proj(_moe_gen)?|mlp(_moe_gen)?\.(gate|up|down)_proj)\.weight)");
  std::vector<std::string> names;
  for (const auto& n : store.names())
    if (std::regex_match(n, target)) names.push_back(n);
  ASSERT_EQ(names.size(), 56u);

  std::vector<double> mean_err;
  std::printf("\n%-32s %12s %14s %10s\n", "method (56 lance-mini linears)", "rel. Frob.", "Mweights/s", "bits/w");
  for (const auto& m : methods()) {
    double err_sum = 0, seconds = 0, bits = 0;
    int64_t total = 0;
    for (const auto& n : names) {
      const auto& info = store.info(n);
      const int64_t out = info.shape[0], in = info.shape[1];
      std::vector<float> w = store.read_f32(n), wq(w.size());
      const auto t0 = std::chrono::steady_clock::now();
      fake_quantize(w.data(), out, in, m.params, wq.data());
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      double num = 0, den = 0;
      for (size_t i = 0; i < w.size(); ++i) {
        num += double(w[i] - wq[i]) * (w[i] - wq[i]);
        den += double(w[i]) * w[i];
      }
      err_sum += std::sqrt(num / den);
      total += out * in;
      bits += quantize(w.data(), out, in, m.params).bits_per_weight() * double(out * in);
    }
    mean_err.push_back(err_sum / double(names.size()));
    std::printf("%-32s %12.5f %14.1f %10.3f\n", m.name, mean_err.back(), double(total) / seconds / 1e6, bits / double(total));
  }
  EXPECT_LT(mean_err[0], mean_err[1]);  // smaller groups, smaller error
  EXPECT_LT(mean_err[1], mean_err[2]);
  EXPECT_LT(mean_err[3], mean_err[4]);  // the block-scale search beats block_max / 6
  EXPECT_LT(mean_err[3], mean_err[6]);  // the tensor scale avoids the legacy subnormal block scales
  EXPECT_LT(mean_err[5], mean_err[6]);
}

}  // namespace
}  // namespace lq::quant
