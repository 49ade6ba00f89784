#include "io/text_file.h"

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
  std::istringstream in(read_file(path, what));
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
