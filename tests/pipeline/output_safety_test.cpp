// Data safety and honesty of `quantize` (and of the commands that share its output rules), run as a
// user runs them: outputs never replace inputs, --force replaces only what lance-quant wrote, only
// named side files are copied, interrupted runs leave nothing, a partial calibration is refused
// unless --allow-partial and then recorded truthfully per linear.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>
#include <vector>

#include "formats/checkpoint.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "test_paths.h"

namespace lq::pipeline {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string lq() { return test::exe(); }
int run(const std::string& args, std::string* out) { return test::run_command(lq() + " " + args, out); }
// stdout only (JSON), stderr (progress lines, messages) dropped.
int run_stdout(const std::string& args, std::string* out) {
  return test::run_command_stdout(lq() + " " + args, out);
}

// A writable copy of lance-mini (the fixture is read-only).
std::string mini_copy(const std::string& name) {
  const std::string d = test::scratch_dir(name) + "/M";
  fs::create_directories(d);
  for (const auto& e : fs::directory_iterator(test::lance_mini_dir()))
    if (e.is_regular_file()) fs::copy_file(e.path(), d + "/" + e.path().filename().string());
  return d;
}

TEST(OutputSafety, OutputThatIsOrLiesInsideAnInputIsRefused) {
  LQ_REQUIRE_SHARED();
  const std::string m = mini_copy("safety_inputs");
  const uint64_t before = fs::file_size(m + "/model.safetensors");
  std::string out;
  EXPECT_EQ(run("quantize " + m + " --scheme rtn-int4 --out " + m + " --force", &out), 1) << out;  // replaced the F32 model before
  EXPECT_NE(out.find("is the input"), std::string::npos) << out;
  EXPECT_EQ(run("quantize " + m + " --scheme rtn-int4 --out " + m + "/q", &out), 1) << out;
  EXPECT_NE(out.find("lies inside the input directory"), std::string::npos) << out;
  EXPECT_EQ(run("quantize " + m + " --scheme rtn-int4 --out " + fs::path(m).parent_path().string() + " --force", &out), 1) << out;
  EXPECT_NE(out.find("contains the input"), std::string::npos) << out;
  const std::string calib = std::string(LQ_SOURCE_DIR) + "/data/calib/text.txt";
  EXPECT_EQ(run("calibrate " + m + " --calib text:" + calib + " --out " + calib + " --force", &out), 1) << out;
  EXPECT_NE(out.find("is the input"), std::string::npos) << out;
  EXPECT_EQ(run("export " + m + " --to hf --out " + m + "/hf", &out), 1) << out;
  EXPECT_NE(out.find("lies inside the input directory"), std::string::npos) << out;
  EXPECT_EQ(run("eval " + m + " " + m + " --out " + m + " --force --no-t2i --no-chat", &out), 1) << out;
  EXPECT_NE(out.find("is the input"), std::string::npos) << out;
  EXPECT_EQ(fs::file_size(m + "/model.safetensors"), before);
  EXPECT_FALSE(fs::exists(m + "/awq_meta.json"));
}

TEST(OutputSafety, ForceReplacesOnlyOurCheckpoints) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("safety_force");
  fs::create_directories(d + "/notes");
  std::ofstream(d + "/notes/thesis.tex") << "precious";
  std::string out;
  EXPECT_EQ(run("quantize " + m + " --scheme rtn-int4 --out " + d + "/notes --force", &out), 1) << out;  // deleted it before
  EXPECT_NE(out.find("did not write"), std::string::npos) << out;
  EXPECT_NE(out.find("thesis.tex"), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(d + "/notes/thesis.tex"));
  EXPECT_EQ(run("export " + m + " --to gguf --out " + d + "/notes --force", &out), 1) << out;
  EXPECT_TRUE(fs::exists(d + "/notes/thesis.tex"));

  ASSERT_EQ(run("quantize " + m + " --scheme rtn-int4 --out " + d + "/q", &out), 0) << out;
  EXPECT_TRUE(fs::exists(d + "/q/lance-quant.json"));
  EXPECT_EQ(run("quantize " + m + " --scheme rtn-int4 --out " + d + "/q", &out), 1) << out;
  EXPECT_NE(out.find("--force"), std::string::npos) << out;
  EXPECT_EQ(run("quantize " + m + " --scheme rtn-int4 --group-size 64 --out " + d + "/q --force", &out), 0) << out;
  EXPECT_EQ(formats::CheckpointReader(d + "/q").quantized_linears().front().group, 64);
}

TEST(OutputSafety, OnlyNamedSideFilesAreCopiedAndLinksOutAreRefused) {
  LQ_REQUIRE_SHARED();
  const std::string m = mini_copy("safety_side"), d = fs::path(m).parent_path().string();
  std::ofstream(m + "/notes.json") << R"({"secret": 1})";
  std::string out;
  ASSERT_EQ(run("quantize " + m + " --scheme rtn-int4 --out " + d + "/q", &out), 0) << out;
  EXPECT_FALSE(fs::exists(d + "/q/notes.json"));  // every *.json was copied before
  EXPECT_FALSE(fs::exists(d + "/q/README.md"));
  for (const char* f : {"llm_config.json", "lance_config.json", "vocab.json", "merges.txt", "tokenizer_config.json"})
    EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(d + "/q/" + f))) << f;
  // A side file that links out of the model directory (passwd.json -> /etc/passwd landed in the output).
  fs::remove(m + "/tokenizer_config.json");
  fs::create_symlink("/etc/passwd", m + "/tokenizer_config.json");
  EXPECT_EQ(run("quantize " + m + " --scheme rtn-int4 --out " + d + "/q2", &out), 1) << out;
  EXPECT_NE(out.find("symbolic link to /etc/passwd, outside the model directory"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(d + "/q2"));
  // Weights linked to another file are never read.
  fs::remove(m + "/tokenizer_config.json");
  fs::copy_file(test::lance_mini_dir() + "/tokenizer_config.json", m + "/tokenizer_config.json");
  fs::remove(m + "/model.safetensors");
  fs::create_symlink("/etc/passwd", m + "/model.safetensors");
  EXPECT_EQ(run("inspect " + m, &out), 1) << out;
  EXPECT_NE(out.find("outside the model directory"), std::string::npos) << out;
  EXPECT_EQ(out.find("root:"), std::string::npos) << out;
}

// Runs `lance-quant ARGS` with `env` set, sends SIGTERM as soon as an OUT.lq-partial-PID appears in `d`,
// and expects the process killed by it with nothing left in `d`.
void expect_sigterm_leaves_nothing(const std::vector<std::string>& args, const std::string& d,
                                   const std::vector<std::pair<std::string, std::string>>& env = {}) {
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    const std::string e = lq();
    std::vector<char*> argv{const_cast<char*>(e.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(e.c_str(), argv.data());
    _exit(127);
  }
  bool started = false;
  for (int i = 0; i < 3000 && !started; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    for (const auto& e : fs::directory_iterator(d)) started = started || e.path().filename().string().find(".lq-partial-") != std::string::npos;
  }
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(started);
  ASSERT_TRUE(WIFSIGNALED(status)) << "quantize finished before it could be stopped";
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
  EXPECT_TRUE(fs::is_empty(d)) << "SIGTERM left a partial directory";
}

TEST(OutputSafety, SigtermCleansUpAndStalePartialsAreRemovedNextRun) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("safety_sigterm");
  const std::string calib = std::string(LQ_SOURCE_DIR) + "/data/calib/text.txt";
  expect_sigterm_leaves_nothing({"quantize", m, "--scheme", "awq-int4", "--calib", "text:" + calib, "--calib",
                                 "t2i:" + m + "/calib_prompts.txt", "--out", d + "/q"},
                                d);

  // A kill -9 cannot be handled: the next run removes the leftover of the dead process and says so.
  const pid_t dead = fork();
  if (dead == 0) _exit(0);
  waitpid(dead, nullptr, 0);
  fs::create_directories(d + "/q.lq-partial-" + std::to_string(dead) + "/x");
  std::string out;
  ASSERT_EQ(run("quantize " + m + " --scheme rtn-int4 --out " + d + "/q", &out), 0) << out;
  EXPECT_NE(out.find("removed stale partial output " + d + "/q.lq-partial-" + std::to_string(dead)), std::string::npos) << out;
  for (const auto& e : fs::directory_iterator(d)) EXPECT_EQ(e.path().filename(), "q");
}

// The signal lands right after OUT.lq-partial-PID is created (the shim holds the process there for
// 3 s): the partial output must already be registered for removal. (CI once caught it unregistered.)
TEST(OutputSafety, SigtermRightAfterThePartialDirectoryIsCreatedRemovesIt) {
  LQ_REQUIRE_SHARED();
  if (std::getenv("LQ_UNDER_ASAN")) GTEST_SKIP() << "the LD_PRELOAD shim cannot come before the ASan runtime";
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("safety_sigterm_mkdir");
  expect_sigterm_leaves_nothing({"quantize", m, "--scheme", "rtn-int4", "--out", d + "/q"}, d,
                                {{"LD_PRELOAD", LQ_MKDIR_PAUSE_SHIM}, {"LQ_SHIM_MKDIR_MATCH", ".lq-partial-"}, {"LQ_SHIM_MKDIR_PAUSE_MS", "3000"}});
}

TEST(OutputSafety, ExportWithAnInvalidTypeCreatesNothing) {
  LQ_REQUIRE_SHARED();
  const std::string d = test::scratch_dir("safety_export_type");
  std::string out;
  EXPECT_EQ(run("export " + test::lance_mini_dir() + " --to gguf --type q9 --out " + d + "/e", &out), 1) << out;
  EXPECT_NE(out.find("unknown GGUF type 'q9'"), std::string::npos) << out;
  EXPECT_TRUE(fs::is_empty(d)) << "an empty output directory was left";
}

TEST(OutputSafety, PathsAreDescribedPlainly) {
  std::string out;
  EXPECT_EQ(run("inspect /no/such/dir", &out), 1);
  EXPECT_NE(out.find("[/no/such/dir] does not exist"), std::string::npos) << out;
  EXPECT_EQ(run("run /no/such/dir --task text --prompt hi", &out), 1);
  EXPECT_NE(out.find("[/no/such/dir] model directory does not exist"), std::string::npos) << out;
  LQ_REQUIRE_SHARED();
  const std::string d = test::scratch_dir("safety_paths");
  std::ofstream(d + "/file") << "x";
  EXPECT_EQ(run("quantize " + test::lance_mini_dir() + " --scheme rtn-int4 --out " + d + "/file/q", &out), 1);
  EXPECT_NE(out.find("is not a directory"), std::string::npos) << out;
  EXPECT_EQ(out.find("internal error"), std::string::npos) << out;
  EXPECT_EQ(run("quantize " + d + "/file --scheme rtn-int4 --out " + d + "/q", &out), 1);
  EXPECT_NE(out.find("model directory is a file, not a directory"), std::string::npos) << out;
}

TEST(OutputSafety, NanWeightIsNamed) {
  LQ_REQUIRE_SHARED();
  const std::string m = mini_copy("safety_nan"), d = fs::path(m).parent_path().string();
  const std::string bad = "language_model.model.layers.1.mlp_moe_gen.up_proj.weight";
  {  // the model with one NaN weight
    const io::SafetensorsFile in(test::lance_mini_dir() + "/model.safetensors");
    io::SafetensorsWriter w(m + "/model.safetensors.new");
    for (const auto& t : in.tensors()) w.declare(t.name, t.dtype, t.shape);
    for (const auto& t : in.tensors()) {
      std::vector<float> v = in.read_f32(t.name);
      if (t.name == bad) v[77] = std::nanf("");
      w.write(v.data(), v.size() * 4);
    }
    w.finish();
    fs::rename(m + "/model.safetensors.new", m + "/model.safetensors");
  }
  std::string out;
  EXPECT_EQ(run("quantize " + m + " --scheme rtn-int4 --out " + d + "/q", &out), 1) << out;
  EXPECT_NE(out.find("[" + bad + "] holds a non-finite value (NaN) at element 77"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(d + "/q"));
}

TEST(OutputSafety, GroupSizeChoicesAreExplicit) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("safety_group");
  std::string out;
  ASSERT_EQ(run("quantize " + m + " --scheme rtn-int4 --group-size 0 --out " + d + "/g0", &out), 0) << out;  // per channel
  for (const auto& l : formats::CheckpointReader(d + "/g0").quantized_linears()) EXPECT_EQ(l.group, l.in) << l.base;
  EXPECT_EQ(run("quantize " + m + " --scheme nvfp4 --group-size 128 --out " + d + "/nv", &out), 1) << out;  // was ignored
  EXPECT_NE(out.find("fixed blocks of 16"), std::string::npos) << out;
  EXPECT_EQ(run("quantize " + m + " --scheme rtn-int4 --group-size 100 --out " + d + "/x", &out), 1) << out;
  EXPECT_NE(out.find("32, 64, 128 or 0"), std::string::npos) << out;
}

TEST(PartialCalibration, RefusedUnlessAllowedThenRecordedTruthfully) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("partial_calib");
  const std::string text = "--calib text:" + std::string(LQ_SOURCE_DIR) + "/data/calib/text.txt";
  const std::string t2i = "--calib t2i:" + m + "/calib_prompts.txt";
  const std::string small = " --max-tokens 256 --max-prompts 1 --steps 2 --t2i-taus 1 --awq-rows 64 --clip-rows 16 --json";
  std::string out;
  EXPECT_EQ(run("quantize " + m + " --scheme awq-int4 " + text + small + " --out " + d + "/a", &out), 1) << out;
  EXPECT_NE(out.find("path gen: 28 quantized linears without calibration data"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(d + "/a"));

  ASSERT_EQ(run_stdout("quantize " + m + " --scheme awq-int4 " + text + small + " --allow-partial --out " + d + "/a", &out), 0)
      << out;
  const json rep = json::parse(out);
  EXPECT_EQ(rep.at("partial_calibration"), true);
  EXPECT_EQ(rep.at("tasks_calibrated"), json::array({"text"}));
  int awq = 0, rtn = 0;
  for (const auto& l : rep.at("linears")) {
    const bool gen = l.at("name").get<std::string>().find("_moe_gen") != std::string::npos;
    EXPECT_EQ(l.at("method"), gen ? "rtn" : "awq") << l.at("name");
    EXPECT_EQ(l.at("calibrated"), !gen);
    (gen ? rtn : awq)++;
  }
  EXPECT_EQ(awq, 28);
  EXPECT_EQ(rtn, 28);
  const json meta = json::parse(std::ifstream(d + "/a/awq_meta.json"));
  EXPECT_EQ(meta.at("tasks_calibrated"), json::array({"text"}));
  EXPECT_EQ(meta.at("partial_calibration"), true);
  EXPECT_EQ(meta.at("per_weight").at("language_model.model.layers.0.mlp_moe_gen.up_proj.weight").at("scheme"), "rtn");
  EXPECT_EQ(meta.at("per_weight").at("language_model.model.layers.0.mlp.up_proj.weight").at("scheme"), "awq");
  EXPECT_EQ(meta.at("linears_by_method"), json({{"awq", 28}, {"rtn", 28}}));
  const json marker = json::parse(std::ifstream(d + "/a/lance-quant.json"));
  EXPECT_EQ(marker.at("linears").at("language_model.model.layers.2.self_attn.q_proj_moe_gen").at("method"), "rtn");

  // A fully calibrated run records its tasks ([] before the fix).
  ASSERT_EQ(run_stdout("quantize " + m + " --scheme awq-int4 " + text + " " + t2i + small + " --out " + d + "/b", &out), 0) << out;
  const json full = json::parse(out);
  EXPECT_EQ(full.at("partial_calibration"), false);
  EXPECT_EQ(full.at("tasks_calibrated"), json::array({"t2i", "text"}));
  for (const auto& l : full.at("linears")) EXPECT_EQ(l.at("method"), "awq") << l.at("name");
  EXPECT_EQ(json::parse(std::ifstream(d + "/b/awq_meta.json")).at("tasks_calibrated"), json::array({"t2i", "text"}));
}

// The GPTQ schemes (issue 15) calibrate on the same inputs: a path left without data is refused before
// any slow work (the --bpw pass included), and --allow-partial records gptq / rtn per linear.
TEST(PartialCalibration, GptqSchemesFollowTheSameRules) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("partial_calib_gptq");
  const std::string text = "--calib text:" + std::string(LQ_SOURCE_DIR) + "/data/calib/text.txt";
  const std::string small = " --max-tokens 256 --awq-rows 64 --clip-rows 16 --json";
  std::string out;
  for (const char* scheme : {"gptq-int4", "awq-gptq-int4"}) {
    EXPECT_EQ(run("quantize " + m + " --scheme " + scheme + " " + text + small + " --out " + d + "/g", &out), 1) << out;
    EXPECT_NE(out.find("path gen: 28 quantized linears without calibration data"), std::string::npos) << out;
  }
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(run("quantize " + m + " --scheme awq-int4 --bpw 5 " + text + small + " --out " + d + "/g", &out), 1) << out;
  EXPECT_NE(out.find("path gen"), std::string::npos) << out;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20.0);  // before the --bpw pass
  EXPECT_FALSE(fs::exists(d + "/g"));

  ASSERT_EQ(run_stdout("quantize " + m + " --scheme gptq-int4 " + text + small + " --allow-partial --out " + d + "/g", &out), 0) << out;
  const json rep = json::parse(out);
  EXPECT_EQ(rep.at("partial_calibration"), true);
  EXPECT_EQ(rep.at("tasks_calibrated"), json::array({"text"}));
  for (const auto& l : rep.at("linears")) {
    const bool gen = l.at("name").get<std::string>().find("_moe_gen") != std::string::npos;
    EXPECT_EQ(l.at("method"), gen ? "rtn" : "gptq") << l.at("name");
  }
  EXPECT_EQ(json::parse(std::ifstream(d + "/g/awq_meta.json")).at("linears_by_method"), json({{"gptq", 28}, {"rtn", 28}}));
}

TEST(CalibrationInput, BinaryCalibrationFileIsRefusedUpFront) {
  LQ_REQUIRE_SHARED();
  const std::string d = test::scratch_dir("calib_binary");
  {
    std::ofstream f(d + "/rnd.txt", std::ios::binary);
    uint32_t x = 12345;
    for (int i = 0; i < 20000; ++i) x = x * 1664525u + 1013904223u, f.put(char(x >> 24));
  }
  std::string out;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(run("calibrate " + test::lance_mini_dir() + " --calib text:" + d + "/rnd.txt --out " + d + "/s.safetensors", &out), 1)
      << out;
  EXPECT_NE(out.find("invalid UTF-8 at byte"), std::string::npos) << out;
  EXPECT_NE(out.find(d + "/rnd.txt:"), std::string::npos) << out;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20.0);
  EXPECT_EQ(run("quantize " + test::lance_mini_dir() + " --scheme awq-int4 --calib t2i:" + d + "/rnd.txt --out " + d + "/q", &out), 1);
  EXPECT_NE(out.find("invalid UTF-8 at byte"), std::string::npos) << out;
  // Every kind of input is checked the same way, the JSONL ones (media, edits) included.
  for (const char* kind : {"chat", "t2v", "image_edit", "video_edit", "x2t_image", "x2t_video"}) {
    EXPECT_EQ(run("calibrate " + test::lance_mini_dir() + " --calib " + kind + ":" + d + "/rnd.txt --out " + d + "/s.safetensors", &out), 1)
        << kind << ": " << out;
    EXPECT_NE(out.find("invalid UTF-8 at byte"), std::string::npos) << kind << ": " << out;
  }
  EXPECT_EQ(run("eval " + test::lance_mini_dir() + " " + test::lance_mini_dir() + " --x2t-image " + d + "/rnd.txt --out " + d + "/r", &out), 1);
  EXPECT_NE(out.find("invalid UTF-8 at byte"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(d + "/s.safetensors"));
}

// quantize's layer-by-layer AWQ takes every calibration kind; an edit input without its VAE (or without a
// ViT for its reference block) is refused up front, naming the input, rather than after the model has loaded.
TEST(CalibrationInput, QuantizeRefusesEditsWithoutTheirVaeUpFront) {
  LQ_REQUIRE_SHARED();
  const std::string d = test::scratch_dir("calib_kinds");
  std::ofstream(d + "/edits.jsonl") << R"({"image": "a.png", "prompt": "make it red"})" << "\n";
  std::vector<uint8_t> px(32 * 32 * 3, 90);
  io::write_png_rgb(d + "/a.png", px.data(), 32, 32);
  std::ofstream(d + "/text.txt") << "Once upon a time there was a small dog.\n";
  std::string out;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string q = "quantize " + test::lance_mini_dir() + " --scheme awq-int4 --calib text:" + d + "/text.txt --calib image_edit:" + d +
                        "/edits.jsonl";
  EXPECT_EQ(run(q + " --out " + d + "/q", &out), 1) << out;
  EXPECT_NE(out.find("image_edit:" + d + "/edits.jsonl"), std::string::npos) << out;
  EXPECT_NE(out.find("--vae"), std::string::npos) << out;
  EXPECT_EQ(run(q + " --vae " + d + " --out " + d + "/q", &out), 1) << out;  // lance-mini has no ViT inside
  EXPECT_NE(out.find("--no-vit-reference"), std::string::npos) << out;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20.0);
  EXPECT_FALSE(std::filesystem::exists(d + "/q"));
}

}  // namespace
}  // namespace lq::pipeline
