// Progress of long jobs on stderr: "label  42/120 layers  3.1 layers/s  ETA 25s".
// On a terminal, one line redrawn in place at most ~10 times a second. Otherwise (logs of CI and batch
// runs) a plain line every few seconds once the first update() came, also while one long step runs (a
// background ticker repeats the latest state with its elapsed time), so a log shows that work goes on:
// the interval is 5 s, or $LQ_PROGRESS_SECONDS (0: at every update, no ticker; e.g. for tests). A job
// shorter than the interval prints nothing; one that never calls update() (e.g. --quiet) neither.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

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
  void print_plain(double done, const std::string& note);  // holds mutex_
  void tick();

  std::string label_, unit_;
  double total_;
  bool enabled_, terminal_, drawn_ = false, printed_plain_ = false, updated_ = false, stop_ = false;
  double plain_interval_s_ = 5.0;
  double last_done_ = 0;
  std::string last_note_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::thread ticker_;
};

// "1.5 s", "2m05s", "1h02m"
std::string format_duration(double seconds);
// done units in elapsed seconds: "3.10 layers/s", or below 0.1 per second the time of one, "6m10s each".
std::string format_rate(double done, double elapsed, const std::string& unit);

}  // namespace lq::io
