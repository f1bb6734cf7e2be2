// Samplers: the parameters of the next trial, from the sweep's seed, the trial's id and
// the trials before it. Every sampler is a pure function of those, so a restarted sweep
// that replays its journal would choose the same (it never has to: parameters are
// journaled when a trial is created).
//
//   grid    trial i gets grid point i (tuning/search_space.h: grid_points); the sweep
//           stops when the grid is covered.
//   random  each parameter from its distribution, with counter-based random numbers
//           keyed by (seed, trial id, parameter): trial i's draw depends on nothing else.
//   tpe     the Tree-structured Parzen Estimator (Bergstra et al. 2011) as Optuna's
//           TPESampler does it with its defaults, one parameter at a time: the first
//           startup_trials trials are random; then the finished trials are split into
//           the best gamma(n) = min(ceil(0.1 n), 25) and the rest, a Parzen estimator
//           (truncated Gaussians with a prior component) is fitted to each, and of
//           ei_candidates draws from the good one, the one with the highest l(x)/g(x) wins.
#pragma once
#include <memory>
#include <optional>
#include <vector>

#include "tuning/search_space.h"
#include "tuning/sweep_spec.h"

namespace tessera::tuning {

// A trial the sampler may learn from: its parameters and, when it finished with one,
// its objective (pruned trials count as worse than every completed one).
struct Observation {
  Assignment params;
  std::optional<double> objective;  // nullopt: pruned, failed or still running
  bool pruned = false;
};

class Sampler {
 public:
  virtual ~Sampler() = default;
  // Parameters of trial `trial_id`; nullopt when the sampler has nothing left (a grid
  // that is covered).
  virtual std::optional<Assignment> sample(int trial_id, const std::vector<Observation>& history) = 0;
  // How many trials the sampler can give at most (grid size), or -1 for no limit.
  virtual int64_t capacity() const { return -1; }
};

std::unique_ptr<Sampler> make_sampler(const SweepSpec& spec);

// The random sampler's draw, also TPE's start-up draw: u in [0, 1) for (seed, trial, key).
double uniform_draw(uint64_t seed, int trial_id, const std::string& key, uint64_t index = 0);

}  // namespace tessera::tuning
