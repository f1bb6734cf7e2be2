// A sweep file: what to train, what to vary, what to optimise, and how to run trials.
// Strict like recipes: an unknown key, a wrong type or an out-of-range value is one
// error naming the file, the key and what was expected. docs/sweeps.md has the format.
//
//   recipe: recipes/tiny.yaml
//   set: [train.steps=90, train.eval_every=10]     # fixed overrides for every trial
//   space:
//     optim.lr: {loguniform: [1.0e-4, 3.0e-2]}
//   objective: {metric: val_loss, mode: min}       # the last value in the trial's run log
//   sampler: {kind: tpe, seed: 1}                   # grid | random | tpe
//   scheduler: {kind: asha, min_resource: 10, reduction_factor: 3}   # none | asha
//   max_trials: 8
//   max_concurrent: 2
//   trial: {ntasks: 1, cpus_per_task: 1, time_limit_minutes: 10, retries: 1}
//   backend: slurm                                  # local | slurm
//   slurm: {interface: api}                         # api (libslurm) | cli (sbatch, squeue, scancel)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tuning/search_space.h"

namespace tessera::tuning {

enum class SamplerKind { grid, random, tpe };
enum class SchedulerKind { none, asha };
enum class BackendKind { local, slurm };
enum class SlurmInterface { api, cli };

struct Objective {
  std::string metric = "val_loss";  // a field of the run log's metric or eval events
  bool maximize = false;            // mode: min | max
  bool better(double a, double b) const { return maximize ? a > b : a < b; }
};

struct SamplerSpec {
  SamplerKind kind = SamplerKind::random;
  uint64_t seed = 0;
  int startup_trials = 10;   // tpe: random trials before the model is used
  int ei_candidates = 24;    // tpe: candidates drawn from l(x) per parameter
};

// Asynchronous successive halving with the rule of Optuna's SuccessiveHalvingPruner
// (tuning/asha.h): rung k is reached at min_resource * reduction_factor^(rate + k) steps.
struct SchedulerSpec {
  SchedulerKind kind = SchedulerKind::none;
  int64_t min_resource = 1;           // steps
  int reduction_factor = 3;
  int min_early_stopping_rate = 0;
};

struct TrialSpec {
  int ntasks = 1;                // MPI ranks (the recipe's dp*tp*pp must match)
  int cpus_per_task = 1;         // OpenMP threads per rank
  int time_limit_minutes = 0;    // 0 = the partition's default
  int retries = 0;               // a failed trial is run again (resuming) this many times
  std::vector<std::string> command;  // instead of `tessera train`: a program taking the
                                     // same arguments (tests, synthetic objectives)
};

struct SweepSpec {
  std::string source;              // the sweep file, for messages
  std::string name;                // the file's stem
  std::string dir;                 // the sweep directory (default sweeps/<name>)
  std::string recipe;              // the base recipe
  std::vector<std::string> overrides;  // fixed key=value for every trial
  SearchSpace space;
  Objective objective;
  SamplerSpec sampler;
  SchedulerSpec scheduler;
  int max_trials = 1;
  int max_concurrent = 1;
  TrialSpec trial;
  BackendKind backend = BackendKind::local;
  SlurmInterface slurm_interface = SlurmInterface::api;
  std::string slurm_partition;     // empty = the cluster's default
  double poll_seconds = 2;         // how often trials are looked at
};

// Reads and validates a sweep file. Each parameter key is checked against the base
// recipe (with the fixed overrides) by loading it with the parameter's extreme values,
// so a key the recipe does not have, or a value it would refuse, fails here before
// anything is submitted.
SweepSpec load_sweep(const std::string& path);
SweepSpec parse_sweep(const std::string& yaml_text, const std::string& source);

// The overrides of one trial: the fixed ones, then its parameters, then where its run
// log and checkpoints go (inside trial_dir).
std::vector<std::string> trial_overrides(const SweepSpec& spec, const Assignment& params,
                                         const std::string& trial_dir);

}  // namespace tessera::tuning
