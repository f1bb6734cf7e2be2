// The TPE sampler (tuning/tpe.h): deterministic, inside the space, and better than random
// search on small synthetic objectives.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <set>

#include "tuning/samplers.h"
#include "tuning/tpe.h"

namespace tessera::tuning {
namespace {

Param loguniform(const std::string& key, double low, double high) {
  Param p;
  p.key = key, p.dist = Distribution::loguniform, p.low = low, p.high = high;
  return p;
}
Param uniform(const std::string& key, double low, double high) {
  Param p;
  p.key = key, p.dist = Distribution::uniform, p.low = low, p.high = high;
  return p;
}
Param integer(const std::string& key, int64_t low, int64_t high, int64_t step) {
  Param p;
  p.key = key, p.dist = Distribution::integer, p.low = (double)low, p.high = (double)high, p.step = step;
  return p;
}
Param choice(const std::string& key, std::vector<nlohmann::json> choices) {
  Param p;
  p.key = key, p.dist = Distribution::choice, p.choices = std::move(choices);
  return p;
}

SweepSpec spec_of(SearchSpace space, SamplerKind kind, uint64_t seed, int startup = 10) {
  SweepSpec spec;
  spec.source = "test.yaml";
  spec.space = std::move(space);
  spec.sampler.kind = kind;
  spec.sampler.seed = seed;
  spec.sampler.startup_trials = startup;
  return spec;
}

using Objective = std::function<double(const Assignment&)>;

// Runs a sequential sweep of n trials and returns the history.
std::vector<Observation> run(Sampler& sampler, int n, const Objective& f) {
  std::vector<Observation> history;
  for (int i = 0; i < n; i++) {
    const auto a = sampler.sample(i, history);
    EXPECT_TRUE(a.has_value());
    history.push_back({*a, f(*a), false});
  }
  return history;
}

double best_of(const std::vector<Observation>& h) {
  double best = INFINITY;
  for (const auto& o : h) best = std::min(best, *o.objective);
  return best;
}

const SearchSpace kLrWd = {loguniform("optim.lr", 1e-5, 1e-1), uniform("optim.weight_decay", 0.0, 0.2)};
double lr_wd(const Assignment& a) {
  return std::pow(std::log10(a["optim.lr"].get<double>()) + 2.5, 2) +
         std::pow(a["optim.weight_decay"].get<double>() - 0.05, 2);
}

const SearchSpace kMixed = {loguniform("optim.lr", 1e-5, 1e-1), choice("optim.kind", {"sgd", "adamw", "lion", "adafactor"}),
                            integer("model.n_layer", 2, 12, 2)};
double mixed(const Assignment& a) {
  return std::pow(std::log10(a["optim.lr"].get<double>()) + 2.5, 2) + (a["optim.kind"] == "adamw" ? 0.0 : 1.0) +
         std::pow((a["model.n_layer"].get<double>() - 6) / 4, 2);
}

TEST(Tpe, SameSeedAndHistoryGiveTheSameParameters) {
  auto a = make_tpe_sampler(spec_of(kMixed, SamplerKind::tpe, 7));
  auto b = make_tpe_sampler(spec_of(kMixed, SamplerKind::tpe, 7));
  const auto ha = run(*a, 30, mixed);
  const auto hb = run(*b, 30, mixed);
  for (size_t i = 0; i < ha.size(); i++) EXPECT_EQ(ha[i].params, hb[i].params) << "trial " << i;
  // Asking again for a trial already sampled gives the same answer: nothing is kept
  // between calls but the spec.
  std::vector<Observation> prefix(ha.begin(), ha.begin() + 20);
  EXPECT_EQ(*a->sample(20, prefix), ha[20].params);
  // Another seed goes elsewhere.
  auto c = make_tpe_sampler(spec_of(kMixed, SamplerKind::tpe, 8));
  EXPECT_NE(*c->sample(20, prefix), ha[20].params);
}

TEST(Tpe, StartupTrialsAreTheRandomSamplersDraws) {
  auto tpe = make_tpe_sampler(spec_of(kMixed, SamplerKind::tpe, 3, 5));
  auto random = make_sampler(spec_of(kMixed, SamplerKind::random, 3, 5));
  std::vector<Observation> history;
  for (int i = 0; i < 5; i++) {
    EXPECT_EQ(*tpe->sample(i, history), *random->sample(i, history)) << "trial " << i;
    // Failed or running trials (no objective, not pruned) do not count towards start-up.
    history.push_back({*random->sample(i, history), std::nullopt, false});
  }
  EXPECT_EQ(*tpe->sample(5, history), *random->sample(5, history));
  // Pruned trials do count: five of them end the start-up phase.
  for (auto& o : history) o.pruned = true;
  EXPECT_NE(*tpe->sample(5, history), *random->sample(5, history));
}

TEST(Tpe, ValuesStayInTheSpaceOnTheStepGridAndAmongTheChoices) {
  const SearchSpace space = {loguniform("optim.lr", 1e-5, 1e-1), uniform("optim.weight_decay", 0.0, 0.2),
                             integer("model.n_layer", 2, 9, 3),  // 2, 5, 8: high off the grid
                             choice("train.precision", {"fp32", "bf16", 16})};
  // The objective pushes towards every bound, so the kernels sit on the edges.
  auto f = [](const Assignment& a) {
    return -std::log10(a["optim.lr"].get<double>()) + a["optim.weight_decay"].get<double>() -
           a["model.n_layer"].get<double>() + (a["train.precision"] == 16 ? 0 : 1);
  };
  for (uint64_t seed = 0; seed < 4; seed++) {
    auto tpe = make_tpe_sampler(spec_of(space, SamplerKind::tpe, seed, 5));
    for (const auto& o : run(*tpe, 60, f)) {
      const auto& a = o.params;
      const double lr = a["optim.lr"].get<double>(), wd = a["optim.weight_decay"].get<double>();
      EXPECT_TRUE(lr >= 1e-5 && lr <= 1e-1) << lr;
      EXPECT_TRUE(wd >= 0 && wd <= 0.2) << wd;
      ASSERT_TRUE(a["model.n_layer"].is_number_integer()) << a.dump();
      const int64_t n = a["model.n_layer"].get<int64_t>();
      EXPECT_TRUE(n == 2 || n == 5 || n == 8) << n;
      const auto& prec = a["train.precision"];
      EXPECT_TRUE(prec == "fp32" || prec == "bf16" || prec == 16) << prec.dump();
    }
  }
}

TEST(Tpe, PrunedAndFailedHistoriesStillSample) {
  // Only pruned trials: the good group is empty (prior only), which must still work.
  auto tpe = make_tpe_sampler(spec_of(kMixed, SamplerKind::tpe, 1, 3));
  auto random = make_sampler(spec_of(kMixed, SamplerKind::random, 1));
  std::vector<Observation> history;
  for (int i = 0; i < 6; i++) history.push_back({*random->sample(i, history), std::nullopt, true});
  history.push_back({*random->sample(6, history), NAN, false});  // a NaN objective counts as failed
  const auto a = tpe->sample(7, history);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->size(), 3u);
}

// Mean over seeds of the best objective after 40 trials.
double mean_best(const SearchSpace& space, SamplerKind kind, const Objective& f, int seeds) {
  double sum = 0;
  for (int s = 0; s < seeds; s++) {
    auto sampler = make_sampler(spec_of(space, kind, 1000 + (uint64_t)s));
    sum += best_of(run(*sampler, 40, f));
  }
  return sum / seeds;
}

// Measured, mean over 20 seeds of the best after 40 trials (10 start-up, 24 candidates):
//   lr/wd:                 TPE 0.00212, random 0.00689 (TPE/random 0.31)
//   lr/choice/int (mixed): TPE 0.0933,  random 0.336   (0.28)
// With the seeds 2000.., 3000.., 7000.. instead the ratios were 0.20 / 0.48 / 0.33 (lr/wd)
// and 0.24 / 0.21 / 0.38 (mixed). The assertions ask for 0.7: a change of random stream
// does not fail them, a model no better than random search does.
TEST(Tpe, BeatsRandomSearchOnSyntheticObjectives) {
  const double tpe_a = mean_best(kLrWd, SamplerKind::tpe, lr_wd, 20);
  const double random_a = mean_best(kLrWd, SamplerKind::random, lr_wd, 20);
  const double tpe_b = mean_best(kMixed, SamplerKind::tpe, mixed, 20);
  const double random_b = mean_best(kMixed, SamplerKind::random, mixed, 20);
  std::printf("mean best after 40 trials: lr/wd TPE %.5f random %.5f; mixed TPE %.5f random %.5f\n", tpe_a,
              random_a, tpe_b, random_b);
  EXPECT_LT(tpe_a, 0.7 * random_a);
  EXPECT_LT(tpe_b, 0.7 * random_b);
}

}  // namespace
}  // namespace tessera::tuning
