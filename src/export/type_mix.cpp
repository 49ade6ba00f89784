#include "export/type_mix.h"

#include <algorithm>
#include <cctype>

#include "io/error.h"

namespace lq::exporter {

namespace {

// llama_ftype values (llama.h).
enum : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 7, kQ4_K_S = 14, kQ4_K_M = 15, kQ5_K_S = 16, kQ5_K_M = 17,
  kQ6_K = 18, kIQ4_NL = 25, kIQ4_XS = 30
};

struct Named {
  const char* cli;
  FileType ft;
};
const Named kFileTypes[] = {
    {"f32", {"F32", kF32, GgmlType::F32}},         {"f16", {"F16", kF16, GgmlType::F16}},
    {"q8_0", {"Q8_0", kQ8_0, GgmlType::Q8_0}},     {"q4_0", {"Q4_0", kQ4_0, GgmlType::Q4_0}},
    {"q4_1", {"Q4_1", kQ4_1, GgmlType::Q4_1}},     {"q4_k_s", {"Q4_K_S", kQ4_K_S, GgmlType::Q4_K}},
    {"q4_k_m", {"Q4_K_M", kQ4_K_M, GgmlType::Q4_K}}, {"q4_k", {"Q4_K_M", kQ4_K_M, GgmlType::Q4_K}},
    {"q5_k_s", {"Q5_K_S", kQ5_K_S, GgmlType::Q5_K}}, {"q5_k_m", {"Q5_K_M", kQ5_K_M, GgmlType::Q5_K}},
    {"q5_k", {"Q5_K_M", kQ5_K_M, GgmlType::Q5_K}}, {"q6_k", {"Q6_K", kQ6_K, GgmlType::Q6_K}},
    {"iq4_nl", {"IQ4_NL", kIQ4_NL, GgmlType::IQ4_NL}}, {"iq4_xs", {"IQ4_XS", kIQ4_XS, GgmlType::IQ4_XS}},
};

bool is_quantized(GgmlType t) { return t != GgmlType::F32 && t != GgmlType::F16; }

// llama.cpp's use_more_bits: the first and last eighth of the layers and every third one in between.
bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

}  // namespace

FileType parse_file_type(const std::string& name, const std::string& where) {
  std::string lower = name;
  for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& n : kFileTypes)
    if (lower == n.cli) return n.ft;
  fail(where, "unknown GGUF type '" + name +
                  "' (expected f32, f16, q8_0, q4_0, q4_1, q4_k_s, q4_k_m, q4_k, q5_k_s, q5_k_m, q5_k, q6_k, iq4_nl, iq4_xs)");
}

std::vector<GgmlType> choose_types(const FileType& ft, const std::vector<MixTensor>& tensors, const MixContext& ctx) {
  const uint32_t f = ft.llama_ftype;
  const int n_gqa = ctx.n_head_kv > 0 ? ctx.n_head / ctx.n_head_kv : 1;
  int n_attention_wv = 0;
  for (const auto& t : tensors) n_attention_wv += t.category == TensorCategory::AttnV;
  int i_attention_wv = 0;
  std::vector<GgmlType> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) {
    if (t.category == TensorCategory::Other) {
      out.push_back(GgmlType::F32);
      continue;
    }
    GgmlType type = ft.base;
    if (!is_quantized(type)) {
      out.push_back(type);
      continue;
    }
    const int nl = ctx.n_layer, il = t.layer;
    if (!ctx.pure) {
      switch (t.category) {
        case TensorCategory::Output:
          // A head whose rows do not fit the base type's blocks goes to Q8_0; otherwise Q6_K unless Q8_0.
          if (t.ncols % ggml_traits(type).block_elems != 0) type = GgmlType::Q8_0;
          else if (type != GgmlType::Q8_0) type = GgmlType::Q6_K;
          break;
        case TensorCategory::AttnV:
          if ((f == kIQ4_NL || f == kIQ4_XS) && n_gqa >= 4) type = GgmlType::Q5_K;
          else if ((f == kQ4_K_M || f == kQ5_K_M) && use_more_bits(i_attention_wv, n_attention_wv)) type = GgmlType::Q6_K;
          else if (f == kQ4_K_S && i_attention_wv < 4) type = GgmlType::Q5_K;
          ++i_attention_wv;
          break;
        case TensorCategory::FfnDown:
          if (f == kQ4_K_M) {
            if (use_more_bits(il, nl)) type = GgmlType::Q6_K;
          } else if (il < nl / 8 && (f == kIQ4_NL || f == kIQ4_XS) && !ctx.has_importance) {
            type = GgmlType::Q5_K;
          } else if (f == kQ5_K_M && use_more_bits(il, nl)) {
            type = GgmlType::Q6_K;
          } else if (f == kQ4_K_S && il < nl / 8) {
            type = GgmlType::Q5_K;
          } else if (f == kQ4_0 && ctx.has_importance && il < nl / 8) {
            type = GgmlType::Q4_1;
          }
          break;
        default:
          break;  // token_embd keeps the base type; q/k/o/gate/up have no rule for these file types
      }
    } else if (t.category == TensorCategory::AttnV) {
      ++i_attention_wv;
    }
    // Row lengths a type cannot hold: llama.cpp's fallbacks that this exporter writes.
    if (t.ncols % ggml_traits(type).block_elems != 0) {
      const GgmlType before = type;
      if (type == GgmlType::IQ4_XS) type = GgmlType::IQ4_NL;
      else if (type == GgmlType::Q6_K) type = GgmlType::Q8_0;
      if (t.ncols % ggml_traits(type).block_elems != 0) {
        if (t.ncols % 32 != 0 || ggml_traits(before).block_elems == 32) type = GgmlType::F16;
        else
          fail(t.name, std::string("rows of ") + std::to_string(t.ncols) + " do not fit " + ggml_type_name(before) +
                           " blocks, and llama.cpp's fallback type (Q5_0 / Q5_1) is not one this exporter writes");
      }
    }
    out.push_back(type);
  }
  return out;
}

}  // namespace lq::exporter
