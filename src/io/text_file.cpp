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

}  // namespace lq::io
