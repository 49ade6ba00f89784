#include "test_paths.h"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sys/wait.h>

namespace fs = std::filesystem;

namespace lq::test {

std::string shared_dir() {
  if (const char* e = std::getenv("LANCE_QUANT_SHARED"); e && fs::is_directory(e)) return e;
  if (fs::is_directory(LQ_SHARED_DIR "/fixtures")) return fs::canonical(LQ_SHARED_DIR).string();
  return "";
}
std::string lance_mini_dir() { return shared_dir() + "/fixtures/lance-mini"; }
// $LQ_TEST_EXE runs the CLI tests against another build of lance-quant (e.g. to check that a new test
// fails on the code before its fix).
std::string exe() {
  if (const char* e = std::getenv("LQ_TEST_EXE"); e && *e) return e;
  return LQ_EXE;
}
std::string scratch_dir(const std::string& name) {
  fs::path p = fs::path(LQ_BINARY_DIR) / "test-scratch" / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}
int run_command_stdout(const std::string& cmd, std::string* out) {
  std::string wrapped = "(";
  wrapped.append(cmd).append(" 2>/dev/null)");
  return run_command(wrapped, out);
}

int run_command(const std::string& cmd, std::string* out) {
  std::string full = cmd + " 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (!p) return -1;
  std::array<char, 4096> buf;
  std::string s;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) s.append(buf.data(), n);
  int st = pclose(p);
  if (out) *out = s;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace lq::test
