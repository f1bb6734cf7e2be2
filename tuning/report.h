// What a sweep did, for a person: a status table for the terminal, an ordering of the
// parameters by how strongly they go with the objective, and a report (report.md with
// report.svg) naming the best trial, its run log and checkpoints, and the compute spent.
// Everything here reads the journal's state and the trials' run logs; nothing is written
// anywhere but the report's own two files.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tuning/journal.h"
#include "tuning/sweep_spec.h"
#include "tuning/trial_metrics.h"

namespace tessera::tuning {

// A fixed-width table, one row per trial: id, parameters (short key=value), state, job
// id, steps (the last logged step), objective (or -), and why it stopped (pruned at a
// rung: its value against the rung's cutoff; failed: exit code and reason).
std::string status_table(const SweepSpec& spec, const SweepState& state,
                         const std::map<int, TrialMetrics>& metrics);

// How strongly each parameter goes with the objective over the trials that completed
// with one: numeric parameters by the squared Spearman rank correlation between the
// parameter's coordinate (log for loguniform) and the objective, choices by eta squared
// (between-choice variance over total variance). Sorted by score, highest first. It is an
// ordering for a person to look at, not a causal measure. Fewer than 3 such trials give
// an empty list, and `why_empty` (when given) says why.
struct ParamImportance {
  std::string key;
  double score = 0;     // in [0, 1]
  std::string method;   // "spearman rho^2" | "eta^2"
};
std::vector<ParamImportance> parameter_importance(const SweepSpec& spec, const SweepState& state,
                                                  std::string* why_empty = nullptr);

// Steps the sweep ran against the steps it would have run had every trial gone to its
// full train.steps. A trial's full length is its own `train.steps` parameter if the space
// has one, else the last `train.steps=` of the fixed overrides, else `recipe_steps` (the
// base recipe's train.steps, which only the caller can read). steps_full is 0 when none
// of these is known. steps_run counts each trial's last logged step.
struct ComputeSpent {
  int64_t steps_run = 0;
  int64_t steps_full = 0;
};
ComputeSpent compute_spent(const SweepSpec& spec, const SweepState& state,
                           const std::map<int, TrialMetrics>& metrics, int64_t recipe_steps = 0);

// Writes `<out_dir>/report.svg` (loss curves of every trial, then the objective against
// each parameter) and `<out_dir>/report.md` (best trial, its run log and checkpoint
// directories `<sweep dir>/trials/<id>/runs` and `/ckpt`, parameter importance, a table
// of the trials, compute spent, the SVG). Each file is written under a temporary name
// and renamed, so a reader never sees half a report. Returns the two paths; throws
// tessera::Error naming the file when it cannot write.
struct ReportFiles {
  std::string markdown, svg;
};
ReportFiles write_report(const SweepSpec& spec, const SweepState& state,
                         const std::map<int, TrialMetrics>& metrics, const std::string& out_dir,
                         int64_t recipe_steps = 0);

}  // namespace tessera::tuning
