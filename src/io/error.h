// The project's error type: a message that names the file / tensor / argument at fault.
#pragma once
#include <stdexcept>
#include <string>

namespace lq {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws lq::Error("[where] what").
[[noreturn]] inline void fail(const std::string& where, const std::string& what) {
  throw Error("[" + where + "] " + what);
}

}  // namespace lq
