#include "io/signals.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstring>

namespace lq::io {

namespace {

constexpr int kOutputSlots = 64;
constexpr int kMapSlots = 1024;
constexpr size_t kPathMax = 4096;

// state: 0 free, 1 being written by its owner, 2 published (the handlers read only these).
struct OutputSlot {
  std::atomic<int> state{0};
  bool is_directory = false;
  char path[kPathMax];
};
struct MapSlot {
  std::atomic<int> state{0};
  uintptr_t begin = 0;
  size_t size = 0;
  const char* path = nullptr;
};
OutputSlot g_outputs[kOutputSlots];
MapSlot g_maps[kMapSlots];
std::atomic<int> g_cleaning{0};
std::atomic<int> g_installed{0};

size_t c_length(const char* s) {
  size_t n = 0;
  while (s[n]) ++n;
  return n;
}
void say(const char* s) {
  const size_t n = c_length(s);
  if (::write(2, s, n) < 0) return;  // nothing better to do inside a handler
}

// getdents64 records (the kernel ABI; glibc's readdir is not async-signal-safe).
struct Dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[1];
};

bool dot_or_dotdot(const char* n) { return n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0)); }

// Removes everything inside the open directory `dirfd`. Entries removed while the directory is read
// can make getdents skip others, so it reads again until a pass finds nothing.
bool remove_entries(int dirfd, int depth) {
  if (depth > 16) return false;
  alignas(8) char buf[2048];
  for (int pass = 0; pass < 1000; ++pass) {
    bool saw = false, removed = false;
    if (::lseek(dirfd, 0, SEEK_SET) < 0) return false;
    for (;;) {
      const long n = ::syscall(SYS_getdents64, dirfd, buf, sizeof buf);
      if (n <= 0) break;
      for (long off = 0; off < n;) {
        const auto* d = reinterpret_cast<const Dirent64*>(buf + off);
        off += d->d_reclen;
        if (dot_or_dotdot(d->d_name)) continue;
        saw = true;
        if (::unlinkat(dirfd, d->d_name, 0) == 0) {
          removed = true;
          continue;
        }
        if (errno != EISDIR && errno != EPERM) continue;
        const int sub = ::openat(dirfd, d->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub >= 0) {
          remove_entries(sub, depth + 1);
          ::close(sub);
        }
        if (::unlinkat(dirfd, d->d_name, AT_REMOVEDIR) == 0) removed = true;
      }
    }
    if (!saw) return true;
    if (!removed) return false;
  }
  return false;
}

void remove_outputs() {
  for (auto& s : g_outputs) {
    if (s.state.load(std::memory_order_acquire) != 2) continue;
    const bool gone = s.is_directory ? remove_tree_signal_safe(s.path) : (::unlink(s.path) == 0 || errno == ENOENT);
    say(gone ? "lance-quant: removed partial output " : "lance-quant: could not remove partial output ");
    say(s.path);
    say("\n");
  }
}

void on_stop(int sig) {
  if (g_cleaning.exchange(1) != 0) return;  // another thread is already cleaning up and will re-raise
  say(sig == SIGINT ? "\nlance-quant: interrupted (SIGINT)\n" : "\nlance-quant: terminated (SIGTERM)\n");
  remove_outputs();
  ::signal(sig, SIG_DFL);
  ::raise(sig);  // delivered when the handler returns: the default action, status 128 + sig
}

void on_bus(int sig, siginfo_t* info, void*) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(info ? info->si_addr : nullptr);
  const char* file = nullptr;
  for (auto& m : g_maps)
    if (m.state.load(std::memory_order_acquire) == 2 && a >= m.begin && a - m.begin < m.size) {
      file = m.path;
      break;
    }
  if (file) {
    say("lance-quant: error: [");
    say(file);
    say("] input changed during the run: the file was truncated or replaced while it was being read (SIGBUS)\n");
  } else {
    say("lance-quant: fatal: bus error (SIGBUS)\n");
  }
  if (g_cleaning.exchange(1) == 0) remove_outputs();
  if (file) ::_exit(1);
  ::signal(sig, SIG_DFL);  // returning re-executes the faulting access, which now takes the default action
}

}  // namespace

bool remove_tree_signal_safe(const char* path) {
  const int fd = ::open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return true;
    if (errno == ENOTDIR || errno == ELOOP) return ::unlink(path) == 0 || errno == ENOENT;
    return false;
  }
  remove_entries(fd, 0);
  ::close(fd);
  return ::rmdir(path) == 0 || errno == ENOENT;
}

void install_signal_cleanup() {
  if (g_installed.exchange(1) != 0) return;
  struct sigaction stop {};
  stop.sa_handler = on_stop;
  sigemptyset(&stop.sa_mask);
  sigaddset(&stop.sa_mask, SIGINT);
  sigaddset(&stop.sa_mask, SIGTERM);
  stop.sa_flags = 0;
  ::sigaction(SIGINT, &stop, nullptr);
  ::sigaction(SIGTERM, &stop, nullptr);
  struct sigaction bus {};
  bus.sa_sigaction = on_bus;
  sigemptyset(&bus.sa_mask);
  sigaddset(&bus.sa_mask, SIGINT);
  sigaddset(&bus.sa_mask, SIGTERM);
  bus.sa_flags = SA_SIGINFO;
  ::sigaction(SIGBUS, &bus, nullptr);
}

int register_partial_output(const std::string& path, bool is_directory) {
  if (path.empty() || path.size() >= kPathMax) return -1;
  for (int i = 0; i < kOutputSlots; ++i) {
    int expected = 0;
    if (!g_outputs[i].state.compare_exchange_strong(expected, 1)) continue;
    std::memcpy(g_outputs[i].path, path.c_str(), path.size() + 1);
    g_outputs[i].is_directory = is_directory;
    g_outputs[i].state.store(2, std::memory_order_release);
    return i;
  }
  return -1;
}

void unregister_partial_output(int slot) {
  if (slot >= 0 && slot < kOutputSlots) g_outputs[slot].state.store(0, std::memory_order_release);
}

int register_mapping(const void* begin, size_t size, const char* path) {
  if (!begin || size == 0) return -1;
  for (int i = 0; i < kMapSlots; ++i) {
    int expected = 0;
    if (!g_maps[i].state.compare_exchange_strong(expected, 1)) continue;
    g_maps[i].begin = reinterpret_cast<uintptr_t>(begin);
    g_maps[i].size = size;
    g_maps[i].path = path;
    g_maps[i].state.store(2, std::memory_order_release);
    return i;
  }
  return -1;
}

void unregister_mapping(int slot) {
  if (slot >= 0 && slot < kMapSlots) g_maps[slot].state.store(0, std::memory_order_release);
}

}  // namespace lq::io
