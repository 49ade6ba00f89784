// A one-line progress display for long jobs: "label  42/120 layers  3.1 layers/s  ETA 25s".
// Writes to stderr only when stderr is a terminal (quiet in scripts and CI), at most ~10 times a second.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace lq::io {

class Progress {
 public:
  Progress(std::string label, double total, std::string unit);
  ~Progress();  // ends the line if anything was drawn
  void set_total(double total) { total_ = total; }
  void update(double done, const std::string& note = "");
  void finish();
  bool enabled() const { return enabled_; }

 private:
  std::string label_, unit_;
  double total_;
  bool enabled_, drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1.5 s", "2m05s", "1h02m"
std::string format_duration(double seconds);

}  // namespace lq::io
