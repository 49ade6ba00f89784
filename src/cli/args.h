// A small command-line reader shared by subcommands:
//   ArgReader r(args, "calibrate");
//   while (r.next()) { if (r.is("--out")) out = r.value(); else if (r.positional()) ...; else r.unknown(); }
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/error.h"

namespace lq::cli {

class ArgReader {
 public:
  ArgReader(const std::vector<std::string>& args, std::string command) : args_(args), command_(std::move(command)) {}
  bool next() { return ++i_ < args_.size(); }
  const std::string& current() const { return args_[i_]; }
  bool is(const char* flag) const { return args_[i_] == flag; }
  bool positional() const { return args_[i_].empty() || args_[i_][0] != '-' || args_[i_] == "-"; }
  std::string value() {
    const std::string flag = args_[i_];
    if (i_ + 1 >= args_.size()) fail(command_ + " " + flag, "needs a value");
    return args_[++i_];
  }
  int64_t int_value() {
    const std::string flag = args_[i_], v = value();
    try {
      size_t used = 0;
      const int64_t n = std::stoll(v, &used);
      if (used == v.size()) return n;
    } catch (const std::exception&) {
    }
    fail(command_ + " " + flag, "expected an integer, got '" + v + "'");
  }
  double double_value() {
    const std::string flag = args_[i_], v = value();
    try {
      size_t used = 0;
      const double d = std::stod(v, &used);
      if (used == v.size()) return d;
    } catch (const std::exception&) {
    }
    fail(command_ + " " + flag, "expected a number, got '" + v + "'");
  }
  [[noreturn]] void unknown() const { fail(command_, "unknown argument '" + args_[i_] + "' (see --help)"); }
  const std::string& command() const { return command_; }

 private:
  const std::vector<std::string>& args_;
  std::string command_;
  size_t i_ = size_t(-1);
};

// The flags of generation-task inputs (t2v, image / video edits) that calibrate and quantize share,
// read into O's vae, t2v_frames, edit_resolution, edit_max_frames, edit_vit_resolution and
// edit_without_vit. False when the current argument is none of them.
template <class O>
bool read_gen_task_flag(ArgReader& r, O& o) {
  if (r.is("--vae")) o.vae = r.value();
  else if (r.is("--t2v-frames")) o.t2v_frames = int(r.int_value());
  else if (r.is("--edit-resolution")) o.edit_resolution = int(r.int_value());
  else if (r.is("--edit-max-frames")) o.edit_max_frames = int(r.int_value());
  else if (r.is("--edit-vit-resolution")) {
    o.edit_vit_resolution = int(r.int_value());
    if (o.edit_vit_resolution < 28) fail(r.command() + " --edit-vit-resolution", "must be at least 28 pixels");
  } else if (r.is("--no-vit-reference")) o.edit_without_vit = true;
  else return false;
  return true;
}

}  // namespace lq::cli
