// llama.cpp's per-tensor type mix (llama-quant.cpp's llama_tensor_get_type) for the tensors of a dense
// qwen3 file, checked against the rules written out by hand for small layer counts.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "export/type_mix.h"
#include "io/error.h"

using namespace lq::exporter;

namespace {

// A qwen3 und path in our export's order: token_embd, per layer q k v o gate up down (with norms between,
// as category Other), then output.
std::vector<MixTensor> qwen3_tensors(int n_layer, int64_t hidden = 256, int64_t ffn = 768, int64_t head_cols = 256) {
  std::vector<MixTensor> t;
  t.push_back({"token_embd.weight", TensorCategory::TokenEmbd, -1, hidden});
  const std::pair<const char*, TensorCategory> linears[] = {
      {"attn_q", TensorCategory::AttnQ},       {"attn_k", TensorCategory::AttnK},     {"attn_v", TensorCategory::AttnV},
      {"attn_output", TensorCategory::AttnOutput}, {"ffn_gate", TensorCategory::FfnGate}, {"ffn_up", TensorCategory::FfnUp},
      {"ffn_down", TensorCategory::FfnDown}};
  for (int i = 0; i < n_layer; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    t.push_back({p + "attn_norm.weight", TensorCategory::Other, i, hidden});
    for (const auto& [n, c] : linears) t.push_back({p + n + ".weight", c, i, c == TensorCategory::FfnDown ? ffn : hidden});
  }
  t.push_back({"output_norm.weight", TensorCategory::Other, -1, hidden});
  t.push_back({"output.weight", TensorCategory::Output, -1, head_cols});
  return t;
}

GgmlType type_of(const std::vector<MixTensor>& t, const std::vector<GgmlType>& types, const std::string& name) {
  for (size_t i = 0; i < t.size(); ++i)
    if (t[i].name == name) return types[i];
  ADD_FAILURE() << "no tensor " << name;
  return GgmlType::F32;
}

}  // namespace

TEST(TypeMix, Q4KMOnFourAndEightLayers) {
  // use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2.
  // n = 4: n/8 = 0, 7n/8 = 3 -> layers 2 and 3. n = 8: n/8 = 1, 7n/8 = 7 -> layers 0, 3, 6, 7.
  for (const auto& [n, more] : std::vector<std::pair<int, std::vector<int>>>{{4, {2, 3}}, {8, {0, 3, 6, 7}}}) {
    const auto t = qwen3_tensors(n);
    const auto types = choose_types(parse_file_type("q4_k_m", "t"), t, {n, 4, 2, true, false});
    EXPECT_EQ(type_of(t, types, "output.weight"), GgmlType::Q6_K);
    EXPECT_EQ(type_of(t, types, "token_embd.weight"), GgmlType::Q4_K);
    EXPECT_EQ(type_of(t, types, "output_norm.weight"), GgmlType::F32);
    for (int i = 0; i < n; ++i) {
      const bool m = std::find(more.begin(), more.end(), i) != more.end();
      const std::string p = "blk." + std::to_string(i) + ".";
      EXPECT_EQ(type_of(t, types, p + "attn_v.weight"), m ? GgmlType::Q6_K : GgmlType::Q4_K) << n << " " << i;
      EXPECT_EQ(type_of(t, types, p + "ffn_down.weight"), m ? GgmlType::Q6_K : GgmlType::Q4_K) << n << " " << i;
      for (const char* k : {"attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"})
        EXPECT_EQ(type_of(t, types, p + k + ".weight"), GgmlType::Q4_K) << k;
    }
  }
  EXPECT_EQ(parse_file_type("Q4_K", "t").llama_ftype, 15u);  // llama-quantize's alias for Q4_K_M
}

TEST(TypeMix, Q4KSAndQ5KM) {
  const int n = 16;
  const auto t = qwen3_tensors(n);
  const auto s = choose_types(parse_file_type("q4_k_s", "t"), t, {n, 4, 2, true, false});
  for (int i = 0; i < n; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    EXPECT_EQ(type_of(t, s, p + "attn_v.weight"), i < 4 ? GgmlType::Q5_K : GgmlType::Q4_K) << i;
    EXPECT_EQ(type_of(t, s, p + "ffn_down.weight"), i < 2 ? GgmlType::Q5_K : GgmlType::Q4_K) << i;  // n/8 = 2
  }
  const auto m = choose_types(parse_file_type("q5_k_m", "t"), t, {n, 4, 2, true, false});
  // n = 16: n/8 = 2, 7n/8 = 14: layers 0, 1, 4, 7, 10, 13, 14, 15.
  const std::vector<int> more = {0, 1, 4, 7, 10, 13, 14, 15};
  for (int i = 0; i < n; ++i) {
    const bool mb = std::find(more.begin(), more.end(), i) != more.end();
    EXPECT_EQ(type_of(t, m, "blk." + std::to_string(i) + ".ffn_down.weight"), mb ? GgmlType::Q6_K : GgmlType::Q5_K) << i;
  }
  EXPECT_EQ(type_of(t, m, "output.weight"), GgmlType::Q6_K);
}

TEST(TypeMix, Iq4XsQ4_0AndPure) {
  const int n = 8;
  const auto t = qwen3_tensors(n);
  // IQ4_XS: attn_v Q5_K only with n_head / n_head_kv >= 4; ffn_down of the first n/8 layers Q5_K only
  // without an importance matrix.
  auto x = choose_types(parse_file_type("iq4_xs", "t"), t, {n, 4, 2, true, false});
  EXPECT_EQ(type_of(t, x, "blk.0.attn_v.weight"), GgmlType::IQ4_XS);
  EXPECT_EQ(type_of(t, x, "blk.0.ffn_down.weight"), GgmlType::IQ4_XS);
  EXPECT_EQ(type_of(t, x, "output.weight"), GgmlType::Q6_K);
  x = choose_types(parse_file_type("iq4_xs", "t"), t, {n, 16, 2, false, false});
  EXPECT_EQ(type_of(t, x, "blk.5.attn_v.weight"), GgmlType::Q5_K);
  EXPECT_EQ(type_of(t, x, "blk.0.ffn_down.weight"), GgmlType::Q5_K);
  EXPECT_EQ(type_of(t, x, "blk.1.ffn_down.weight"), GgmlType::IQ4_XS);
  // Q4_0 with importance: the first n/8 ffn_down in Q4_1.
  const auto q = choose_types(parse_file_type("q4_0", "t"), t, {n, 4, 2, true, false});
  EXPECT_EQ(type_of(t, q, "blk.0.ffn_down.weight"), GgmlType::Q4_1);
  EXPECT_EQ(type_of(t, q, "blk.1.ffn_down.weight"), GgmlType::Q4_0);
  EXPECT_EQ(type_of(t, q, "token_embd.weight"), GgmlType::Q4_0);
  // Pure: every quantized tensor in the base type, the head too.
  const auto p = choose_types(parse_file_type("q4_k_m", "t"), t, {n, 4, 2, true, true});
  for (size_t i = 0; i < t.size(); ++i)
    EXPECT_EQ(p[i], t[i].category == TensorCategory::Other ? GgmlType::F32 : GgmlType::Q4_K) << t[i].name;
  // Dense file types keep everything dense.
  const auto f = choose_types(parse_file_type("f16", "t"), t, {n, 4, 2, true, false});
  EXPECT_EQ(type_of(t, f, "output.weight"), GgmlType::F16);
}

TEST(TypeMix, RowsThatDoNotFitFallBack) {
  // A head of 96 columns cannot hold Q6_K (256) -> Q8_0, as llama.cpp; an IQ4_XS linear of 96 columns
  // falls back to IQ4_NL; a Q4_K linear of 96 columns needs Q5_0, which we do not write: a clear error.
  auto t = qwen3_tensors(1, 96, 96, 96);
  const auto x = choose_types(parse_file_type("iq4_xs", "t"), t, {1, 4, 2, true, false});
  EXPECT_EQ(type_of(t, x, "output.weight"), GgmlType::Q8_0);
  EXPECT_EQ(type_of(t, x, "blk.0.attn_q.weight"), GgmlType::IQ4_NL);
  EXPECT_THROW(choose_types(parse_file_type("q4_k_m", "t"), t, {1, 4, 2, true, false}), lq::Error);
  EXPECT_THROW(parse_file_type("q3_k_m", "t"), lq::Error);
}
