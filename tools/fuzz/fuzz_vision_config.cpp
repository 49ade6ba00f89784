// libFuzzer target for the configs that come with the vision models: the Qwen2.5-VL vision config
// (vit/vit_config.h: a ViT directory's config.json, flat or nested under "vision_config") and the Wan2.2
// VAE's diffusers config.json (vae/weights.h). Input: a bundle (fuzz_util.h) of [selector, config.json];
// selector 'A' = the VAE config, anything else the vision config. A config that parses must give a
// bounded tensor list (what the loaders check the weights against). Accept or throw lq::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "fuzz_util.h"
#include "io/error.h"
#include "io/json_fields.h"
#include "vae/wan_vae.h"
#include "vae/weights.h"
#include "vit/vit_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static lq::fuzz::Scratch scratch;
  scratch.clear();
  const std::vector<std::string> parts = lq::fuzz::split_bundle(data, size, 2);
  scratch.write("config.json", parts[1]);
  const std::string path = scratch.dir() + "/config.json";
  try {
    if (!parts[0].empty() && parts[0][0] == 'A') {
      const lq::vae::WanVaeConfig c = lq::vae::parse_diffusers_config(path);
      if (c.spatial_ratio() < 1 || c.temporal_ratio() < 1) std::abort();
      if (lq::vae::expected_tensors(c).size() > 100000) std::abort();
    } else {
      const lq::vit::VitConfig c = lq::vit::parse_vit_config(lq::io::read_json_object(path), path);
      if (c.head_dim() < 1 || c.window_units() < 1 || c.patch_dim() < 1) std::abort();
      if (lq::vit::vit_tensors(c).size() > 100000) std::abort();
    }
  } catch (const lq::Error& e) {
    lq::fuzz::rejected(e.what());
  }
  return 0;
}
