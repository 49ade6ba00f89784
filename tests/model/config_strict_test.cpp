// model/config.h parses strictly: integers are never truncated, types and ranges are checked and every
// error names the file and key; the layer count is checked against the tensors before anything is sized.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/error.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/spec.h"
#include "test_paths.h"

namespace lq::model {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const json kBase = {{"hidden_size", 64}, {"intermediate_size", 128}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                    {"num_hidden_layers", 2}, {"vocab_size", 300}};

std::string load_error(const json& llm, const json& lance = nullptr) {
  // One directory per test: ctest runs the tests of this file as parallel processes.
  const std::string d =
      test::scratch_dir(std::string("config_strict_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::ofstream(d + "/llm_config.json") << llm.dump();
  if (!lance.is_null()) std::ofstream(d + "/lance_config.json") << lance.dump();
  try {
    load_config(d);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

json with(const char* key, const json& v) {
  json j = kBase;
  j[key] = v;
  return j;
}

TEST(ConfigStrict, ValidConfigLoads) { EXPECT_EQ(load_error(kBase), ""); }

TEST(ConfigStrict, IntegersAreNeverTruncated) {
  std::string e = load_error(with("hidden_size", (int64_t(1) << 32) + 256));  // was read as 256
  EXPECT_NE(e.find("llm_config.json] key 'hidden_size' must be an integer in [1, 1048576], got 4294967552"), std::string::npos) << e;
  e = load_error(with("hidden_size", 256.9));  // was read as 256
  EXPECT_NE(e.find("key 'hidden_size' must be an integer"), std::string::npos) << e;
  EXPECT_EQ(load_error(with("hidden_size", 64.0)), "");  // an integral number is the integer
  e = load_error(with("num_hidden_layers", 1000000000));
  EXPECT_NE(e.find("key 'num_hidden_layers' must be an integer in [1, 4096]"), std::string::npos) << e;
}

TEST(ConfigStrict, WrongTypesNameFileAndKey) {
  std::string e = load_error(with("num_key_value_heads", "2"));  // an optional key: was "internal error: [json.exception..."
  EXPECT_NE(e.find("llm_config.json] key 'num_key_value_heads' must be an integer"), std::string::npos) << e;
  EXPECT_EQ(e.find("json.exception"), std::string::npos) << e;
  e = load_error(with("tie_word_embeddings", "no"));
  EXPECT_NE(e.find("key 'tie_word_embeddings' must be true or false"), std::string::npos) << e;
  e = load_error(json::array({1, 2}));
  EXPECT_NE(e.find("expected a JSON object"), std::string::npos) << e;
}

TEST(ConfigStrict, NonFiniteAndNonPositiveRealsAreRefused) {
  for (const json& v : {json(0.0), json(-1e-6)}) {
    const std::string e = load_error(with("rms_norm_eps", v));
    EXPECT_NE(e.find("key 'rms_norm_eps' must be a finite positive number"), std::string::npos) << e;
  }
  const std::string e = load_error(with("rope_theta", -10000.0));
  EXPECT_NE(e.find("key 'rope_theta' must be a finite positive number"), std::string::npos) << e;
}

TEST(ConfigStrict, LanceConfigRanges) {
  std::string e = load_error(kBase, {{"max_latent_size", 100000}});  // its square overflowed an int (UBSan)
  EXPECT_NE(e.find("lance_config.json] key 'max_latent_size' must be an integer in [1, 4096]"), std::string::npos) << e;
  e = load_error(kBase, {{"latent_channels", "48"}});
  EXPECT_NE(e.find("key 'latent_channels' must be an integer"), std::string::npos) << e;
  EXPECT_EQ(load_error(kBase, {{"max_latent_size", 64}, {"latent_pos_embed_rows", 4096}}), "");
}

TEST(ConfigStrict, LayerCountIsCheckedAgainstTheTensors) {
  EXPECT_EQ(count_layers({"language_model.model.layers.0.mlp.up_proj.weight", "language_model.model.layers.11.mlp.up_proj.weight",
                          "vit_model.encoder.model.layers.40.x", "language_model.model.norm.weight"}),
            12);
  ModelConfig c;
  c.num_layers = 4096;
  c.source = "cfg.json";
  try {
    check_layer_count(c, {"model.layers.0.x", "model.layers.1.x"}, "M");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("says num_hidden_layers = 4096 but the tensors hold 2 decoder layer(s)"), std::string::npos)
        << e.what();
  }
}

TEST(ConfigStrict, HugeLayerCountIsAnErrorNotAnAllocation) {
  LQ_REQUIRE_SHARED();
  const std::string d = test::scratch_dir("config_layers");
  const std::string m = test::lance_mini_dir();
  json llm = json::parse(std::ifstream(m + "/llm_config.json"));
  llm["num_hidden_layers"] = 4000;  // within the limit, but the tensors hold 4 layers
  std::ofstream(d + "/llm_config.json") << llm.dump();
  fs::copy_file(fs::path(m) / "model.safetensors", d + "/model.safetensors");
  const ModelConfig c = load_config(d);
  const io::TensorStore s(d);
  try {
    build_spec(c, s);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_hidden_layers = 4000 but the tensors hold 4"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lq::model
