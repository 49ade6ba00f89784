// `lance-quant synth-vae`: write a synthetic Wan2.2 VAE (see vae/synth.h).
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/args.h"
#include "cli/commands.h"
#include "io/progress.h"
#include "vae/synth.h"

namespace lq::cli {

int cmd_synth_vae(const Args& args) {
  ArgReader r(args, "synth-vae");
  std::string out, size = "full";
  uint64_t seed = 0;
  io::DType dtype = io::DType::F32;
  bool force = false, json_out = false;
  while (r.next()) {
    if (r.is("--help") || r.is("-h")) {
      std::printf(
          "usage: lance-quant synth-vae --out DIR [--size full|tiny] [--seed S] [--dtype f32|bf16] [--force] [--json]\n\n"
          "Writes a Wan2.2 VAE in the diffusers layout (config.json + diffusion_pytorch_model.safetensors) with\n"
          "deterministic random weights: `full` has the exact shapes of Wan2.2 (base width 160, decoder 256,\n"
          "z_dim 48; 705 M parameters, 2.8 GB as f32), `tiny` the same structure with widths 4 / 4 (tests).\n"
          "Random weights decode to noise: they prove plumbing, speed and memory, not picture quality.\n");
      return 0;
    } else if (r.is("--out")) out = r.value();
    else if (r.is("--size")) size = r.value();
    else if (r.is("--seed")) seed = uint64_t(r.int_value());
    else if (r.is("--dtype")) {
      const std::string d = r.value();
      if (d == "f32") dtype = io::DType::F32;
      else if (d == "bf16") dtype = io::DType::BF16;
      else fail("synth-vae --dtype", "expected f32 or bf16, got '" + d + "'");
    } else if (r.is("--force")) force = true;
    else if (r.is("--json")) json_out = true;
    else r.unknown();
  }
  if (out.empty()) fail("synth-vae", "--out DIR is required");
  if (size != "full" && size != "tiny") fail("synth-vae --size", "expected full or tiny, got '" + size + "'");
  const vae::WanVaeConfig c = size == "full" ? vae::wan22_config() : vae::tiny_config();
  io::Progress progress("synth-vae", 0, "weights");
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t bytes = vae::write_synthetic_vae(c, out, seed, dtype, force, [&](uint64_t done, uint64_t total) {
    progress.set_total(double(total));
    progress.update(double(done));
  });
  progress.finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (json_out) {
    std::printf("%s\n", nlohmann::json{{"out", out}, {"size", size}, {"bytes", bytes}, {"seconds", secs}}.dump().c_str());
  } else {
    std::printf("wrote %s (%s Wan2.2 VAE, %llu bytes of weights, %.1f s)\n", out.c_str(), size.c_str(), (unsigned long long)bytes, secs);
  }
  return 0;
}

}  // namespace lq::cli
