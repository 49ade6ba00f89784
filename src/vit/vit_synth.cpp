#include "vit/vit_synth.h"

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "io/error.h"
#include "model/synth.h"
#include "num/formats.h"

namespace lq::vit {

namespace fs = std::filesystem;

namespace {

VitConfig small_config() {
  VitConfig c;
  c.source = "synth preset small";
  c.depth = 4;
  c.hidden_size = 64;
  c.num_heads = 4;
  c.intermediate_size = 172;  // like 3420, not a multiple of 32
  c.out_hidden_size = 256;
  c.fullatt_block_indexes = {1, 3};
  return c;
}

VitConfig qwen_config() {
  VitConfig c;  // the defaults are Qwen2.5-VL's (Lance's ViT)
  c.source = "synth preset qwen2.5-vl";
  return c;
}

model::TensorRole role_of(const std::string& name) {
  if (name.find("norm") != std::string::npos || name.find("ln_q") != std::string::npos) return model::TensorRole::FinalNorm;
  if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) return model::TensorRole::LinearBias;
  return model::TensorRole::LinearWeight;
}

}  // namespace

const std::vector<VitPreset>& vit_presets() {
  static const std::vector<VitPreset> p = {
      {"qwen2.5-vl", "Lance's ViT: 32 blocks, width 1280, 16 heads, MLP 3420, merger to 2048 (2.7 GB as F32)", qwen_config()},
      {"small", "4 blocks, width 64, 4 heads, MLP 172, full attention in blocks 1 and 3, merger to 256 (lance-mini)",
       small_config()},
  };
  return p;
}

const VitPreset& find_vit_preset(const std::string& name) {
  std::string known;
  for (const auto& p : vit_presets()) {
    if (p.name == name) return p;
    known += (known.empty() ? "" : ", ") + p.name;
  }
  fail("--vit", "unknown ViT preset '" + name + "' (known: " + known + ")");
}

VitSynthResult synthesize_vit(const VitSynthOptions& o) {
  if (o.dtype != io::DType::F32 && o.dtype != io::DType::BF16) fail("--dtype", "synth writes f32 or bf16");
  if (o.out_dir.empty()) fail("--out", "an output directory is required");
  VitConfig c = find_vit_preset(o.preset).config;
  if (o.out_hidden < 0) fail("--vit-out-hidden", "must be positive");
  if (o.out_hidden > 0) c.out_hidden_size = o.out_hidden;
  const fs::path d(o.out_dir);
  if (fs::exists(d) && !fs::is_directory(d)) fail(o.out_dir, "exists and is not a directory");
  if (fs::exists(d / "vit.safetensors") || fs::exists(d / "config.json")) {
    if (!o.force) fail(o.out_dir, "already holds vit.safetensors or config.json (use --force to replace them)");
  }
  fs::create_directories(d);

  // config.json first, to a temporary name.
  {
    const std::string tmp = (d / ("config.json.tmp." + std::to_string(::getpid()))).string();
    std::ofstream(tmp) << c.to_json().dump(2) << "\n";
    fs::rename(tmp, d / "config.json");
  }
  model::ModelConfig mc;  // what TensorSynth reads: residual writers scaled by 1 / sqrt(2 depth)
  mc.num_layers = c.depth;
  const auto tensors = vit_tensors(c);
  io::SafetensorsWriter w((d / "vit.safetensors").string(), {{"format", "pt"}, {"producer", "lance-quant synth"},
                                                             {"vit_preset", o.preset}, {"seed", std::to_string(o.seed)}});
  uint64_t total = 0;
  for (const auto& t : tensors) {
    w.declare(t.name, o.dtype, t.shape);
    int64_t n = 1;
    for (auto s : t.shape) n *= s;
    total += uint64_t(n) * io::dtype_size(o.dtype);
  }
  constexpr int64_t kChunk = int64_t(1) << 20;
  std::vector<float> buf(static_cast<size_t>(kChunk));
  std::vector<uint16_t> half(static_cast<size_t>(kChunk));
  uint64_t done = 0;
  for (const auto& t : tensors) {
    model::TensorSpec spec;
    spec.name = t.name;
    spec.role = role_of(t.name);
    const int64_t rows = t.shape[0];
    int64_t n = 1;
    for (auto s : t.shape) n *= s;
    spec.shape = t.shape.size() > 2 ? std::vector<int64_t>{rows, n / rows} : t.shape;  // patch embedding as [out, in]
    const model::TensorSynth gen(spec, mc, o.seed);
    for (int64_t b = 0; b < n; b += kChunk) {
      const int64_t e = std::min(n, b + kChunk);
      gen.fill(b, e, buf.data());
      if (o.dtype == io::DType::BF16) {
        num::f32_to_bf16(buf.data(), half.data(), size_t(e - b));
        w.write(half.data(), size_t(e - b) * 2);
      } else {
        w.write(buf.data(), size_t(e - b) * 4);
      }
      done += uint64_t(e - b) * io::dtype_size(o.dtype);
      if (o.progress) o.progress(done, total);
    }
  }
  w.finish();
  VitSynthResult r;
  r.config = c;
  r.config.source = (d / "config.json").string();
  r.num_tensors = int(tensors.size());
  r.bytes = fs::file_size(d / "vit.safetensors");
  return r;
}

}  // namespace lq::vit
