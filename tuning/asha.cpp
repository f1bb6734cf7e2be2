// ASHA's rule (tuning/asha.h says what it is and why it is Optuna's).
#include "tuning/asha.h"

#include <algorithm>
#include <cmath>

namespace tessera::tuning {

int64_t rung_resource(const SchedulerSpec& s, int rung) {
  int64_t r = s.min_resource;
  for (int i = 0; i < s.min_early_stopping_rate + rung; i++) r *= s.reduction_factor;
  return r;
}

bool promotable(double value, std::vector<double> competing, int reduction_factor, bool maximize) {
  if (std::isnan(value)) return false;
  competing.push_back(value);
  int64_t index = (int64_t)competing.size() / reduction_factor - 1;
  if (index == -1) index = 0;
  std::sort(competing.begin(), competing.end());
  if (maximize) return value >= competing[competing.size() - 1 - (size_t)index];
  return value <= competing[(size_t)index];
}

std::optional<RungDecision> next_rung_decision(const SchedulerSpec& s, const Objective& objective,
                                               const TrialRecord& trial, const MetricSeries& series,
                                               const SweepState& state) {
  if (s.kind != SchedulerKind::asha) return std::nullopt;
  if (!trial.rungs.empty() && !trial.rungs.back().promoted) return std::nullopt;
  const int rung = (int)trial.rungs.size();
  const int64_t resource = rung_resource(s, rung);
  const auto at = value_at_or_after(series, resource);
  if (!at) return std::nullopt;
  RungDecision d;
  d.rung = rung;
  d.resource = resource;
  d.step = at->first;
  d.value = at->second;
  // NaN values are not competing values (Optuna does not record them either).
  for (const TrialRecord& other : state.trials)
    if (other.id != trial.id && (int)other.rungs.size() > rung && !std::isnan(other.rungs[(size_t)rung].value))
      d.competing.push_back(other.rungs[(size_t)rung].value);
  d.promoted = promotable(d.value, d.competing, s.reduction_factor, objective.maximize);
  return d;
}

}  // namespace tessera::tuning
