// libFuzzer target for one quantized-checkpoint reader (formats/checkpoint.h), chosen at build time
// by LQ_FUZZ_FORMAT: 0 lance-quant-v1, 1 autoawq, 2 compressed-tensors, 3 modelopt. The input is a
// bundle (fuzz_util.h) of [config / meta JSON, weights .safetensors]; for lance-quant-v1 a first
// part's leading byte 'N' names the files nvfp4_meta.json / nvfp4_state_dict.safetensors.
// The reader must accept the directory or throw lq::Error; then every quantized linear must read
// back as a QTensor that validates, dequantizes and packs into the kernels' layout. Any other
// exception, a sanitizer report or a crash is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "formats/checkpoint.h"
#include "fuzz_util.h"
#include "io/error.h"
#include "kernels/q4.h"
#include "quant/qtensor.h"

#ifndef LQ_FUZZ_FORMAT
#error "define LQ_FUZZ_FORMAT"
#endif

namespace {

void names(std::string& config, std::string& weights, const std::string& first) {
  switch (LQ_FUZZ_FORMAT) {
    case 0:
      if (!first.empty() && first[0] == 'N') config = "nvfp4_meta.json", weights = "nvfp4_state_dict.safetensors";
      else config = "awq_meta.json", weights = "awq_state_dict.safetensors";
      return;
    case 1:
    case 2: config = "config.json", weights = "model.safetensors"; return;
    default: config = "hf_quant_config.json", weights = "model.safetensors"; return;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static lq::fuzz::Scratch scratch;
  scratch.clear();
  std::vector<std::string> parts = lq::fuzz::split_bundle(data, size, LQ_FUZZ_FORMAT == 0 ? 3 : 2);
  std::string config_name, weights_name;
  names(config_name, weights_name, LQ_FUZZ_FORMAT == 0 ? parts[0] : std::string());
  if (LQ_FUZZ_FORMAT == 0) parts.erase(parts.begin());
  scratch.write(config_name, parts[0]);
  scratch.write(weights_name, parts[1]);
  try {
    const lq::formats::CheckpointReader r(scratch.dir());
    for (const auto& d : r.quantized_linears()) {
      const lq::quant::QTensor q = r.read_quantized(d.base);  // validated by the reader
      if (q.out != d.out || q.in != d.in || q.group != d.group || q.scheme != d.scheme) std::abort();
      const std::vector<float> w = q.dequantize();
      if (w.size() != size_t(d.out * d.in)) std::abort();
      if (q.scheme == lq::quant::Scheme::NvFp4)
        lq::kernels::pack_nvfp4(q.out, q.in, q.codes.data(), q.block_scales.data(), q.tensor_scale, d.base.c_str());
      else if (q.scheme != lq::quant::Scheme::Int8Sym)
        lq::kernels::pack_int4(q.out, q.in, q.group, q.codes.data(), q.scales.data(), q.zeros.data(), d.base.c_str());
      if (auto b = r.read_bias(d.base); b && b->size() != size_t(d.out)) std::abort();
    }
    for (const auto& n : r.plain_names()) {
      try {
        r.read_plain(n);
      } catch (const lq::Error& e) {  // a non-float plain tensor: refused with a message
        lq::fuzz::rejected(e.what());
      }
    }
  } catch (const lq::Error& e) {
    // Rejected with a message: the expected outcome for malformed input.
    lq::fuzz::rejected(e.what());
  }
  return 0;
}
