// Test helper shared by the ViT CLI tests: a copy of a model directory with a ViT embedded the way
// Lance_3B_Video carries it.
#pragma once
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "io/safetensors.h"

namespace lq::vit {

// A copy of lance-mini with the ViT's tensors appended as vit_model.* and its config as llm_config.json's
// "vision_config" (how Lance_3B_Video carries the ViT).
inline void embed_vit(const std::string& mini, const std::string& vit_dir, const std::string& out, const std::string& skip = "") {
  std::filesystem::create_directories(out);
  for (const auto& e : std::filesystem::directory_iterator(mini))
    if (e.is_regular_file() && e.path().filename() != "model.safetensors") std::filesystem::copy_file(e.path(), out + "/" + e.path().filename().string(), std::filesystem::copy_options::overwrite_existing);
  io::TensorStore a(mini + "/model.safetensors"), v(vit_dir + "/vit.safetensors");
  io::SafetensorsWriter w(out + "/model.safetensors");
  for (const auto& n : a.names()) w.declare(n, a.info(n).dtype, a.info(n).shape);
  for (const auto& n : v.names())
    if (n != skip) w.declare("vit_model." + n, v.info(n).dtype, v.info(n).shape);
  for (const auto& n : a.names()) {
    const auto b = a.file_of(n).bytes(a.info(n));
    w.write(b.data(), b.size());
  }
  for (const auto& n : v.names())
    if (n != skip) {
      const auto b = v.file_of(n).bytes(v.info(n));
      w.write(b.data(), b.size());
    }
  w.finish();
  std::ifstream lc(mini + "/llm_config.json"), vc(vit_dir + "/config.json");
  nlohmann::json j = nlohmann::json::parse(lc);
  j["vision_config"] = nlohmann::json::parse(vc);
  std::ofstream(out + "/llm_config.json") << j.dump(2);
}

}  // namespace lq::vit
