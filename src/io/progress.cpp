#include "io/progress.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace lq::io {

std::string format_duration(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.1fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, int(s) % 3600 / 60);
  return buf;
}

Progress::Progress(std::string label, double total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), enabled_(true), terminal_(::isatty(2) == 1),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {
  if (const char* e = std::getenv("LQ_PROGRESS_SECONDS")) {
    char* end = nullptr;
    const double v = std::strtod(e, &end);
    if (end != e && v >= 0) plain_interval_s_ = v;
  }
  if (terminal_) last_draw_ = start_ - std::chrono::seconds(1);
  else if (plain_interval_s_ > 0) ticker_ = std::thread([this] { tick(); });
}

Progress::~Progress() {
  finish();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (ticker_.joinable()) ticker_.join();
}

std::string format_rate(double done, double elapsed, const std::string& unit) {
  const double rate = elapsed > 0 ? done / elapsed : 0;
  if (rate >= 0.1 || done <= 0) {
    char b[64];
    std::snprintf(b, sizeof b, "%.2f ", rate);
    return b + unit + "/s";
  }
  return format_duration(elapsed / done) + " each";
}

void Progress::print_plain(double done, const std::string& note) {
  const auto now = std::chrono::steady_clock::now();
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? done / elapsed : 0;
  const std::string eta = rate > 0 && done < total_ ? "ETA " + format_duration((total_ - done) / rate) : "ETA unknown";
  std::fprintf(stderr, "%s: %.0f/%.0f %s, %s, %s elapsed, %s%s%s\n", label_.c_str(), done, total_, unit_.c_str(),
               format_rate(done, elapsed, unit_).c_str(), format_duration(elapsed).c_str(), eta.c_str(), note.empty() ? "" : ", ",
               note.c_str());
  std::fflush(stderr);
  printed_plain_ = true;
}

// Non-terminal mode: repeats the latest state every interval while no update() prints one.
void Progress::tick() {
  std::unique_lock<std::mutex> lock(mutex_);
  const auto interval = std::chrono::duration<double>(plain_interval_s_);
  while (!stop_) {
    wake_.wait_for(lock, interval);
    if (stop_) break;
    if (updated_ && std::chrono::steady_clock::now() - last_draw_ >= interval) print_plain(last_done_, last_note_);
  }
}

void Progress::update(double done, const std::string& note) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  last_done_ = done;
  last_note_ = note;
  updated_ = true;
  const double since_draw = std::chrono::duration<double>(now - last_draw_).count();
  if (!terminal_) {
    if (since_draw >= plain_interval_s_) print_plain(done, note);
    return;
  }
  if (done < total_ && since_draw < 0.1) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? done / elapsed : 0;
  const std::string eta = rate > 0 && done < total_ ? "ETA " + format_duration((total_ - done) / rate) : format_duration(elapsed);
  std::fprintf(stderr, "\r\033[K%s  %.0f/%.0f %s  %s  %s%s%s", label_.c_str(), done, total_, unit_.c_str(),
               format_rate(done, elapsed, unit_).c_str(), eta.c_str(), note.empty() ? "" : "  ", note.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (drawn_) std::fputc('\n', stderr);
  if (printed_plain_) {  // the log ends with the total, like the terminal's last redraw
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::fprintf(stderr, "%s: done, %.0f %s in %s\n", label_.c_str(), last_done_, unit_.c_str(), format_duration(elapsed).c_str());
  }
  drawn_ = printed_plain_ = false;
  updated_ = false;  // nothing more from the ticker
}

}  // namespace lq::io
