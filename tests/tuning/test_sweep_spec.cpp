// Sweep files: what they hold, and one clear error for each kind of bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "base/error.h"
#include "tuning/search_space.h"
#include "tuning/sweep_spec.h"

namespace tessera::tuning {
namespace {

const std::string kTiny = std::string(TESSERA_SOURCE_DIR) + "/recipes/tiny.yaml";

std::string write_sweep(const std::string& name, const std::string& text) {
  const std::string path = testing::TempDir() + name;
  std::ofstream(path) << text;
  return path;
}

// The message of the Error that loading `text` throws ("" when it loads).
std::string load_error(const std::string& text) {
  try {
    load_sweep(write_sweep("bad_sweep.yaml", text));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(SweepSpec, ReadsEverySection) {
  const SweepSpec s = load_sweep(write_sweep("full.yaml",
      "recipe: " + kTiny + "\n"
      "set: [train.steps=30, train.eval_every=10, optim.min_lr=0]\n"
      "space:\n"
      "  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
      "  optim.weight_decay: {uniform: [0.0, 0.2]}\n"
      "  model.n_layer: {int: [1, 5], step: 2}\n"
      "  train.precision: {choice: [fp32, bf16]}\n"
      "objective: {metric: val_loss, mode: min}\n"
      "sampler: {kind: tpe, seed: 7, startup_trials: 4}\n"
      "scheduler: {kind: asha, min_resource: 5, reduction_factor: 2}\n"
      "max_trials: 9\nmax_concurrent: 3\n"
      "trial: {ntasks: 2, cpus_per_task: 1, time_limit_minutes: 5, retries: 1}\n"
      "backend: slurm\nslurm: {interface: cli}\n"));
  EXPECT_EQ(s.name, "full");
  EXPECT_EQ(s.dir, "sweeps/full");
  ASSERT_EQ(s.space.size(), 4u);
  EXPECT_EQ(s.space[0].key, "optim.lr");
  EXPECT_EQ(s.space[0].dist, Distribution::loguniform);
  EXPECT_EQ(s.space[2].dist, Distribution::integer);
  EXPECT_EQ(s.space[2].step, 2);
  EXPECT_EQ(value_count(s.space[2]), 3);  // 1, 3, 5
  EXPECT_EQ(s.space[3].choices.size(), 2u);
  EXPECT_EQ(s.sampler.kind, SamplerKind::tpe);
  EXPECT_EQ(s.sampler.seed, 7u);
  EXPECT_EQ(s.scheduler.kind, SchedulerKind::asha);
  EXPECT_EQ(s.scheduler.reduction_factor, 2);
  EXPECT_EQ(s.max_concurrent, 3);
  EXPECT_EQ(s.trial.ntasks, 2);
  EXPECT_EQ(s.trial.retries, 1);
  EXPECT_EQ(s.backend, BackendKind::slurm);
  EXPECT_EQ(s.slurm_interface, SlurmInterface::cli);
}

TEST(SweepSpec, GridIsEveryCombinationOnceAndCapsMaxTrials) {
  const SweepSpec s = parse_sweep(
      "recipe: r.yaml\nspace:\n  a.x: {choice: [p, q]}\n  a.y: {int: [0, 4], step: 2}\n"
      "sampler: {kind: grid}\nmax_trials: 100\n", "grid.yaml");
  EXPECT_EQ(s.max_trials, 6);
  const auto points = grid_points(s.space, s.source);
  ASSERT_EQ(points.size(), 6u);
  EXPECT_EQ(points[0], (nlohmann::json{{"a.x", "p"}, {"a.y", 0}}));
  EXPECT_EQ(points[1], (nlohmann::json{{"a.x", "p"}, {"a.y", 2}}));
  EXPECT_EQ(points[5], (nlohmann::json{{"a.x", "q"}, {"a.y", 4}}));
  for (size_t i = 0; i < points.size(); i++)
    for (size_t j = i + 1; j < points.size(); j++) EXPECT_NE(points[i], points[j]);
}

TEST(SweepSpec, OverridesGiveEveryValueItsTextAndTheTrialItsDirectories) {
  const SweepSpec s = parse_sweep(
      "recipe: r.yaml\nset: [train.steps=20]\nspace:\n  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
      "  train.precision: {choice: [fp32, bf16]}\n", "s.yaml");
  const auto o = trial_overrides(s, {{"optim.lr", 0.1 + 0.2}, {"train.precision", "bf16"}}, "/t/3");
  const std::vector<std::string> expected = {"checkpoint.resume=auto", "train.steps=20",
      "optim.lr=0.30000000000000004", "train.precision=bf16", "log.dir=/t/3/runs", "checkpoint.dir=/t/3/ckpt"};
  EXPECT_EQ(o, expected);
}

TEST(SweepSpec, BadInputIsOneErrorNamingTheKey) {
  const std::string head = "recipe: " + kTiny + "\n";
  EXPECT_NE(load_error(head + "space: {}\n").find("space: expected a mapping of recipe keys"), std::string::npos);
  EXPECT_NE(load_error(head).find("space"), std::string::npos);
  // A key the recipe does not have: the recipe reader's own message, with the sweep file.
  const std::string unknown = load_error(head + "space:\n  optim.learning_rate: {uniform: [0.1, 0.2]}\n");
  EXPECT_NE(unknown.find("space.optim.learning_rate"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("unknown key"), std::string::npos) << unknown;
  // A value the recipe refuses.
  const std::string refused = load_error(head + "space:\n  model.n_layer: {int: [0, 2]}\n");
  EXPECT_NE(refused.find("model.n_layer"), std::string::npos) << refused;
  const std::string dist = load_error(head + "space:\n  optim.lr: {normal: [0.1, 0.2]}\n");
  EXPECT_NE(dist.find("unknown key 'space.optim.lr.normal'"), std::string::npos) << dist;
  EXPECT_NE(load_error(head + "space:\n  optim.lr: {loguniform: [0, 0.2]}\n").find("bounds must be > 0"), std::string::npos);
  EXPECT_NE(load_error(head + "space:\n  optim.lr: {uniform: [0.3, 0.2]}\n").find("low must not exceed high"), std::string::npos);
  EXPECT_NE(load_error(head + "space:\n  optim.lr: {choice: []}\n").find("the list is empty"), std::string::npos);
  EXPECT_NE(load_error(head + "space:\n  optim.lr: {uniform: [0.1, 0.2]}\nsampler: {kind: bayes}\n")
                .find("sampler.kind: expected grid | random | tpe, got 'bayes'"), std::string::npos);
  EXPECT_NE(load_error(head + "space:\n  optim.lr: {uniform: [0.1, 0.2]}\nsampler: {kind: grid}\n")
                .find("the grid sampler needs finite values"), std::string::npos);
  EXPECT_NE(load_error(head + "space:\n  optim.lr: {uniform: [0.1, 0.2]}\nmax_trial: 3\n")
                .find("unknown key 'max_trial'"), std::string::npos);
  EXPECT_NE(load_error("space:\n  optim.lr: {uniform: [0.1, 0.2]}\n").find("missing key 'recipe'"), std::string::npos);
  EXPECT_NE(load_error(head + "space:\n  optim.lr: {uniform: [0.1, 0.2]}\nmax_concurrent: 0\n")
                .find("max_concurrent: expected an integer >= 1"), std::string::npos);
  try {
    load_sweep(testing::TempDir() + "no_such_sweep.yaml");
    ADD_FAILURE() << "a missing file loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no_such_sweep.yaml: cannot read"), std::string::npos);
  }
}

TEST(SearchSpace, ValuesStayInsideTheirDistribution) {
  Param lr{"optim.lr", Distribution::loguniform, {}, 1e-4, 1e-2, 1};
  Param n{"model.n_layer", Distribution::integer, {}, 2, 8, 3};
  Param c{"train.precision", Distribution::choice, {"fp32", "bf16"}, 0, 0, 1};
  for (double u : {0.0, 0.25, 0.5, 0.999999}) {
    const double x = value_at(lr, u).get<double>();
    EXPECT_GE(x, 1e-4 * (1 - 1e-12));
    EXPECT_LE(x, 1e-2);
    const int64_t k = value_at(n, u).get<int64_t>();
    EXPECT_TRUE(k == 2 || k == 5 || k == 8) << k;
  }
  EXPECT_NEAR(value_at(lr, 0.5).get<double>(), 1e-3, 1e-15);  // the geometric middle
  EXPECT_EQ(value_at(c, 0.7), "bf16");
  EXPECT_DOUBLE_EQ(coordinate(lr, 1e-3), std::log(1e-3));
  EXPECT_DOUBLE_EQ(coordinate(c, "bf16"), 1.0);
}

}  // namespace
}  // namespace tessera::tuning
