#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/utf8.h"

namespace lq::tok {
namespace {

bool maps_to_itself(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; }

std::string encode_utf8(char32_t c) {
  std::string s;
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
  return s;
}

struct ByteMap {
  std::array<char32_t, 256> code_point{};
  std::array<std::string, 256> utf8;
  std::array<int16_t, 512> byte_of{};  // every symbol is below U+0200

  ByteMap() {
    byte_of.fill(-1);
    char32_t next_shifted = 256;
    for (int b = 0; b < 256; ++b) {
      code_point[b] = maps_to_itself(b) ? static_cast<char32_t>(b) : next_shifted++;
      utf8[b] = encode_utf8(code_point[b]);
      byte_of[code_point[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

}  // namespace

const std::string& byte_symbol(uint8_t b) { return byte_map().utf8[b]; }

int symbol_byte(char32_t c) { return c < 512 ? byte_map().byte_of[c] : -1; }

std::string bytes_to_symbols(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += byte_symbol(static_cast<uint8_t>(c));
  return out;
}

void append_token_bytes(std::string_view token, std::string& out) {
  const size_t start = out.size();
  if (!is_valid_utf8(token)) {  // not a symbol string at all: keep its bytes
    out.append(token);
    return;
  }
  for (size_t pos = 0; pos < token.size();) {
    const int b = symbol_byte(next_code_point(token, pos));
    if (b < 0) {
      out.resize(start);
      out.append(token);
      return;
    }
    out += static_cast<char>(b);
  }
}

}  // namespace lq::tok
