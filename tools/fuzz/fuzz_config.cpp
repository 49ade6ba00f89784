// libFuzzer target for the model config parsers: llm_config.json (model/config.h), lance_config.json
// (the Lance-level part and the t2i settings, forward/prompts.h), and the model map a config implies
// (model/spec.h, bounded by the config's checked limits). Input: a bundle (fuzz_util.h) of
// [llm_config.json, lance_config.json]; an empty second part means no lance_config.json.
// Accept or throw lq::Error; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "forward/prompts.h"
#include "fuzz_util.h"
#include "io/error.h"
#include "model/config.h"
#include "model/spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static lq::fuzz::Scratch scratch;
  scratch.clear();
  const std::vector<std::string> parts = lq::fuzz::split_bundle(data, size, 2);
  scratch.write("llm_config.json", parts[0]);
  if (!parts[1].empty()) scratch.write("lance_config.json", parts[1]);
  try {
    const lq::model::ModelConfig c = lq::model::load_config(scratch.dir());
    if (c.hidden_size <= 0 || c.num_layers <= 0 || c.head_dim <= 0 || c.vocab_size <= 0 || c.rms_norm_eps <= 0) std::abort();
    // The model map a config implies, for a plausible size only (the layer count is checked against
    // the tensors before this is built in the tools).
    if (int64_t(c.num_layers) * (c.hidden_size + c.intermediate_size) <= (int64_t(1) << 22)) {
      const lq::model::ModelSpec s = lq::model::expected_spec(c, lq::model::Arch::LanceMoT);
      if (int(s.layers.size()) != c.num_layers) std::abort();
    }
  } catch (const lq::Error& e) {
    lq::fuzz::rejected(e.what());
  }
  try {
    const lq::fwd::T2iSettings t = lq::fwd::load_t2i_settings(scratch.dir());
    if (t.sampler.steps < 1 || !(t.sampler.shift > 0)) std::abort();
  } catch (const lq::Error& e) {
    lq::fuzz::rejected(e.what());
  }
  return 0;
}
