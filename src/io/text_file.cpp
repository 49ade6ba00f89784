#include "io/text_file.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "io/error.h"

namespace lq::io {

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open " + what);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

size_t first_invalid_text_byte(const std::string& bytes) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c == 0) return i;
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    else return i;  // a continuation byte, 0xC0/0xC1 (overlong) or 0xF5..0xFF
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string::npos;
}

void check_text(const std::string& bytes, const std::string& where) {
  const size_t bad = first_invalid_text_byte(bytes);
  if (bad == std::string::npos) return;
  const size_t line = size_t(std::count(bytes.begin(), bytes.begin() + long(bad), '\n')) + 1;
  const size_t line_start = bytes.rfind('\n', bad == 0 ? 0 : bad - 1);
  const size_t column = bad - (line_start == std::string::npos || bad == 0 ? 0 : line_start + 1) + 1;
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02X", unsigned(static_cast<unsigned char>(bytes[bad])));
  fail(where + ":" + std::to_string(line),
       std::string(bytes[bad] == 0 ? "NUL byte" : "invalid UTF-8") + " at byte " + std::to_string(bad) + " (column " +
           std::to_string(column) + ", " + hex + "): expected UTF-8 text (a binary file?)");
}

std::string read_text(const std::string& path, const std::string& what) {
  std::string s = read_file(path, what);
  check_text(s, path);
  return s;
}

std::vector<std::string> nonempty_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) out.push_back(line);
  }
  return out;
}

std::vector<std::pair<int, nlohmann::json>> read_jsonl_objects(const std::string& path, const std::string& what) {
  std::vector<std::pair<int, nlohmann::json>> out;
  std::istringstream in(read_text(path, what));
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(path + ":" + std::to_string(line_no), std::string("not valid JSON: ") + e.what());
    }
    if (!j.is_object()) fail(path + ":" + std::to_string(line_no), "expected a JSON object");
    out.emplace_back(line_no, std::move(j));
  }
  return out;
}

}  // namespace lq::io
