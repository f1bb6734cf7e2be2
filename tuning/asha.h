// Early stopping: asynchronous successive halving (ASHA, Li et al. 2020) with the rule of
// Optuna's SuccessiveHalvingPruner, so that a user who knows Optuna gets the decisions
// Optuna would take.
//
// Rung k is reached at r_k = min_resource * reduction_factor^(min_early_stopping_rate + k)
// steps. When a trial's run log first shows the objective metric at a step >= r_k, its
// value v there is compared with the values every other trial recorded at rung k before
// it (the "competing" values, pruned trials included, as Optuna keeps them):
//   n = |competing| + 1 (v included), i = floor(n / reduction_factor) - 1, or 0 when that
//   is -1 (fewer than reduction_factor trials so far: only the best goes on);
//   promoted when v is at least as good as the (i+1)-th best of competing + {v}.
// A promoted trial goes on to rung k+1; one that is not is stopped (its job cancelled;
// its run log and last checkpoint stay). A NaN value is never promoted. Trials are
// decided one at a time in the order their rungs are seen, and each decision is journaled
// with its inputs (tuning/journal.h), so it can be recomputed from the journal alone.
#pragma once
#include <cstdint>
#include <vector>

#include "tuning/journal.h"
#include "tuning/sweep_spec.h"
#include "tuning/trial_metrics.h"

namespace tessera::tuning {

// Steps at which rung `rung` is reached.
int64_t rung_resource(const SchedulerSpec& s, int rung);

// Optuna's _is_trial_promotable_to_next_rung: `competing` excludes `value`.
bool promotable(double value, std::vector<double> competing, int reduction_factor, bool maximize);

// The next decision for `trial` whose objective series is `series`, given what the
// other trials recorded (state), or nothing when the trial has not reached its next rung
// (or was already stopped). Call again after journaling a promotion: a run log may
// already show the rung after it.
std::optional<RungDecision> next_rung_decision(const SchedulerSpec& s, const Objective& objective,
                                               const TrialRecord& trial, const MetricSeries& series,
                                               const SweepState& state);

}  // namespace tessera::tuning
