// What happens to half-written outputs when the process is stopped, and to mapped inputs that change
// under it. main() installs the handlers once; outputs and mappings register themselves.
//
//   SIGINT / SIGTERM  every registered partial output (a directory tree or a temporary file) is
//                     removed, a line says so on stderr, and the signal is re-raised with its default
//                     action (exit status 128 + signal, as without the handler).
//   SIGBUS            a read of a registered memory map past the end of its file (the file was
//                     truncated or replaced while the command ran): "[FILE] input changed during the
//                     run", partial outputs removed, exit status 1. Other bus errors: cleanup, then the
//                     default action.
// The handlers are async-signal-safe: the registries are fixed arrays of slots published with
// atomics (no allocation, no locks), and removal uses only open/openat/getdents64/unlinkat/close/
// write. A kill -9 cannot be handled: PartialOutputDir (io/output.h) removes such leftovers on the
// next run.
#pragma once
#include <cstddef>
#include <string>

namespace lq::io {

// Installs the SIGINT, SIGTERM and SIGBUS handlers (idempotent).
void install_signal_cleanup();

// A partial output removed by the handlers until unregistered. Register it before creating it, so a
// signal never finds it on disk unregistered (a registered path that does not exist counts as removed).
// Returns a slot id (-1 when the registry is full: the output then simply is not cleaned up on a signal).
int register_partial_output(const std::string& path, bool is_directory);
void unregister_partial_output(int slot);

// A read-only mapping of `path` at [begin, begin + size); `path` must stay valid until unregistered.
int register_mapping(const void* begin, size_t size, const char* path);
void unregister_mapping(int slot);

// Removes a directory tree with the same async-signal-safe code the handlers use (tests, cleanup).
// Returns true when `path` no longer exists. Symbolic links are removed, never followed.
bool remove_tree_signal_safe(const char* path);

}  // namespace lq::io
