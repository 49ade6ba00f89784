// Small text-file helpers shared by the calibration, AWQ and evaluation inputs.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lq::io {

// The whole file as bytes; throws lq::Error "[path] cannot open <what>".
std::string read_file(const std::string& path, const std::string& what = "file");
// The whole file as text: read_file, then check_text. Every text input (calibration, evaluation and
// chat files) is read this way, so a binary file is refused before any work starts.
std::string read_text(const std::string& path, const std::string& what = "text file");
// Refuses bytes that are not UTF-8 text: an invalid, overlong or surrogate sequence, or a NUL byte.
// The message names `where`, the line and the byte offset ("[where:LINE] invalid UTF-8 at byte N ...").
void check_text(const std::string& bytes, const std::string& where);
// Offset of the first byte that is not part of valid UTF-8 text (see check_text), or npos.
size_t first_invalid_text_byte(const std::string& bytes);
// Lines without their "\n" / "\r\n", skipping lines that are empty or only blanks.
std::vector<std::string> nonempty_lines(const std::string& text);
// A JSON Lines file: one JSON object per non-empty line, each paired with its 1-based line number;
// throws "[path:line] ..." for a line that is not a JSON object (and check_text's errors first).
std::vector<std::pair<int, nlohmann::json>> read_jsonl_objects(const std::string& path, const std::string& what = "file");

}  // namespace lq::io
