// report.svg (tuning/report_svg.h), drawn by hand: no plotting library on a cluster's
// login node is needed to read a sweep's result, and the file opens in any browser.
#include "tuning/report_svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <vector>

namespace tessera::tuning {

namespace {

// Ten distinguishable colours (matplotlib's tab10); trial i gets colour i mod 10.
const char* const kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
const char* colour(int id) { return kPalette[id % 10]; }

std::string esc(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // XML 1.0 forbids most control characters even escaped: drop them.
        if ((unsigned char)c >= 0x20 || c == '\t' || c == '\n') out += c;
    }
  }
  return out;
}

std::string num(double v, int digits = 4) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}
std::string px(double v) { return num(v, 6); }

// One axis: data range [lo, hi] (original values; positive for log) onto pixels [p0, p1].
struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  double p0 = 0, p1 = 1;
  double t(double v) const { return log ? std::log10(v) : v; }
  double map(double v) const { return p0 + (t(v) - t(lo)) / (t(hi) - t(lo)) * (p1 - p0); }
};

// Widens a range that is empty (one value) so it can be drawn, and pads it by 5%.
void pad_range(double& lo, double& hi, bool log) {
  if (log) {
    if (lo == hi) lo /= 1.5, hi *= 1.5;
    const double f = std::pow(hi / lo, 0.04);
    lo /= f, hi *= f;
    return;
  }
  if (lo == hi) {
    const double d = lo == 0 ? 1 : std::fabs(lo) * 0.05;
    lo -= d, hi += d;
  } else {
    const double d = (hi - lo) * 0.05;
    lo -= d, hi += d;
  }
}

std::vector<double> linear_ticks(double lo, double hi) {
  const double raw = (hi - lo) / 5;
  const double mag = std::pow(10, std::floor(std::log10(raw)));
  const double n = raw / mag;
  const double step = (n < 1.5 ? 1 : n < 3 ? 2 : n < 7 ? 5 : 10) * mag;
  std::vector<double> ticks;
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step)
    ticks.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  return ticks;
}

std::vector<double> ticks_of(const Axis& a) {
  if (!a.log) return linear_ticks(a.lo, a.hi);
  std::vector<double> all, decades;
  for (int k = (int)std::floor(std::log10(a.lo)); k <= (int)std::ceil(std::log10(a.hi)); k++)
    for (double m : {1.0, 2.0, 5.0}) {
      const double v = m * std::pow(10.0, k);
      if (v < a.lo * (1 - 1e-9) || v > a.hi * (1 + 1e-9)) continue;
      all.push_back(v);
      if (m == 1.0) decades.push_back(v);
    }
  if (all.size() < 2) return linear_ticks(a.lo, a.hi);  // less than a factor of 2: plain ticks
  return all.size() > 8 && decades.size() >= 2 ? decades : all;
}

// The frame, grid, ticks and labels of one panel's plot area.
void draw_axes(std::ostringstream& s, const Axis& x, const Axis& y, const std::string& title,
               const std::string& x_label, const std::string& y_label, bool x_ticks = true) {
  s << "<rect x='" << px(x.p0) << "' y='" << px(y.p1) << "' width='" << px(x.p1 - x.p0) << "' height='"
    << px(y.p0 - y.p1) << "' fill='none' stroke='#444'/>\n";
  if (x_ticks)
    for (double v : ticks_of(x)) {
      const double X = x.map(v);
      s << "<line x1='" << px(X) << "' y1='" << px(y.p1) << "' x2='" << px(X) << "' y2='" << px(y.p0)
        << "' stroke='#e4e4e4'/>\n<line x1='" << px(X) << "' y1='" << px(y.p0) << "' x2='" << px(X)
        << "' y2='" << px(y.p0 + 5) << "' stroke='#444'/>\n<text x='" << px(X) << "' y='" << px(y.p0 + 18)
        << "' text-anchor='middle'>" << esc(num(v, 3)) << "</text>\n";
    }
  for (double v : ticks_of(y)) {
    const double Y = y.map(v);
    s << "<line x1='" << px(x.p0) << "' y1='" << px(Y) << "' x2='" << px(x.p1) << "' y2='" << px(Y)
      << "' stroke='#e4e4e4'/>\n<line x1='" << px(x.p0 - 5) << "' y1='" << px(Y) << "' x2='" << px(x.p0)
      << "' y2='" << px(Y) << "' stroke='#444'/>\n<text x='" << px(x.p0 - 8) << "' y='" << px(Y + 4)
      << "' text-anchor='end'>" << esc(num(v, 4)) << "</text>\n";
  }
  s << "<text x='" << px((x.p0 + x.p1) / 2) << "' y='" << px(y.p1 - 12)
    << "' text-anchor='middle' font-weight='bold' font-size='13'>" << esc(title) << "</text>\n";
  s << "<text x='" << px((x.p0 + x.p1) / 2) << "' y='" << px(y.p0 + 36) << "' text-anchor='middle'>"
    << esc(x_label) << "</text>\n";
  const double ly = (y.p0 + y.p1) / 2, lx = x.p0 - 52;
  s << "<text x='" << px(lx) << "' y='" << px(ly) << "' text-anchor='middle' transform='rotate(-90 " << px(lx)
    << " " << px(ly) << ")'>" << esc(y_label) << "</text>\n";
}

void message(std::ostringstream& s, double x, double y, const std::string& text) {
  s << "<text x='" << px(x) << "' y='" << px(y) << "' text-anchor='middle' fill='#666'>" << esc(text)
    << "</text>\n";
}

const char* dash_of(TrialState st) {
  if (st == TrialState::pruned || st == TrialState::stopping) return "6,4";
  if (st == TrialState::failed) return "2,3";
  return nullptr;
}

// Panel 1: the "loss" series of every trial. A pruned trial's line ends at the step it
// was stopped at (steps logged after the decision, before the job ended, are left out).
void loss_panel(std::ostringstream& s, const SweepState& state, const std::map<int, TrialMetrics>& metrics,
                const TrialRecord* best, double top, double width, double height) {
  struct Line {
    const TrialRecord* t;
    std::vector<std::pair<double, double>> pts;
  };
  std::vector<Line> lines;
  double x_hi = 0, y_lo = INFINITY, y_hi = -INFINITY;
  for (const TrialRecord& t : state.trials) {
    auto it = metrics.find(t.id);
    const MetricSeries* series = it == metrics.end() ? nullptr : it->second.find("loss");
    if (!series) continue;
    Line line{&t, {}};
    const bool cut = (t.state == TrialState::pruned) && t.steps > 0;
    for (const auto& [step, v] : *series) {
      if (cut && step > t.steps) break;
      if (!std::isfinite(v)) continue;
      line.pts.emplace_back((double)step, v);
      x_hi = std::max(x_hi, (double)step), y_lo = std::min(y_lo, v), y_hi = std::max(y_hi, v);
    }
    if (!line.pts.empty()) lines.push_back(std::move(line));
  }
  const double legend_w = 170;
  Axis x{0, std::max(1.0, x_hi), false, 80, width - legend_w - 20};
  if (lines.empty()) {
    Axis y{0, 1, false, top + height - 50, top + 40};
    draw_axes(s, x, y, "Training loss by step", "step", "loss", false);
    message(s, (x.p0 + x.p1) / 2, (y.p0 + y.p1) / 2, "no trial has logged a loss yet");
    return;
  }
  pad_range(y_lo, y_hi, false);
  Axis y{y_lo, y_hi, false, top + height - 50, top + 40};
  draw_axes(s, x, y, "Training loss by step", "step", "loss");
  // The best trial last, so it is drawn on top of the others.
  std::stable_sort(lines.begin(), lines.end(), [&](const Line& a, const Line& b) { return a.t != best && b.t == best; });
  for (const Line& line : lines) {
    const bool is_best = line.t == best;
    s << "<polyline fill='none' stroke='" << colour(line.t->id) << "' stroke-width='" << (is_best ? 3.5 : 1.5)
      << "' stroke-opacity='" << (is_best ? "1" : "0.75") << "'";
    if (const char* d = dash_of(line.t->state)) s << " stroke-dasharray='" << d << "'";
    s << " points='";
    for (const auto& [sx, sy] : line.pts) s << px(x.map(sx)) << "," << px(y.map(sy)) << " ";
    s << "'><title>trial " << line.t->id << " (" << to_string(line.t->state) << ")</title></polyline>\n";
    if (line.t->state == TrialState::pruned) {  // a cross where it was stopped
      const double ex = x.map(line.pts.back().first), ey = y.map(line.pts.back().second);
      s << "<path d='M" << px(ex - 4) << "," << px(ey - 4) << " l8,8 m0,-8 l-8,8' stroke='" << colour(line.t->id)
        << "' stroke-width='1.5'/>\n";
    }
  }
  // Legend: the line styles, then one swatch per trial (the first 14).
  double lx = width - legend_w + 5, ly = top + 50;
  auto entry = [&](const char* stroke, double w, const char* dash, const std::string& label) {
    s << "<line x1='" << px(lx) << "' y1='" << px(ly - 4) << "' x2='" << px(lx + 28) << "' y2='" << px(ly - 4)
      << "' stroke='" << stroke << "' stroke-width='" << w << "'";
    if (dash) s << " stroke-dasharray='" << dash << "'";
    s << "/>\n<text x='" << px(lx + 34) << "' y='" << px(ly) << "'>" << esc(label) << "</text>\n";
    ly += 17;
  };
  if (best) entry(colour(best->id), 3.5, nullptr, "best: trial " + std::to_string(best->id));
  entry("#444", 1.5, nullptr, "completed / running");
  entry("#444", 1.5, "6,4", "pruned (x: stopped)");
  entry("#444", 1.5, "2,3", "failed");
  ly += 6;
  int shown = 0;
  for (const Line& line : lines) {
    if (shown++ == 14) {
      s << "<text x='" << px(lx) << "' y='" << px(ly) << "'>... " << lines.size() - 14 << " more</text>\n";
      break;
    }
    entry(colour(line.t->id), 2.5, dash_of(line.t->state),
          "trial " + std::to_string(line.t->id) + " (" + to_string(line.t->state) + ")");
  }
}

// One parameter's panel: the objective of each completed trial against its value (filled),
// and of each pruned trial when it was stopped (hollow: an earlier, worse-trained value,
// but where the sampler went and what ASHA cut is what a person wants to see).
void param_panel(std::ostringstream& s, const SweepSpec& spec, const Param& p, const SweepState& state,
                 const TrialRecord* best, double left, double top, double width, double height) {
  struct Point {
    const TrialRecord* t;
    double x, y;
  };
  std::vector<Point> pts;
  double y_lo = INFINITY, y_hi = -INFINITY;
  for (const TrialRecord& t : state.trials) {
    const bool shown = t.state == TrialState::completed || t.state == TrialState::pruned;
    if (!shown || !t.objective || !std::isfinite(*t.objective)) continue;
    if (!t.params.contains(p.key)) continue;
    double xv;
    try {
      xv = p.dist == Distribution::choice ? coordinate(p, t.params[p.key]) : t.params[p.key].get<double>();
    } catch (const std::exception&) {
      continue;  // not a value of the current space
    }
    if (p.log_scale() && !(xv > 0)) continue;
    pts.push_back({&t, xv, *t.objective});
    y_lo = std::min(y_lo, *t.objective), y_hi = std::max(y_hi, *t.objective);
  }
  const bool choice = p.dist == Distribution::choice;
  Axis x{p.low, p.high, p.log_scale(), left + 80, left + width - 20};
  if (choice) x = Axis{-0.5, (double)p.choices.size() - 0.5, false, left + 80, left + width - 20};
  else pad_range(x.lo, x.hi, x.log);  // points at the bounds off the frame
  const std::string title = p.key + " (" + to_string(p.dist) + ")";
  if (pts.empty()) {
    Axis y{0, 1, false, top + height - 50, top + 40};
    draw_axes(s, x, y, title, p.key, spec.objective.metric, !choice);
    message(s, (x.p0 + x.p1) / 2, (y.p0 + y.p1) / 2, "no finished trial yet");
  } else {
    pad_range(y_lo, y_hi, false);
    Axis y{y_lo, y_hi, false, top + height - 50, top + 40};
    draw_axes(s, x, y, title, p.key + (p.log_scale() ? " (log scale)" : "") + "   (hollow: pruned, value when stopped)",
              spec.objective.metric, !choice);
    for (const Point& pt : pts) {
      const bool is_best = pt.t == best;
      const bool pruned = pt.t->state == TrialState::pruned;
      s << "<circle cx='" << px(x.map(pt.x)) << "' cy='" << px(y.map(pt.y)) << "' r='" << (is_best ? 6 : 4) << "'";
      if (pruned) s << " fill='none' stroke='" << colour(pt.t->id) << "' stroke-width='1.5'";
      else s << " fill='" << colour(pt.t->id) << "' fill-opacity='0.8'";
      s << (is_best ? " stroke='#000' stroke-width='2'" : "") << "><title>trial " << pt.t->id
        << (pruned ? " (pruned, value when stopped): " : ": ") << esc(num(pt.y, 5)) << "</title></circle>\n";
    }
  }
  if (choice) {  // one labelled column per choice
    const double base = top + height - 50;
    for (size_t i = 0; i < p.choices.size(); i++) {
      const std::string label = p.choices[i].is_string() ? p.choices[i].get<std::string>() : p.choices[i].dump();
      s << "<text x='" << px(x.map((double)i)) << "' y='" << px(base + 18) << "' text-anchor='middle'>"
        << esc(label) << "</text>\n";
    }
  }
}

}  // namespace

std::string report_svg(const SweepSpec& spec, const SweepState& state,
                       const std::map<int, TrialMetrics>& metrics) {
  const double width = 900, loss_h = 380, panel_w = 450, panel_h = 300;
  const size_t rows = (spec.space.size() + 1) / 2;
  const double height = loss_h + (double)rows * panel_h + 10;
  const TrialRecord* best = state.best(spec.objective.maximize);
  std::ostringstream s;
  s << "<?xml version='1.0' encoding='UTF-8'?>\n"
    << "<svg xmlns='http://www.w3.org/2000/svg' width='" << px(width) << "' height='" << px(height)
    << "' viewBox='0 0 " << px(width) << " " << px(height)
    << "' font-family='sans-serif' font-size='11'>\n"
    << "<title>" << esc("Sweep " + spec.name) << "</title>\n"
    << "<rect width='100%' height='100%' fill='#fff'/>\n";
  loss_panel(s, state, metrics, best, 0, width, loss_h);
  for (size_t i = 0; i < spec.space.size(); i++)
    param_panel(s, spec, spec.space[i], state, best, (double)(i % 2) * panel_w, loss_h + (double)(i / 2) * panel_h,
                panel_w, panel_h);
  s << "</svg>\n";
  return s.str();
}

}  // namespace tessera::tuning
