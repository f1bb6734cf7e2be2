// The picture of a sweep report (tuning/report.h): report.svg as text.
#pragma once
#include <map>
#include <string>

#include "tuning/journal.h"
#include "tuning/sweep_spec.h"
#include "tuning/trial_metrics.h"

namespace tessera::tuning {

// A hand-written SVG: the "loss" series of every trial by step (the best trial drawn
// thick, pruned trials dashed and ending where they stopped, failed ones dotted, a
// legend), then one panel per parameter with the objective of every completed trial
// against the parameter's value (log axis for loguniform, one column per choice), the
// best trial ringed. All text is escaped; the result is well-formed XML.
std::string report_svg(const SweepSpec& spec, const SweepState& state,
                       const std::map<int, TrialMetrics>& metrics);

}  // namespace tessera::tuning
