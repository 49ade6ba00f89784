#include "eval/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "io/error.h"

namespace lq::eval {

namespace {

const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string escape_xml(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

std::string tick_label(double v, bool log_axis) {
  char b[32];
  if (log_axis) std::snprintf(b, sizeof b, "1e%d", int(std::lround(v)));
  else if (v != 0 && (std::fabs(v) < 1e-3 || std::fabs(v) >= 1e5)) std::snprintf(b, sizeof b, "%.0e", v);
  else std::snprintf(b, sizeof b, "%g", v);
  return b;
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  // k * step (not repeated addition) keeps the values as exact as the step itself.
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k += 1) t.push_back(k == 0 ? 0.0 : k * step);
  return t;
}

std::string line_chart_svg(const ChartSpec& spec, const std::vector<ChartSeries>& series) {
  const double W = spec.width, Hh = spec.height, left = 80, right = 180, top = 40, bottom = 60;
  const double pw = W - left - right, ph = Hh - top - bottom;
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  bool positive = true;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      xmin = std::min(xmin, s.x[i]);
      xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, s.y[i]);
      ymax = std::max(ymax, s.y[i]);
      positive = positive && s.y[i] > 0;
    }
  if (!std::isfinite(xmin)) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  const bool log_y = spec.log_y && positive;
  auto ty = [&](double y) { return log_y ? std::log10(y) : y; };
  double y0 = ty(ymin), y1 = ty(ymax);
  if (log_y) y0 = std::floor(y0), y1 = std::ceil(y1);
  else y0 = std::min(0.0, y0);
  if (y1 - y0 < 1e-12) y1 = y0 + (log_y ? 1 : std::max(1e-12, std::fabs(y0)) + 1);
  if (xmax - xmin < 1e-12) xmin -= 0.5, xmax += 0.5;
  const std::vector<double> yt = log_y ? nice_ticks(y0, y1, int(std::min(8.0, y1 - y0))) : nice_ticks(y0, y1, 6);
  if (!log_y && !yt.empty()) y1 = std::max(y1, yt.back());
  auto px = [&](double x) { return left + (x - xmin) / (xmax - xmin) * pw; };
  auto py = [&](double y) { return top + ph - (ty(y) - y0) / (y1 - y0) * ph; };
  auto py_raw = [&](double v) { return top + ph - (v - y0) / (y1 - y0) * ph; };

  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << Hh << "\" viewBox=\"0 0 " << W
    << ' ' << Hh << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">"
    << escape_xml(spec.title) << "</text>\n";
  for (double v : yt) {  // grid lines + y tick labels
    const double y = py_raw(v);
    o << "<line x1=\"" << left << "\" y1=\"" << fmt(y) << "\" x2=\"" << left + pw << "\" y2=\"" << fmt(y)
      << "\" stroke=\"#ddd\"/>\n<text x=\"" << left - 6 << "\" y=\"" << fmt(y + 4) << "\" text-anchor=\"end\">"
      << tick_label(v, log_y) << "</text>\n";
  }
  std::vector<std::pair<double, std::string>> xt;
  if (!spec.x_tick_labels.empty()) {
    const size_t every = std::max<size_t>(1, spec.x_tick_labels.size() / 16);
    for (size_t i = 0; i < spec.x_tick_labels.size(); i += every) xt.push_back({double(i), spec.x_tick_labels[i]});
  } else {
    for (double v : nice_ticks(xmin, xmax, 8)) xt.push_back({v, tick_label(v, false)});
  }
  for (const auto& [v, label] : xt) {
    const double x = px(v);
    o << "<line x1=\"" << fmt(x) << "\" y1=\"" << top + ph << "\" x2=\"" << fmt(x) << "\" y2=\"" << top + ph + 5
      << "\" stroke=\"black\"/>\n<text x=\"" << fmt(x) << "\" y=\"" << top + ph + 19 << "\" text-anchor=\"middle\">"
      << escape_xml(label) << "</text>\n";
  }
  o << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"black\"/>\n";
  o << "<text x=\"" << left + pw / 2 << "\" y=\"" << Hh - 14 << "\" text-anchor=\"middle\">" << escape_xml(spec.x_label)
    << "</text>\n";
  o << "<text transform=\"translate(18," << top + ph / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
    << escape_xml(spec.y_label + (log_y ? " (log scale)" : "")) << "</text>\n";
  for (size_t s = 0; s < series.size(); ++s) {
    const char* color = kColors[s % (sizeof kColors / sizeof *kColors)];
    std::ostringstream pts;
    for (size_t i = 0; i < series[s].x.size(); ++i)
      if (std::isfinite(series[s].y[i])) pts << fmt(px(series[s].x[i])) << ',' << fmt(py(series[s].y[i])) << ' ';
    o << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\" points=\"" << pts.str() << "\"/>\n";
    for (size_t i = 0; i < series[s].x.size(); ++i)
      if (std::isfinite(series[s].y[i]))
        o << "<circle cx=\"" << fmt(px(series[s].x[i])) << "\" cy=\"" << fmt(py(series[s].y[i])) << "\" r=\"3\" fill=\""
          << color << "\"/>\n";
    const double ly = top + 10 + 20 * double(s);
    o << "<line x1=\"" << left + pw + 15 << "\" y1=\"" << ly << "\" x2=\"" << left + pw + 40 << "\" y2=\"" << ly
      << "\" stroke=\"" << color << "\" stroke-width=\"3\"/>\n<text x=\"" << left + pw + 46 << "\" y=\"" << ly + 4
      << "\">" << escape_xml(series[s].name) << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

void write_text_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(path, "cannot create file");
    out << text;
    out.flush();
    if (!out) fail(path, "write failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail(path, "cannot rename temporary file: " + ec.message());
}

}  // namespace lq::eval
