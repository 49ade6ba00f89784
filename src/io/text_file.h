// Small text-file helpers shared by the calibration, AWQ and evaluation inputs.
#pragma once
#include <string>
#include <vector>

namespace lq::io {

// The whole file as bytes; throws lq::Error "[path] cannot open <what>".
std::string read_file(const std::string& path, const std::string& what = "file");
// Lines without their "\n" / "\r\n", skipping lines that are empty or only blanks.
std::vector<std::string> nonempty_lines(const std::string& text);

}  // namespace lq::io
