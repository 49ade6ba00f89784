#include "eval/fake_quant.h"

#include <cstring>

#include "io/error.h"
#include "num/formats.h"

namespace lq::eval {

namespace {

std::vector<float> dense_weights_f32(const fwd::DenseLinear& d) {
  const kernels::DenseMatrix& m = d.matrix();
  std::vector<float> w(size_t(m.rows * m.cols));
  if (m.type == kernels::WeightType::F32) std::memcpy(w.data(), m.data, w.size() * sizeof(float));
  else num::bf16_to_f32(static_cast<const uint16_t*>(m.data), w.data(), w.size());
  return w;
}

}  // namespace

void fake_quantize_engine(fwd::Engine& e, const quant::QuantParams& p) {
  for (int layer = 0; layer < e.num_layers(); ++layer)
    for (int path = 0; path < fwd::kNumPaths; ++path)
      for (int kind = 0; kind < fwd::kNumLinearKinds; ++kind) {
        const fwd::LinearId id{layer, fwd::Path(path), fwd::LinearKind(kind)};
        const auto* dense = dynamic_cast<const fwd::DenseLinear*>(&e.linear(id));
        if (!dense) fail(fwd::linear_module_name(id), "fake quantization needs a dense (unquantized) linear");
        const int64_t out = dense->out_features(), in = dense->in_features();
        const std::vector<float> w = dense_weights_f32(*dense);
        std::vector<uint8_t> storage(size_t(out * in) * sizeof(float));
        quant::fake_quantize(w.data(), out, in, p, reinterpret_cast<float*>(storage.data()));
        const kernels::DenseMatrix m{kernels::WeightType::F32, out, in, storage.data()};
        std::vector<float> bias = dense->bias();
        e.replace_linear(id, std::make_unique<fwd::DenseLinear>(m, std::move(storage), std::move(bias)));
      }
}

quant::QuantParams parse_fake_quant(const std::string& spec, const std::string& where) {
  quant::QuantParams p;
  const size_t colon = spec.find(':');
  p.scheme = quant::parse_scheme(spec.substr(0, colon), where);
  if (colon != std::string::npos) {
    const std::string g = spec.substr(colon + 1);
    try {
      size_t used = 0;
      p.group = std::stoll(g, &used);
      if (used != g.size() || p.group < 0) throw std::invalid_argument(g);
    } catch (const std::exception&) {
      fail(where, "expected SCHEME[:GROUP] with GROUP >= 0, got '" + spec + "'");
    }
  }
  return p;
}

}  // namespace lq::eval
