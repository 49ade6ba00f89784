// io/progress.h: on a non-terminal, plain progress lines with an ETA go to stderr.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "io/progress.h"
#include "test_paths.h"

namespace lq::io {
namespace {

// Runs `f` with stderr redirected to a file (not a terminal) and returns what it wrote.
template <class F>
std::string capture_stderr(F&& f) {
  // One scratch directory per test: ctest runs the tests of this file as parallel processes.
  const std::string path =
      test::scratch_dir(std::string("progress_capture_") + ::testing::UnitTest::GetInstance()->current_test_info()->name()) +
      "/stderr.txt";
  std::fflush(stderr);
  const int saved = dup(2);
  FILE* file = std::fopen(path.c_str(), "w");
  dup2(fileno(file), 2);
  f();
  std::fflush(stderr);
  dup2(saved, 2);
  close(saved);
  std::fclose(file);
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

TEST(Progress, PlainLinesWhenStderrIsNotATerminal) {
  setenv("LQ_PROGRESS_SECONDS", "0", 1);
  const std::string out = capture_stderr([] {
    Progress p("quantize", 4, "layers");
    for (int i = 1; i <= 4; ++i) p.update(i);
    p.finish();
  });
  unsetenv("LQ_PROGRESS_SECONDS");
  EXPECT_NE(out.find("quantize: 1/4 layers, "), std::string::npos) << out;
  EXPECT_NE(out.find("ETA "), std::string::npos) << out;
  EXPECT_NE(out.find("quantize: done, 4 layers in "), std::string::npos) << out;
  EXPECT_EQ(out.find('\r'), std::string::npos) << "no terminal control characters in a log";
  EXPECT_EQ(out.find("\033["), std::string::npos);
}

TEST(Progress, SlowWorkShowsTheTimeOfOneUnitInsteadOfARateOfZero) {
  EXPECT_EQ(format_rate(31, 10, "layers"), "3.10 layers/s");
  EXPECT_EQ(format_rate(1, 10, "layers"), "0.10 layers/s");
  EXPECT_EQ(format_rate(1, 370, "layers"), "6m10s each");  // was "0.00 layers/s"
  EXPECT_EQ(format_rate(2, 41, "samples"), format_duration(20.5) + " each");
  EXPECT_EQ(format_rate(0, 5, "layers"), "0.00 layers/s");
}

TEST(Progress, TickerRepeatsTheStateDuringOneLongStep) {
  setenv("LQ_PROGRESS_SECONDS", "0.05", 1);
  const std::string out = capture_stderr([] {
    Progress p("calibrate", 10, "samples");
    p.update(1);
    // One long step, no update: 20 ticker periods, so a loaded machine still schedules two of them.
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    p.finish();
  });
  unsetenv("LQ_PROGRESS_SECONDS");
  size_t lines = 0;
  for (size_t pos = 0; (pos = out.find("calibrate: 1/10 samples", pos)) != std::string::npos; ++pos) ++lines;
  EXPECT_GE(lines, 2u) << out;
}

TEST(Progress, SilentWithoutUpdatesAndForShortJobs) {
  unsetenv("LQ_PROGRESS_SECONDS");  // default 5 s
  const std::string out = capture_stderr([] {
    Progress quiet("eval", 1, "units");  // --quiet: never updated
    Progress p("synth", 2, "GB");
    p.update(1);
    p.update(2);
    p.finish();
  });
  EXPECT_EQ(out, "");
}

}  // namespace
}  // namespace lq::io
