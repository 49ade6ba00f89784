// LD_PRELOAD shim for tests/pipeline/output_safety_test.cpp: mkdir() of a path containing
// $LQ_SHIM_MKDIR_MATCH sleeps $LQ_SHIM_MKDIR_PAUSE_MS after creating it, so a test can signal the
// process in the moment between a partial output's mkdir and whatever the code does next.
#include <dlfcn.h>
#include <sys/stat.h>
#include <time.h>

#include <cstdlib>
#include <cstring>

extern "C" int mkdir(const char* path, mode_t mode) {
  using Fn = int (*)(const char*, mode_t);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "mkdir"));
  const int rc = real(path, mode);
  const char* match = std::getenv("LQ_SHIM_MKDIR_MATCH");
  const char* ms = std::getenv("LQ_SHIM_MKDIR_PAUSE_MS");
  if (rc == 0 && match && *match && ms && std::strstr(path, match)) {
    const long t = std::atol(ms);
    timespec d{t / 1000, (t % 1000) * 1000000L};
    while (nanosleep(&d, &d) != 0) {
    }
  }
  return rc;
}
