// Where a command may write, and how: the rules every output of lance-quant follows.
//
//   * An output never is, contains or lies inside an input (model directory, statistics, calibration
//     or evaluation files), compared after resolving symbolic links: check_not_input().
//   * An existing output directory is replaced only with --force, and only when it holds output this
//     tool wrote (the marker file kOutputMarker, or an older lance-quant checkpoint / report); anything
//     else is refused, naming what is there. An existing output file likewise (a safetensors file
//     lance-quant wrote). Nothing is deleted before the new output is complete.
//   * A directory is built as DIR.lq-partial-PID and renamed onto DIR at the end (PartialOutputDir);
//     SIGINT / SIGTERM remove it (io/signals.h), and the next run removes those of dead processes,
//     saying so on stderr.
// Errors are lq::Error naming the path and what is wrong with it (does not exist, not a directory,
// permission denied, ...), never a bare filesystem exception.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

namespace lq::io {

// Written into every output directory (JSON: {"producer": "lance-quant", "command": ..., ...}).
inline constexpr const char* kOutputMarker = "lance-quant.json";

// Throws naming `what` (e.g. "--out") when `out` is one of `inputs`, contains one, or lies inside one.
// Empty inputs are ignored.
void check_not_input(const std::string& out, const std::vector<std::string>& inputs, const std::string& what);

// An output directory that will be created (or replaced at commit): refuses an existing non-directory,
// a non-empty directory without --force, and with --force a directory this tool did not write.
// Also refuses an output whose parent cannot be created or written. Run it before any slow work.
void check_output_dir(const std::string& dir, bool force, const std::vector<std::string>& inputs,
                      const std::string& what = "--out");
// The same for an output file (statistics, latents): an existing file needs --force and must be a
// safetensors file lance-quant wrote (`allow_existing`: any existing regular file may be replaced,
// for outputs such as PNGs that carry no marker).
void check_output_file(const std::string& path, bool force, const std::vector<std::string>& inputs,
                       const std::string& what = "--out", bool allow_existing = false);

// True when `dir` holds output of lance-quant (marker, or a checkpoint / report an older version wrote).
bool written_by_lance_quant(const std::string& dir);

// Refuses a path that does not name an existing directory, saying which part is wrong:
// "[DIR] does not exist", "[DIR] is a file, not a directory", "[DIR] permission denied".
// `what` says what the directory is for ("model directory").
void require_directory(const std::string& dir, const std::string& what);
// The same for an existing regular file.
void require_file(const std::string& path, const std::string& what);

// A directory under construction: created as `<final>.lq-partial-<pid>` (after removing stale partial
// directories of the same output left by processes that no longer run), registered for removal on
// SIGINT / SIGTERM / SIGBUS, removed by the destructor unless committed. commit() writes the marker
// (`command` and `marker_extra`, a JSON object as text, merged in) and renames it onto the final
// name, replacing what check_output_dir allowed to be replaced.
class PartialOutputDir {
 public:
  PartialOutputDir(const std::string& final_dir, std::string command);
  ~PartialOutputDir();
  PartialOutputDir(const PartialOutputDir&) = delete;
  PartialOutputDir& operator=(const PartialOutputDir&) = delete;
  const std::filesystem::path& path() const { return temp_; }
  const std::filesystem::path& final_path() const { return final_; }
  void commit(const std::string& marker_extra = "{}");

 private:
  std::filesystem::path final_, temp_;
  std::string command_;
  int slot_ = -1;
  bool committed_ = false;
};

// Removes `<name>.lq-partial-<pid>` / `<name>.lq-old-<pid>` directories and `<name>.tmp.<pid>.<n>`
// files beside `final_path` whose process no longer runs, printing one line per removal to stderr.
// (An `.lq-old-` directory whose final directory is missing is renamed back instead: it is the only
// copy of an earlier output.) Returns the number of entries handled.
int remove_stale_partials(const std::filesystem::path& final_path);

}  // namespace lq::io
