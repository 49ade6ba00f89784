// Small text-file helpers shared by the calibration, AWQ and evaluation inputs.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lq::io {

// The whole file as bytes; throws lq::Error "[path] cannot open <what>".
std::string read_file(const std::string& path, const std::string& what = "file");
// Lines without their "\n" / "\r\n", skipping lines that are empty or only blanks.
std::vector<std::string> nonempty_lines(const std::string& text);
// A JSON Lines file: one JSON object per non-empty line, each paired with its 1-based line number;
// throws "[path:line] ..." for a line that is not a JSON object.
std::vector<std::pair<int, nlohmann::json>> read_jsonl_objects(const std::string& path, const std::string& what = "file");

}  // namespace lq::io
