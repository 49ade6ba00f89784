// Simulated quantization of an engine's linears: each dense target linear is replaced by the
// dequantized weights of quant::fake_quantize (bias kept). The result behaves exactly like a model
// whose quantized checkpoint was loaded and dequantized, which makes it a what-if tool
// (`eval --fake-quant`) and a test fixture that needs no checkpoint on disk.
#pragma once
#include <string>

#include "forward/forward.h"
#include "quant/quantizer.h"

namespace lq::eval {

// Replaces every target linear of `e` (all layers, both paths). Throws when a linear is not dense.
void fake_quantize_engine(fwd::Engine& e, const quant::QuantParams& p);

// "int4_asym:64", "int4_sym:128", "int8_sym:0" (0 = per row), "nvfp4" -> parameters (throws naming `where`).
quant::QuantParams parse_fake_quant(const std::string& spec, const std::string& where);

}  // namespace lq::eval
