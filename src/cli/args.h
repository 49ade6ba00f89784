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

 private:
  const std::vector<std::string>& args_;
  std::string command_;
  size_t i_ = size_t(-1);
};

}  // namespace lq::cli
