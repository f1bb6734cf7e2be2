// Values of a search space: drawing, grids, and the `--set` text of a value.
#include "tuning/search_space.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "base/error.h"

namespace tessera::tuning {

const char* to_string(Distribution d) {
  switch (d) {
    case Distribution::choice: return "choice";
    case Distribution::uniform: return "uniform";
    case Distribution::loguniform: return "loguniform";
    case Distribution::integer: return "int";
  }
  return "?";
}

std::string override_text(const std::string& key, const nlohmann::json& value) {
  std::string text;
  if (value.is_string()) {
    text = value.get<std::string>();
  } else if (value.is_number_integer() || value.is_boolean()) {
    text = value.dump();
  } else if (value.is_number_float()) {
    // %.17g reads back as the same double; YAML needs a dot or exponent to see a float.
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", value.get<double>());
    text = buf;
  } else {
    throw Error("sweep parameter " + key + ": value " + value.dump() +
                " is not a number or a string");
  }
  return key + "=" + text;
}

int64_t value_count(const Param& p) {
  if (p.dist == Distribution::choice) return (int64_t)p.choices.size();
  if (p.dist == Distribution::integer) return ((int64_t)p.high - (int64_t)p.low) / p.step + 1;
  return -1;
}

// The i-th value of a choice or int parameter.
static nlohmann::json nth_value(const Param& p, int64_t i) {
  if (p.dist == Distribution::choice) return p.choices[(size_t)i];
  return (int64_t)p.low + i * p.step;
}

std::vector<Assignment> grid_points(const SearchSpace& space, const std::string& source) {
  int64_t total = 1;
  for (const Param& p : space) {
    const int64_t n = value_count(p);
    check(n > 0, source + ": space." + p.key + " is " + to_string(p.dist) +
                     ": the grid sampler needs finite values (choice or int)");
    total *= n;
    check(total <= 1000000, source + ": the grid has more than a million points");
  }
  std::vector<Assignment> points;
  points.reserve((size_t)total);
  for (int64_t index = 0; index < total; index++) {
    Assignment point = nlohmann::json::object();
    int64_t rest = index;
    // The last parameter varies fastest.
    for (size_t k = space.size(); k-- > 0;) {
      const int64_t n = value_count(space[k]);
      point[space[k].key] = nth_value(space[k], rest % n);
      rest /= n;
    }
    points.push_back(std::move(point));
  }
  return points;
}

nlohmann::json value_at(const Param& p, double u) {
  switch (p.dist) {
    case Distribution::choice:
    case Distribution::integer: {
      const int64_t n = value_count(p);
      const int64_t i = std::min<int64_t>(n - 1, (int64_t)std::floor(u * (double)n));
      return nth_value(p, i);
    }
    // exp(log(x)) may round to just outside the bounds: clamp.
    case Distribution::uniform: return std::clamp(p.low + u * (p.high - p.low), p.low, p.high);
    case Distribution::loguniform:
      return std::clamp(std::exp(std::log(p.low) + u * (std::log(p.high) - std::log(p.low))), p.low, p.high);
  }
  return nullptr;
}

double coordinate(const Param& p, const nlohmann::json& value) {
  if (p.dist == Distribution::choice) {
    for (size_t i = 0; i < p.choices.size(); i++)
      if (p.choices[i] == value) return (double)i;
    throw Error("sweep parameter " + p.key + ": " + value.dump() + " is not one of its choices");
  }
  const double x = value.get<double>();
  return p.log_scale() ? std::log(x) : x;
}

}  // namespace tessera::tuning
