// UTF-8 helpers for the tokenizer: validation, lossy repair, NFC, code point iteration.
#pragma once
#include <string>
#include <string_view>

namespace lq::tok {

bool is_valid_utf8(std::string_view bytes);

// Replaces every ill-formed subsequence with U+FFFD, one per "maximal subpart" (Unicode 15, §3.9,
// "U+FFFD Substitution of Maximal Subparts"). This is what Rust's String::from_utf8_lossy (used by the
// Hugging Face ByteLevel decoder) and Python's bytes.decode("utf-8", "replace") both do.
std::string utf8_repair(std::string_view bytes);

// Canonical composition (NFC) of valid UTF-8, via utf8proc. ASCII text is returned unchanged.
std::string nfc(std::string_view valid_utf8);

// Decodes the code point of valid UTF-8 starting at `pos` and moves `pos` past it.
char32_t next_code_point(std::string_view valid_utf8, size_t& pos);

// The Unicode White_Space property (Rust's char::is_whitespace, Oniguruma's \s).
bool is_unicode_whitespace(char32_t c);

// Letters, numbers and '_' (the "word character" test HF uses for added tokens marked single_word).
bool is_word_character(char32_t c);

}  // namespace lq::tok
