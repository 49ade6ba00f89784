// GPT-2's reversible byte <-> character map ("bytes_to_unicode"): every byte becomes a printable
// character, so byte-level BPE vocabularies are ordinary strings. Printable Latin-1 bytes map to
// themselves; the other 68 bytes map to U+0100.. in byte order.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace lq::tok {

// UTF-8 of the character standing for byte `b`.
const std::string& byte_symbol(uint8_t b);

// The byte a character stands for, or -1 when it is not one of the 256 symbols.
int symbol_byte(char32_t c);

// Maps every byte of `bytes` to its symbol (the string a vocabulary entry spells).
std::string bytes_to_symbols(std::string_view bytes);

// Appends the bytes a vocabulary token stands for. Like the Hugging Face ByteLevel decoder, a token
// with any character outside the map (e.g. an added token containing a space) is appended as its own
// UTF-8 instead.
void append_token_bytes(std::string_view token, std::string& out);

}  // namespace lq::tok
