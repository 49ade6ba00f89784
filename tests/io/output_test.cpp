// io/output.h and io/signals.h: outputs never replace inputs, --force replaces only what lance-quant
// wrote, partial directories are removed on SIGINT / SIGTERM and by the next run once their process
// is gone, and a mapped input truncated under a run is reported (SIGBUS) instead of killing it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "io/error.h"
#include "io/mmap.h"
#include "io/output.h"
#include "io/signals.h"
#include "test_paths.h"

namespace lq::io {
namespace {

namespace fs = std::filesystem;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void touch(const fs::path& p, const std::string& text = "x") { std::ofstream(p) << text; }

TEST(CheckNotInput, RefusesSameInsideAndContaining) {
  const fs::path d = test::scratch_dir("output_not_input");
  fs::create_directories(d / "model/sub");
  touch(d / "model/model.safetensors");
  touch(d / "calib.txt");
  const std::vector<std::string> inputs = {(d / "model").string(), (d / "calib.txt").string()};
  EXPECT_NE(error_of([&] { check_not_input((d / "model").string(), inputs, "--out"); }).find("is the input"), std::string::npos);
  EXPECT_NE(error_of([&] { check_not_input((d / "model/").string(), inputs, "--out"); }).find("is the input"), std::string::npos);
  EXPECT_NE(error_of([&] { check_not_input((d / "model/../model").string(), inputs, "--out"); }).find("is the input"),
            std::string::npos);
  EXPECT_NE(error_of([&] { check_not_input((d / "model/q").string(), inputs, "--out"); }).find("lies inside"), std::string::npos);
  EXPECT_NE(error_of([&] { check_not_input(d.string(), inputs, "--out"); }).find("contains the input"), std::string::npos);
  EXPECT_NE(error_of([&] { check_not_input((d / "calib.txt").string(), inputs, "--out"); }).find("is the input"),
            std::string::npos);
  // Through a symbolic link to the model directory.
  fs::create_directory_symlink(d / "model", d / "link");
  EXPECT_NE(error_of([&] { check_not_input((d / "link").string(), inputs, "--out"); }).find("is the input"), std::string::npos);
  EXPECT_EQ(error_of([&] { check_not_input((d / "q").string(), inputs, "--out"); }), "");
  EXPECT_EQ(error_of([&] { check_not_input((d / "modelq").string(), inputs, "--out"); }), "");  // a sibling with a common prefix
}

TEST(CheckOutputDir, ForceReplacesOnlyWhatLanceQuantWrote) {
  const fs::path d = test::scratch_dir("output_force");
  fs::create_directories(d / "notes");
  touch(d / "notes/todo.txt");
  touch(d / "notes/plan.md");
  std::string e = error_of([&] { check_output_dir((d / "notes").string(), true, {}); });
  EXPECT_NE(e.find("did not write"), std::string::npos) << e;
  EXPECT_NE(e.find("todo.txt"), std::string::npos) << e;  // names what is there
  e = error_of([&] { check_output_dir((d / "notes").string(), false, {}); });
  EXPECT_NE(e.find("is not empty"), std::string::npos) << e;

  fs::create_directories(d / "ours");
  touch(d / "ours" / kOutputMarker, R"({"producer": "lance-quant", "command": "quantize"})");
  touch(d / "ours/model.safetensors");
  e = error_of([&] { check_output_dir((d / "ours").string(), false, {}); });
  EXPECT_NE(e.find("--force"), std::string::npos) << e;
  EXPECT_EQ(error_of([&] { check_output_dir((d / "ours").string(), true, {}); }), "");
  EXPECT_EQ(error_of([&] { check_output_dir((d / "new").string(), false, {}); }), "");
  touch(d / "afile");
  EXPECT_NE(error_of([&] { check_output_dir((d / "afile").string(), true, {}); }).find("not a directory"), std::string::npos);
  // A parent that is a file, an unwritable parent: said plainly.
  e = error_of([&] { check_output_dir((d / "afile/x").string(), false, {}); });
  EXPECT_NE(e.find("is not a directory"), std::string::npos) << e;
  if (::geteuid() != 0) {
    e = error_of([&] { check_output_dir("/proc/x", false, {}); });
    EXPECT_NE(e.find("cannot create"), std::string::npos) << e;
  }
}

TEST(PartialOutputDir, CommitReplacesAndMarksUnfinishedIsRemoved) {
  const fs::path d = test::scratch_dir("output_partial");
  {
    PartialOutputDir p((d / "out").string(), "test");
    EXPECT_EQ(p.path().filename().string(), "out.lq-partial-" + std::to_string(::getpid()));
    touch(p.path() / "a.txt");
  }  // not committed
  EXPECT_FALSE(fs::exists(d / "out"));
  EXPECT_TRUE(fs::is_empty(d));
  {
    PartialOutputDir p((d / "out").string(), "test");
    touch(p.path() / "a.txt", "first");
    p.commit();
  }
  EXPECT_TRUE(written_by_lance_quant((d / "out").string()));
  {
    PartialOutputDir p((d / "out").string(), "test");
    touch(p.path() / "b.txt", "second");
    p.commit(R"({"extra": 1})");
  }
  EXPECT_FALSE(fs::exists(d / "out/a.txt"));
  EXPECT_TRUE(fs::exists(d / "out/b.txt"));
  std::ifstream m(d / "out" / kOutputMarker);
  const std::string marker((std::istreambuf_iterator<char>(m)), {});
  EXPECT_NE(marker.find("\"extra\": 1"), std::string::npos) << marker;
  for (const auto& e : fs::directory_iterator(d)) EXPECT_EQ(e.path().filename(), "out");
}

pid_t dead_pid() {
  const pid_t p = fork();
  if (p == 0) _exit(0);
  waitpid(p, nullptr, 0);
  return p;
}

TEST(RemoveStalePartials, RemovesThoseOfDeadProcessesOnly) {
  const fs::path d = test::scratch_dir("output_stale");
  const std::string dead = std::to_string(dead_pid()), alive = std::to_string(::getppid());
  fs::create_directories(d / ("out.lq-partial-" + dead) / "sub");
  touch(d / ("out.lq-partial-" + dead) / "sub/x");
  fs::create_directories(d / ("out.lq-partial-" + alive));
  touch(d / ("out.tmp." + dead + ".0"));
  fs::create_directories(d / ("other.lq-partial-" + dead));
  EXPECT_EQ(remove_stale_partials(d / "out"), 2);
  EXPECT_FALSE(fs::exists(d / ("out.lq-partial-" + dead)));
  EXPECT_FALSE(fs::exists(d / ("out.tmp." + dead + ".0")));
  EXPECT_TRUE(fs::exists(d / ("out.lq-partial-" + alive)));  // its process runs
  EXPECT_TRUE(fs::exists(d / ("other.lq-partial-" + dead)));  // another output
  // An earlier output moved aside by a run killed in the middle of its commit is restored.
  fs::create_directories(d / ("out.lq-old-" + dead));
  touch(d / ("out.lq-old-" + dead) / "keep.txt");
  EXPECT_EQ(remove_stale_partials(d / "out"), 1);
  EXPECT_TRUE(fs::exists(d / "out/keep.txt"));
}

TEST(SignalCleanup, SigtermRemovesPartialOutputs) {
  const fs::path d = test::scratch_dir("output_sigterm");
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    install_signal_cleanup();
    PartialOutputDir p((d / "out").string(), "test");
    touch(p.path() / "weights.bin");
    fs::create_directories(p.path() / "plots");
    touch(p.path() / "plots/a.svg");
    const int fd = ::open((d / "file.tmp.1").c_str(), O_CREAT | O_WRONLY, 0644);
    ::close(fd);
    register_partial_output((d / "file.tmp.1").string(), false);
    if (::write(ready[1], "r", 1) != 1) _exit(3);
    for (;;) ::pause();
  }
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));  // the default action after the cleanup: 128 + SIGTERM for a shell
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
  EXPECT_TRUE(fs::is_empty(d)) << "partial outputs left behind";
}

// The writers register a partial output before creating it, so a signal that lands between the two
// finds it registered; the handler takes a registered path that is not there as removed.
TEST(SignalCleanup, RegisteredButNotYetCreatedCountsAsRemoved) {
  const fs::path d = test::scratch_dir("output_sigterm_early");
  int err[2];
  ASSERT_EQ(pipe(err), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(err[1], 2);
    install_signal_cleanup();
    register_partial_output((d / "out.lq-partial-1").string(), true);
    register_partial_output((d / "file.tmp.1").string(), false);
    ::raise(SIGTERM);
    _exit(0);
  }
  ::close(err[1]);
  std::string said;
  char buf[256];
  for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) > 0;) said.insert(said.end(), buf, buf + n);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
  EXPECT_NE(said.find("removed partial output " + (d / "out.lq-partial-1").string()), std::string::npos) << said;
  EXPECT_NE(said.find("removed partial output " + (d / "file.tmp.1").string()), std::string::npos) << said;
  EXPECT_EQ(said.find("could not remove"), std::string::npos) << said;
  EXPECT_TRUE(fs::is_empty(d));
}

TEST(SignalCleanup, TruncatedMappedInputIsReported) {
  const fs::path d = test::scratch_dir("output_sigbus");
  const fs::path input = d / "model.bin";
  {
    std::ofstream f(input, std::ios::binary);
    std::string page(1 << 16, 'a');
    f << page;
  }
  int err[2];
  ASSERT_EQ(pipe(err), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(err[1], 2);
    install_signal_cleanup();
    PartialOutputDir p((d / "out").string(), "test");
    MappedFile m(input.string());
    if (::truncate(input.c_str(), 0) != 0) _exit(4);
    volatile uint8_t v = m.data()[40000];  // past the new end of the file: SIGBUS
    (void)v;
    _exit(5);
  }
  ::close(err[1]);
  int status = 0;
  waitpid(pid, &status, 0);
  std::string msg;
  char buf[512];
  for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) > 0;) msg.append(buf, size_t(n));
  ASSERT_TRUE(WIFEXITED(status)) << msg;
  EXPECT_EQ(WEXITSTATUS(status), 1) << msg;
  const std::string said = std::string("[").append(input.string()).append("] input changed during the run");
  EXPECT_NE(msg.find(said), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(d / ("out.lq-partial-" + std::to_string(pid))));
}

TEST(RemoveTree, DeletesNestedTreesAndNeverFollowsLinks) {
  const fs::path d = test::scratch_dir("output_remove_tree");
  fs::create_directories(d / "keep");
  touch(d / "keep/precious.txt");
  fs::create_directories(d / "t/a/b/c");
  for (int i = 0; i < 300; ++i) touch(d / "t/a" / std::to_string(i));  // more than one getdents buffer
  touch(d / "t/a/b/c/deep");
  fs::create_directory_symlink(d / "keep", d / "t/link");
  EXPECT_TRUE(remove_tree_signal_safe((d / "t").c_str()));
  EXPECT_FALSE(fs::exists(d / "t"));
  EXPECT_TRUE(fs::exists(d / "keep/precious.txt"));
}

}  // namespace
}  // namespace lq::io
