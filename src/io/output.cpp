#include "io/output.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/error.h"
#include "io/safetensors.h"
#include "io/signals.h"

namespace lq::io {

namespace fs = std::filesystem;

namespace {

// Absolute, normalised, symbolic links of the existing part resolved, no trailing separator.
fs::path resolved(const std::string& p) {
  std::error_code ec;
  fs::path abs = fs::absolute(p, ec);
  if (ec) abs = fs::path(p);
  fs::path r = fs::weakly_canonical(abs, ec);
  if (ec) r = abs.lexically_normal();
  if (!r.has_filename() && r.has_parent_path() && r != r.root_path()) r = r.parent_path();
  return r;
}

// `inner` equals `outer` or lies below it (component-wise).
bool is_within(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i) {
    if (o->empty()) continue;
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

std::string listing(const fs::path& dir, size_t max_names = 5) {
  std::vector<std::string> names;
  size_t n = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (names.size() < max_names) names.push_back(it->path().filename().string());
    ++n;
  }
  std::string s;
  for (const auto& x : names) s += (s.empty() ? "" : ", ") + x;
  if (n > names.size()) s += " and " + std::to_string(n - names.size()) + " more";
  return std::to_string(n) + (n == 1 ? " entry: " : " entries: ") + s;
}

std::string errno_text(int e) { return std::strerror(e); }

// The nearest existing ancestor of `p` must be a writable directory (the output is created under it).
void check_creatable(const std::string& given, const std::string& what) {
  fs::path p = fs::absolute(given).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  fs::path anc = p.parent_path();
  std::error_code ec;
  while (!anc.empty() && !fs::exists(fs::symlink_status(anc, ec)) && anc != anc.root_path()) anc = anc.parent_path();
  if (anc.empty()) anc = ".";
  if (!fs::is_directory(anc, ec))
    fail(what + " " + given, anc.string() + " is not a directory, so nothing can be created under it");
  if (::access(anc.c_str(), W_OK | X_OK) != 0)
    fail(what + " " + given, "cannot create it: " + anc.string() + ": " + errno_text(errno));
}

bool safetensors_producer_is_ours(const fs::path& file) {
  std::error_code ec;
  if (!fs::is_regular_file(fs::symlink_status(file, ec))) return false;
  try {
    const SafetensorsFile f(file.string());
    const auto& m = f.metadata();
    if (auto it = m.find("producer"); it != m.end() && it->second.rfind("lance-quant", 0) == 0) return true;
    if (auto it = m.find("format"); it != m.end() && it->second.rfind("lance-quant", 0) == 0) return true;
  } catch (const Error&) {
  }
  return false;
}

bool json_producer_is_ours(const fs::path& file) {
  std::error_code ec;
  if (!fs::is_regular_file(fs::symlink_status(file, ec))) return false;
  std::ifstream in(file);
  try {
    const nlohmann::json j = nlohmann::json::parse(in);
    return j.is_object() && j.contains("producer") && j["producer"].is_string() &&
           j["producer"].get<std::string>().rfind("lance-quant", 0) == 0;
  } catch (const std::exception&) {
    return false;
  }
}

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() < 10 && s.find_first_not_of("0123456789") == std::string::npos;
}

bool process_gone(long pid) {
  if (pid <= 0 || pid == long(::getpid())) return false;
  return ::kill(pid_t(pid), 0) != 0 && errno == ESRCH;
}

}  // namespace

void check_not_input(const std::string& out, const std::vector<std::string>& inputs, const std::string& what) {
  const fs::path o = resolved(out);
  std::error_code ec;
  for (const auto& in : inputs) {
    if (in.empty()) continue;
    const fs::path i = resolved(in);
    const bool same = o == i || (fs::exists(o, ec) && fs::exists(i, ec) && fs::equivalent(o, i, ec));
    if (same) fail(what + " " + out, "is the input " + in + "; refusing to overwrite an input");
    if (is_within(i, o)) fail(what + " " + out, "contains the input " + in + "; refusing to replace it");
    if (is_within(o, i)) fail(what + " " + out, "lies inside the input directory " + in + "; write outputs elsewhere");
  }
}

bool written_by_lance_quant(const std::string& dir) {
  const fs::path d(dir);
  if (json_producer_is_ours(d / kOutputMarker)) return true;
  // Outputs of versions before the marker: quantized checkpoints and evaluation reports.
  for (const char* meta : {"awq_meta.json", "nvfp4_meta.json"})
    if (json_producer_is_ours(d / meta)) return true;
  for (const char* weights : {"model.safetensors", "awq_state_dict.safetensors", "nvfp4_state_dict.safetensors"})
    if (safetensors_producer_is_ours(d / weights)) return true;
  std::ifstream md(d / "report.md");
  std::string first;
  return md && std::getline(md, first) && first == "# lance-quant evaluation report";
}

void check_output_dir(const std::string& dir, bool force, const std::vector<std::string>& inputs, const std::string& what) {
  if (dir.empty()) fail(what, "an output directory is required");
  check_not_input(dir, inputs, what);
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(dir, ec);
  if (!fs::exists(st)) {
    check_creatable(dir, what);
    return;
  }
  if (fs::is_symlink(st)) fail(what + " " + dir, "is a symbolic link; give the directory itself");
  if (!fs::is_directory(st)) fail(what + " " + dir, "exists and is not a directory");
  check_creatable(dir, what);  // the rename at the end needs a writable parent
  if (fs::is_empty(dir, ec)) return;
  const bool ours = written_by_lance_quant(dir);
  if (!force) {
    if (ours) fail(what + " " + dir, "already holds output of lance-quant (use --force to replace it)");
    fail(what + " " + dir, "is not empty (" + listing(dir) + "); choose a new or empty directory");
  }
  if (!ours)
    fail(what + " " + dir, "holds files lance-quant did not write (" + listing(dir) +
                               "); refusing to replace it, even with --force");
}

void check_output_file(const std::string& path, bool force, const std::vector<std::string>& inputs, const std::string& what,
                       bool allow_existing) {
  if (path.empty()) fail(what, "an output file is required");
  check_not_input(path, inputs, what);
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(path, ec);
  if (fs::exists(st)) {
    if (fs::is_directory(st)) fail(what + " " + path, "is a directory, expected a file name");
    if (!fs::is_regular_file(st)) fail(what + " " + path, "exists and is not a regular file");
    if (!force) fail(what + " " + path, "already exists (use --force to overwrite it)");
    if (!allow_existing && !safetensors_producer_is_ours(path))
      fail(what + " " + path, "is not a file lance-quant wrote; refusing to overwrite it, even with --force");
  }
  const fs::path parent = fs::absolute(path).parent_path();
  if (!fs::is_directory(parent, ec)) fail(what + " " + path, "its directory " + parent.string() + " does not exist");
  if (::access(parent.c_str(), W_OK | X_OK) != 0)
    fail(what + " " + path, "cannot write in " + parent.string() + ": " + errno_text(errno));
  remove_stale_partials(fs::absolute(path));
}

void require_directory(const std::string& dir, const std::string& what) {
  if (dir.empty()) fail(what, "no directory given");
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) fail(dir, what + ": " + ec.message());
  if (!fs::exists(st)) fail(dir, what + " does not exist");
  if (!fs::is_directory(st)) fail(dir, what + " is a file, not a directory");
  if (::access(dir.c_str(), R_OK | X_OK) != 0) fail(dir, what + ": " + errno_text(errno));
}

void require_file(const std::string& path, const std::string& what) {
  if (path.empty()) fail(what, "no file given");
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) fail(path, what + ": " + ec.message());
  if (!fs::exists(st)) fail(path, what + " does not exist");
  if (fs::is_directory(st)) fail(path, what + " is a directory, expected a file");
  if (!fs::is_regular_file(st)) fail(path, what + " is not a regular file");
  if (::access(path.c_str(), R_OK) != 0) fail(path, what + ": " + errno_text(errno));
}

int remove_stale_partials(const fs::path& final_path) {
  fs::path f = final_path.lexically_normal();
  if (!f.has_filename()) f = f.parent_path();
  const fs::path parent = f.has_parent_path() ? f.parent_path() : fs::path(".");
  const std::string name = f.filename().string();
  int handled = 0;
  std::error_code ec;
  std::vector<fs::path> entries;
  for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) entries.push_back(it->path());
  for (const auto& e : entries) {
    const std::string fn = e.filename().string();
    if (fn.rfind(name + ".", 0) != 0) continue;
    const std::string rest = fn.substr(name.size() + 1);
    std::string pid_text, kind;
    if (rest.rfind("lq-partial-", 0) == 0) kind = "partial", pid_text = rest.substr(11);
    else if (rest.rfind("lq-old-", 0) == 0) kind = "old", pid_text = rest.substr(7);
    else if (rest.rfind("tmp.", 0) == 0) kind = "tmp", pid_text = rest.substr(4, rest.find('.', 4) - 4);
    if (kind.empty() || !all_digits(pid_text) || !process_gone(std::stol(pid_text))) continue;
    if (kind == "old" && !fs::exists(fs::symlink_status(f, ec))) {
      fs::rename(e, f, ec);
      std::fprintf(stderr, "lance-quant: restored %s from %s (left by process %s, which no longer runs)\n", f.c_str(), e.c_str(),
                   pid_text.c_str());
      ++handled;
      continue;
    }
    const bool gone = remove_tree_signal_safe(e.c_str());
    std::fprintf(stderr, "lance-quant: %s stale partial output %s (its process %s no longer runs)\n",
                 gone ? "removed" : "could not remove", e.c_str(), pid_text.c_str());
    ++handled;
  }
  return handled;
}

PartialOutputDir::PartialOutputDir(const std::string& final_dir, std::string command) : command_(std::move(command)) {
  std::error_code ec;
  final_ = fs::absolute(final_dir, ec).lexically_normal();
  if (!final_.has_filename()) final_ = final_.parent_path();
  remove_stale_partials(final_);
  temp_ = final_.string() + ".lq-partial-" + std::to_string(::getpid());
  // Registered before it exists: a SIGTERM right after the mkdir must find it (the handler takes a
  // missing directory as removed).
  slot_ = register_partial_output(temp_.string(), true);
  fs::remove_all(temp_, ec);
  fs::create_directories(temp_, ec);
  if (ec) {
    unregister_partial_output(slot_);
    fail(final_dir, "cannot create the output directory (" + temp_.string() + "): " + ec.message());
  }
}

PartialOutputDir::~PartialOutputDir() {
  if (committed_) return;
  unregister_partial_output(slot_);
  std::error_code ec;
  fs::remove_all(temp_, ec);
}

void PartialOutputDir::commit(const std::string& marker_extra) {
  nlohmann::ordered_json marker = {{"producer", "lance-quant"}, {"command", command_}};
  nlohmann::json extra = nlohmann::json::parse(marker_extra, nullptr, false);
  if (extra.is_object())
    for (auto it = extra.begin(); it != extra.end(); ++it) marker[it.key()] = *it;
  {
    const fs::path mp = temp_ / kOutputMarker;
    std::ofstream os(mp, std::ios::trunc);
    os << marker.dump(2) << "\n";
    if (!os.flush()) fail(mp.string(), "cannot write");
  }
  std::error_code ec;
  fs::path old;
  if (fs::exists(fs::symlink_status(final_, ec))) {
    old = final_.string() + ".lq-old-" + std::to_string(::getpid());
    fs::rename(final_, old, ec);
    if (ec) fail(final_.string(), "cannot move the previous output aside: " + ec.message());
  }
  fs::rename(temp_, final_, ec);
  if (ec) {
    std::error_code ec2;
    if (!old.empty()) fs::rename(old, final_, ec2);
    fail(final_.string(), "cannot rename " + temp_.string() + " into place: " + ec.message());
  }
  committed_ = true;
  unregister_partial_output(slot_);
  if (!old.empty()) fs::remove_all(old, ec);
}

}  // namespace lq::io
