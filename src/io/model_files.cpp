#include "io/model_files.h"

#include <filesystem>

#include "io/error.h"

namespace lq::io {

namespace fs = std::filesystem;

namespace {

bool is_within(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i) {
    if (o->empty()) continue;
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

}  // namespace

void check_model_file(const std::string& dir, const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(path, ec);
  if (!fs::exists(st)) fail(path, "does not exist");
  if (fs::is_regular_file(st)) return;
  if (!fs::is_symlink(st)) fail(path, "is not a regular file");
  const fs::path target = fs::canonical(path, ec);
  if (ec) fail(path, "is a broken symbolic link (" + fs::read_symlink(path, ec).string() + ")");
  if (!fs::is_regular_file(target, ec)) fail(path, "is a symbolic link to " + target.string() + ", which is not a regular file");
  const fs::path root = fs::canonical(dir.empty() ? "." : dir, ec);
  if (!ec && is_within(target, root)) return;
  // A Hugging Face cache snapshot: <repo>/snapshots/<revision>/FILE -> ../../blobs/<hash>.
  if (!ec && root.has_parent_path() && root.parent_path().filename() == "snapshots") {
    const fs::path blobs = fs::canonical(root.parent_path().parent_path() / "blobs", ec);
    if (!ec && is_within(target, blobs)) return;
  }
  fail(path, "is a symbolic link to " + target.string() +
                 ", outside the model directory; refusing to read it (links may point inside the model directory or, "
                 "in a Hugging Face cache snapshot, into the repository's blobs/)");
}

std::string model_file(const std::string& dir, const std::string& name) {
  const fs::path p = fs::path(dir) / name;
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(p, ec))) return "";
  check_model_file(dir, p.string());
  return p.string();
}

}  // namespace lq::io
