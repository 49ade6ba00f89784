// Quantized linears in the engine: QuantLinear against a dense linear on the dequantized weights, and
// lance-mini quantized (RTN INT4 / NVFP4 via the quant library, written by the formats writers) loaded
// through Engine::load: its logits must equal those of the dense engine on the dequantized weights.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "formats/checkpoint.h"
#include "forward/forward.h"
#include "forward/quant_linear.h"
#include "kernels/q4.h"
#include "golden_util.h"
#include "io/error.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/spec.h"
#include "quant/quantizer.h"
#include "test_paths.h"
#include "test_random.h"

namespace lq::fwd {
namespace {

namespace fs = std::filesystem;

using lq::test::gaussian;

std::unique_ptr<DenseLinear> dense_of(const quant::QTensor& qt, std::vector<float> bias) {
  std::vector<float> w = qt.dequantize();
  std::vector<uint8_t> storage(w.size() * sizeof(float));
  std::memcpy(storage.data(), w.data(), storage.size());
  kernels::DenseMatrix m{kernels::WeightType::F32, qt.out, qt.in, storage.data()};
  return std::make_unique<DenseLinear>(m, std::move(storage), std::move(bias));
}

TEST(QuantLinear, EqualsDenseLinearOnDequantizedWeights) {
  for (quant::Scheme scheme : {quant::Scheme::Int4Asym, quant::Scheme::Int4Sym, quant::Scheme::NvFp4}) {
    SCOPED_TRACE(quant::scheme_name(scheme));
    const int64_t out = 75, in = 320;
    const std::vector<float> w = gaussian(size_t(out * in), 0.05f, 1);
    quant::QuantParams p;
    p.scheme = scheme;
    p.group = 64;
    const quant::QTensor qt = quant::quantize(w.data(), out, in, p);
    const std::vector<float> bias = gaussian(size_t(out), 0.1f, 2);
    const auto q = make_quant_linear(qt, bias, "test");
    ASSERT_NE(dynamic_cast<const QuantLinear*>(q.get()), nullptr);
    const auto d = dense_of(qt, bias);
    for (int64_t n : {1, 3, 9}) {
      const std::vector<float> x = gaussian(size_t(n * in), 1.0f, uint32_t(n));
      std::vector<float> yq(size_t(n * out)), yd(yq.size());
      // The fused kernel quantizes activations to int8 for small batches (kernels/q4.h): the dense
      // linear gets the same x^ there, so the comparison stays exact up to summation order.
      std::vector<float> xd = x;
      if (n <= kernels::q4_int8_max_tokens()) kernels::q8_activations(x.data(), n, in, xd.data());
      q->apply(x.data(), n, yq.data());
      d->apply(xd.data(), n, yd.data());
      // Both are f32 sums of the same products in different orders: relative 1e-5 of the row scale.
      EXPECT_LT(test::rel_max_err(yq, yd), 1e-5) << "n=" << n;
    }
    EXPECT_LT(q->weight_bytes(), uint64_t(out * in) * 2 / 3);  // under 5.4 bits per weight incl. bias and tables
  }
}

// Writes lance-mini with every target linear quantized (RTN) in `format`, plus its config files.
void write_quantized_mini(const std::string& dir, formats::FormatId format, const quant::QuantParams& p) {
  const std::string src = test::lance_mini_dir();
  const model::ModelConfig cfg = model::load_config(src);
  io::TensorStore st(src + "/model.safetensors");
  const model::ModelSpec spec = model::build_spec(cfg, st);
  std::vector<formats::PlanEntry> plan;
  for (const auto& ls : spec.linears) {
    formats::LinearDecl d;
    d.base = ls.name;
    d.scheme = p.scheme;
    d.out = ls.out;
    d.in = ls.in;
    d.group = p.scheme == quant::Scheme::NvFp4 ? 16 : p.group;
    d.has_bias = ls.has_bias;
    plan.push_back(d);
  }
  for (const auto& t : spec.kept) plan.push_back(formats::PlainDecl{t.name, t.shape, io::DType::F32});
  formats::CheckpointWriter w(dir, format, plan);
  for (const auto& ls : spec.linears) {
    const std::vector<float> weight = st.read_f32(ls.weight_name());
    const quant::QTensor qt = quant::quantize(weight.data(), ls.out, ls.in, p);
    std::vector<float> bias;
    if (ls.has_bias) bias = st.read_f32(ls.bias_name());
    w.write_quantized(ls.name, qt, ls.has_bias ? bias.data() : nullptr);
  }
  for (const auto& t : spec.kept) w.write_plain(t.name, st.read_f32(t.name).data());
  w.finish();
  for (const char* f : {"llm_config.json", "lance_config.json"})
    fs::copy_file(src + "/" + f, dir + "/" + f, fs::copy_options::overwrite_existing);
}

void expect_engine_matches_dequantized(formats::FormatId format, quant::Scheme scheme) {
  LQ_REQUIRE_SHARED();
  const std::string dir = test::scratch_dir(std::string("quant_engine_") + formats::format_name(format));
  quant::QuantParams p;
  p.scheme = scheme;
  p.group = 64;
  write_quantized_mini(dir, format, p);

  Engine q = Engine::load(dir);  // detects the quantized layout by itself
  Engine d = Engine::load(test::lance_mini_dir());
  const formats::CheckpointReader reader(dir);
  int quantized = 0;
  for (const auto& ls : d.spec().linears) {
    const LinearId id{ls.layer, ls.path, ls.kind};
    ASSERT_NE(dynamic_cast<const QuantLinear*>(&q.linear(id)), nullptr) << ls.name;
    const auto bias = reader.read_bias(ls.name);
    d.replace_linear(id, dense_of(reader.read_quantized(ls.name), bias ? *bias : std::vector<float>{}));
    ++quantized;
  }
  EXPECT_EQ(quantized, 4 * 2 * 7);

  const std::vector<int32_t> ids = {1, 17, 300, 42, 4000, 5, 9, 1234, 77, 3};
  const int64_t T = int64_t(ids.size());
  const std::vector<Split> splits = {{T, SplitMode::Causal}};
  const auto nd = d.forward(text_chunk(d, ids, text_positions(T), splits), nullptr, CacheWrite::No);
  // Exact comparison: the fused kernels with f32 activations (q4.h), so only summation order differs.
  kernels::set_q4_int8_max_tokens(0);
  const auto nq = q.forward(text_chunk(q, ids, text_positions(T), splits), nullptr, CacheWrite::No);
  kernels::set_q4_int8_max_tokens(-1);
  const double err = test::rel_max_err(q.logits(nq.data(), T), d.logits(nd.data(), T));
  EXPECT_LT(err, 1e-4);
  // The default int8 activations (per linear ~0.5% RMS of the output, q4_test.cpp) through 4
  // layers x 7 linears: measured 0.6% to 1.2% of the max logit on lance-mini.
  const auto n8 = q.forward(text_chunk(q, ids, text_positions(T), splits), nullptr, CacheWrite::No);
  const double err8 = test::rel_max_err(q.logits(n8.data(), T), d.logits(nd.data(), T));
  EXPECT_LT(err8, 3e-2);
  std::printf("  with int8 activations: logits rel max err %.2e\n", err8);
  std::printf("%s %s: logits rel max err vs dense dequantized %.2e; layer weight bytes %llu vs %llu dense\n",
              formats::format_name(format), quant::scheme_name(scheme), err,
              (unsigned long long)q.layer_weight_bytes(), (unsigned long long)d.layer_weight_bytes());
  EXPECT_LT(q.layer_weight_bytes() * 5, d.layer_weight_bytes());  // f32 -> ~4.5-5 bits per weight
}

TEST(QuantEngine, LanceQuantV1Int4MatchesDequantizedDense) {
  expect_engine_matches_dequantized(formats::FormatId::LanceQuantV1, quant::Scheme::Int4Asym);
}
TEST(QuantEngine, CompressedTensorsNvfp4MatchesDequantizedDense) {
  expect_engine_matches_dequantized(formats::FormatId::CompressedTensors, quant::Scheme::NvFp4);
}
TEST(QuantEngine, AutoAwqInt4MatchesDequantizedDense) {
  expect_engine_matches_dequantized(formats::FormatId::AutoAwq, quant::Scheme::Int4Asym);
}

// LoadOptions::head = Int4: the lm_head becomes the RTN INT4 g64 quantization of the stored head (the
// quant library's, quantized here independently from the f32 tensor) run by the fused kernel; the
// other weights are untouched, so the hidden states are the stored-head engine's bit for bit.
TEST(QuantEngine, Int4HeadIsTheRtnQuantizedHead) {
  LQ_REQUIRE_SHARED();
  Engine stored = Engine::load(test::lance_mini_dir());
  LoadOptions lo;
  lo.head = HeadFormat::Int4;
  Engine q = Engine::load(test::lance_mini_dir(), lo);
  const auto& c = stored.config();

  const io::TensorStore st(test::lance_mini_dir());
  const std::vector<float> head = st.read_f32("language_model.lm_head.weight");
  quant::QuantParams p;
  p.scheme = quant::Scheme::Int4Asym;
  p.group = 64;
  const quant::QTensor qt = quant::quantize(head.data(), c.vocab_size, c.hidden_size, p);
  std::unique_ptr<DenseLinear> expect_head = dense_of(qt, {});

  const std::vector<int32_t> ids = {1, 17, 300, 42, 4000, 5};
  const int64_t T = int64_t(ids.size());
  const std::vector<Split> splits = {{T, SplitMode::Causal}};
  const auto hs = stored.forward(text_chunk(stored, ids, text_positions(T), splits), nullptr, CacheWrite::No);
  const auto hq = q.forward(text_chunk(q, ids, text_positions(T), splits), nullptr, CacheWrite::No);
  ASSERT_EQ(hs, hq);
  std::vector<float> want(size_t(T * c.vocab_size));
  expect_head->apply(hs.data(), T, want.data());
  kernels::set_q4_int8_max_tokens(0);  // f32 activations: only summation order differs
  const double err = test::rel_max_err(q.logits(hq.data(), T), want);
  kernels::set_q4_int8_max_tokens(-1);
  EXPECT_LT(err, 1e-4);
  // Against the stored f32 head: a 4-bit head moves the logits by about a tenth of the largest one.
  const double vs_stored = test::rel_max_err(q.logits(hq.data(), T), stored.logits(hs.data(), T));
  EXPECT_GT(vs_stored, 1e-4);
  EXPECT_LT(vs_stored, 0.25);  // measured 0.118 on lance-mini (its perplexity cost: README)
  std::printf("  int4 head: logits rel max err %.2e vs RTN-dequantized head, %.2e vs stored head\n", err, vs_stored);
  EXPECT_THROW(parse_head_format("int3"), Error);
  EXPECT_EQ(parse_head_format("bf16"), HeadFormat::Stored);
}

// LoadOptions::head = Int8: the RTN INT8 g64 (symmetric) quantization of the stored head, run by the
// fused 8-bit kernel; its logits sit far closer to the stored head's than the INT4 head's.
TEST(QuantEngine, Int8HeadIsTheRtnQuantizedHead) {
  LQ_REQUIRE_SHARED();
  Engine stored = Engine::load(test::lance_mini_dir());
  LoadOptions lo;
  lo.head = HeadFormat::Int8;
  Engine q = Engine::load(test::lance_mini_dir(), lo);
  const auto& c = stored.config();
  const io::TensorStore st(test::lance_mini_dir());
  const std::vector<float> head = st.read_f32("language_model.lm_head.weight");
  quant::QuantParams p;
  p.scheme = quant::Scheme::Int8Sym;
  p.group = 64;
  const quant::QTensor qt = quant::quantize(head.data(), c.vocab_size, c.hidden_size, p);
  std::unique_ptr<DenseLinear> expect_head = dense_of(qt, {});
  const std::vector<int32_t> ids = {1, 17, 300, 42, 4000, 5};
  const int64_t T = int64_t(ids.size());
  const std::vector<Split> splits = {{T, SplitMode::Causal}};
  const auto hs = stored.forward(text_chunk(stored, ids, text_positions(T), splits), nullptr, CacheWrite::No);
  const auto hq = q.forward(text_chunk(q, ids, text_positions(T), splits), nullptr, CacheWrite::No);
  ASSERT_EQ(hs, hq);
  std::vector<float> want(size_t(T * c.vocab_size));
  expect_head->apply(hs.data(), T, want.data());
  kernels::set_q4_int8_max_tokens(0);  // f32 activations: only summation order differs
  const double err = test::rel_max_err(q.logits(hq.data(), T), want);
  kernels::set_q4_int8_max_tokens(-1);
  EXPECT_LT(err, 1e-4);
  const double vs_stored = test::rel_max_err(q.logits(hq.data(), T), stored.logits(hs.data(), T));
  EXPECT_GT(vs_stored, 1e-5);
  EXPECT_LT(vs_stored, 0.02);
  std::printf("  int8 head: logits rel max err %.2e vs RTN-dequantized head, %.2e vs stored head\n", err, vs_stored);
  EXPECT_EQ(parse_head_format("int8"), HeadFormat::Int8);
}

TEST(QuantEngine, PlainDirectoryIsNotQuantized) {
  LQ_REQUIRE_SHARED();
  EXPECT_FALSE(is_quantized_checkpoint(test::lance_mini_dir()));
}

}  // namespace
}  // namespace lq::fwd
