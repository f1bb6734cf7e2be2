// The search space of a sweep: recipe keys and the distribution each is drawn from.
//
//   space:
//     optim.lr:           {loguniform: [1.0e-4, 1.0e-2]}
//     optim.weight_decay: {uniform: [0.0, 0.2]}
//     model.n_layer:      {int: [2, 6], step: 2}
//     train.precision:    {choice: [fp32, bf16]}
//
// A trial's parameters are one value per key, kept as JSON (number or string) in the
// journal and passed to the trial as `--set key=value`.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tessera::tuning {

enum class Distribution { choice, uniform, loguniform, integer };
const char* to_string(Distribution d);  // "choice" | "uniform" | "loguniform" | "int"

struct Param {
  std::string key;                      // a recipe key, e.g. "optim.lr"
  Distribution dist = Distribution::uniform;
  std::vector<nlohmann::json> choices;  // choice: the values as written (numbers or strings)
  double low = 0, high = 0;             // uniform, loguniform, int: bounds, both included
  int64_t step = 1;                     // int: values low, low+step, ... <= high
  bool log_scale() const { return dist == Distribution::loguniform; }
};

using SearchSpace = std::vector<Param>;  // in the order of the sweep file

// One value per parameter of the space, by key (a JSON object).
using Assignment = nlohmann::json;

// The `--set key=value` text of a value: strings as they are, integers in decimal,
// floating-point numbers with enough digits to read back the same double.
std::string override_text(const std::string& key, const nlohmann::json& value);

// The number of values of an int parameter, or of a choice.
int64_t value_count(const Param& p);
// The grid of a space whose parameters are all choice or int: every combination, the
// last parameter varying fastest. Throws tessera::Error naming the first continuous
// parameter (a grid needs finite values).
std::vector<Assignment> grid_points(const SearchSpace& space, const std::string& source);

// A value of p from u in [0, 1): uniform in [low, high], log-uniform, int on its step
// grid, or the choice at floor(u * n).
nlohmann::json value_at(const Param& p, double u);

// Numeric coordinate of a value for modelling (TPE, importance): log for loguniform,
// the value for uniform and int, the choice's index for choice.
double coordinate(const Param& p, const nlohmann::json& value);

}  // namespace tessera::tuning
