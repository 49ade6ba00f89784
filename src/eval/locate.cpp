#include "eval/locate.h"

#include <cstdlib>
#include <filesystem>
#include <vector>

namespace lq::eval {

namespace {

namespace fs = std::filesystem;

std::vector<fs::path> search_starts() {
  std::vector<fs::path> starts;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) starts.push_back(self.parent_path());
  const fs::path cwd = fs::current_path(ec);
  if (!ec) starts.push_back(cwd);
  return starts;
}

// The first `rel` that exists in a directory at or above one of the starts.
std::string find_above(const fs::path& rel, const fs::path& probe) {
  std::error_code ec;
  for (fs::path p : search_starts())
    for (;; p = p.parent_path()) {
      if (fs::exists(p / rel / probe, ec)) return (p / rel).string();
      if (p == p.parent_path()) break;
    }
  return "";
}

}  // namespace

std::string find_data_dir(const std::string& sub) {
  if (const char* env = std::getenv("LQ_DATA_DIR")) return (fs::path(env).parent_path() / sub).string();
  return find_above(fs::path("data") / sub, "text.txt");
}

std::string find_lance_mini() {
  std::error_code ec;
  if (const char* env = std::getenv("LANCE_QUANT_SHARED")) {
    const fs::path p = fs::path(env) / "fixtures" / "lance-mini";
    if (fs::exists(p / "model.safetensors", ec)) return p.string();
  }
  return find_above(fs::path("shared") / "fixtures" / "lance-mini", "model.safetensors");
}

}  // namespace lq::eval
