// `lance-quant inspect` and `synth` as a user runs them: exit codes, JSON, and error messages.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using lq::test::exe;
using lq::test::run_command;

nlohmann::json run_json(const std::string& args, int* rc = nullptr) {
  std::string out;
  const int code = lq::test::run_command_stdout(exe() + " " + args, &out);  // progress lines go to stderr
  if (rc) *rc = code;
  EXPECT_EQ(code, 0) << args << "\n" << out;
  return nlohmann::json::parse(out);
}

TEST(InspectCli, LanceMiniJson) {
  LQ_REQUIRE_SHARED();
  const auto j = run_json("inspect " + lq::test::lance_mini_dir() + " --json");
  EXPECT_EQ(j.at("architecture"), "lance-mot");
  EXPECT_EQ(j.at("num_layers"), 4);
  EXPECT_EQ(j.at("hidden_size"), 256);
  EXPECT_EQ(j.at("num_tensors"), 125);
  EXPECT_EQ(j.at("targets").at("und"), 28);
  EXPECT_EQ(j.at("targets").at("gen"), 28);
  // 4 layers x 2 paths x (q 256x256 + o 256x256 + k,v 128x256 + gate,up,down 768x256)
  EXPECT_EQ(j.at("target_weights"), 4 * 2 * (2 * 256 * 256 + 2 * 128 * 256 + 3 * 768 * 256));
  EXPECT_EQ(j.at("dtypes").at("F32"), 125);
  // README: 9,701,680 parameters stored; as bf16 that is 2 bytes each.
  EXPECT_EQ(j.at("estimated_bytes").at("bf16"), 2 * 9701680);
  // INT4 g128: the 6,291,456 target weights take 1/2 byte + 3 bytes per 128 (bf16 scale, u8 zero);
  // the other 3,410,224 parameters stay bf16.
  EXPECT_EQ(j.at("estimated_bytes").at("int4_g128"), 6291456 / 2 + 6291456 / 128 * 3 + 2 * (9701680 - 6291456));
  EXPECT_EQ(j.at("fusion_pairs").size(), 32u);
  EXPECT_EQ(j.at("target_list").size(), 56u);
}

TEST(InspectCli, MissingGenTensorIsNamed) {
  LQ_REQUIRE_SHARED();
  const std::string dir = lq::test::scratch_dir("cli_missing_gen");
  const std::string src = lq::test::lance_mini_dir();
  const std::string dropped = "language_model.model.layers.2.self_attn.v_proj_moe_gen.weight";
  for (const char* f : {"llm_config.json", "lance_config.json"}) fs::copy_file(src + "/" + f, dir + "/" + f);
  const lq::io::SafetensorsFile in(src + "/model.safetensors");
  lq::io::SafetensorsWriter out(dir + "/model.safetensors");
  for (const auto& t : in.tensors())
    if (t.name != dropped) out.declare(t.name, t.dtype, t.shape);
  for (const auto& t : in.tensors())
    if (t.name != dropped) out.write(in.bytes(t).data(), in.bytes(t).size());
  out.finish();

  std::string msg;
  EXPECT_EQ(run_command(exe() + " inspect " + dir, &msg), 1) << msg;
  EXPECT_NE(msg.find("missing: " + dropped + " [128,256]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1 missing, 0 unexpected, 0 mis-shaped"), std::string::npos) << msg;
}

TEST(SynthCli, TinySynthInspectsCleanly) {
  const std::string dir = lq::test::scratch_dir("cli_synth") + "/tiny";
  const auto s = run_json("synth --preset tiny --out " + dir + " --seed 5 --json");
  EXPECT_EQ(s.at("tensors"), 2 * 28 + 13);
  const auto j = run_json("inspect " + dir + " --json");
  EXPECT_EQ(j.at("architecture"), "lance-mot");
  EXPECT_EQ(j.at("num_layers"), 2);
  EXPECT_EQ(j.at("num_tensors"), s.at("tensors"));
  EXPECT_EQ(j.at("targets").at("gen"), 14);
  EXPECT_EQ(j.at("file_bytes"), s.at("safetensors_bytes"));

  std::string msg;
  EXPECT_EQ(run_command(exe() + " synth --preset tiny --out " + dir, &msg), 1) << msg;  // not empty, no --force
  EXPECT_NE(msg.find("--force"), std::string::npos) << msg;
  EXPECT_EQ(run_command(exe() + " synth --preset nope --out " + dir + "-x", &msg), 1);
  EXPECT_NE(msg.find("unknown preset 'nope'"), std::string::npos) << msg;
}

}  // namespace
