// The Tree-structured Parzen Estimator sampler (tuning/samplers.h lists the samplers).
//
// It follows Optuna's TPESampler with its default settings: independent (one parameter
// at a time), prior weight 1, magic clip on, endpoints off, gamma(n) = min(ceil(0.1 n), 25),
// Optuna's default weights, spec.sampler.ei_candidates candidates. tpe.cpp describes the
// algorithm and the few places it differs from Optuna.
//
// What it learns from: completed observations (with a finite objective) and pruned ones.
// Pruned observations always go to the "worse" group g(x): Optuna ranks pruned trials
// behind every completed one, and an Observation carries no intermediate value to rank
// pruned trials among themselves. Failed and running observations are ignored. Before
// spec.sampler.startup_trials such observations exist, trial i's parameters are the
// random sampler's (uniform_draw(seed, i, key) through value_at).
//
// Deterministic: every random number is uniform_draw(seed, trial id, parameter key,
// index), so the same seed and history give the same parameters on any machine.
#pragma once
#include <memory>

#include "tuning/samplers.h"
#include "tuning/sweep_spec.h"

namespace tessera::tuning {

std::unique_ptr<Sampler> make_tpe_sampler(const SweepSpec& spec);

}  // namespace tessera::tuning
