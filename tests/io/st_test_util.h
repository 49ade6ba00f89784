// Helpers for the safetensors tests: build file images byte by byte and capture lq::Error messages.
#pragma once
#include <cstdint>
#include <fstream>
#include <functional>
#include <string>

#include "io/error.h"

namespace lq::test {

inline std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = char(uint8_t(n >> (8 * i)));
  return s;
}

// 8-byte little-endian header length + header text (+ spaces to a multiple of 8 when `pad`) + data.
inline std::string st_image(std::string header, const std::string& data = "", bool pad = true) {
  if (pad)
    while (header.size() % 8 != 0) header.push_back(' ');
  return le64(header.size()) + header + data;
}

inline std::string write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  out.close();
  EXPECT_TRUE(out.good()) << "cannot write " << path;
  return path;
}

// Runs `f`; returns the lq::Error message it throws, or "<no error>". Other exceptions propagate
// (and fail the test).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const lq::Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace lq::test
