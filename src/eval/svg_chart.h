// Minimal SVG line charts for the evaluation report: axes with "nice" ticks, optional log10 y axis,
// a legend, one polyline with point markers per series. Text is real SVG text, so plots stay crisp.
#pragma once
#include <string>
#include <vector>

namespace lq::eval {

struct ChartSeries {
  std::string name;
  std::vector<double> x, y;  // same length; non-finite y values are skipped
};

struct ChartSpec {
  std::string title, x_label, y_label;
  bool log_y = false;  // falls back to linear when a value is <= 0
  std::vector<std::string> x_tick_labels;  // when set: x = 0..n-1 labelled by these strings
  int width = 820, height = 420;
};

std::string line_chart_svg(const ChartSpec& spec, const std::vector<ChartSeries>& series);
// Writes text to `path` through a temporary name + rename (throws lq::Error naming the path).
void write_text_file(const std::string& path, const std::string& text);

// "Nice" tick values covering [lo, hi] (about `target` of them, steps of 1, 2 or 5 x 10^k).
std::vector<double> nice_ticks(double lo, double hi, int target);

}  // namespace lq::eval
