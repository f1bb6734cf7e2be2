// ASHA's rule against hand-worked cases of Optuna's SuccessiveHalvingPruner.
#include <gtest/gtest.h>

#include "tuning/asha.h"

namespace tessera::tuning {
namespace {

TEST(Asha, RungsAreAtMinResourceTimesPowersOfTheReductionFactor) {
  SchedulerSpec s{SchedulerKind::asha, 10, 3, 0};
  EXPECT_EQ(rung_resource(s, 0), 10);
  EXPECT_EQ(rung_resource(s, 1), 30);
  EXPECT_EQ(rung_resource(s, 2), 90);
  s.min_early_stopping_rate = 1;
  EXPECT_EQ(rung_resource(s, 0), 30);
}

TEST(Asha, PromotesTheTopFractionOrTheBestWhileFewHaveArrived) {
  // Fewer than reduction_factor values: only the best so far goes on (index 0).
  EXPECT_TRUE(promotable(2.0, {}, 3, false));
  EXPECT_TRUE(promotable(1.0, {2.0}, 3, false));
  EXPECT_FALSE(promotable(3.0, {2.0}, 3, false));
  EXPECT_TRUE(promotable(2.0, {2.0}, 3, false));  // ties promote (<=)
  // Six values, factor 3: the best two go on.
  EXPECT_TRUE(promotable(1.5, {1.0, 2.0, 3.0, 4.0, 5.0}, 3, false));
  EXPECT_FALSE(promotable(2.5, {1.0, 2.0, 3.0, 4.0, 5.0}, 3, false));
  EXPECT_TRUE(promotable(2.0, {1.0, 2.0, 3.0, 4.0, 5.0}, 3, false));
  // Maximising mirrors it.
  EXPECT_TRUE(promotable(4.5, {1.0, 2.0, 3.0, 4.0, 5.0}, 3, true));
  EXPECT_FALSE(promotable(3.5, {1.0, 2.0, 3.0, 4.0, 5.0}, 3, true));
  EXPECT_FALSE(promotable(std::nan(""), {}, 3, false));
}

TEST(Asha, DecisionsTakeTheFirstLoggedStepAtTheRungAndEarlierTrialsValues) {
  const SchedulerSpec s{SchedulerKind::asha, 10, 2, 0};
  const Objective min_loss;
  SweepState state;
  state.trials.resize(3);
  for (int i = 0; i < 3; i++) state.trials[(size_t)i].id = i;
  // Trial 0 reached rung 0 with 2.0 and rung 1 with 1.5.
  state.trials[0].rungs = {{0, 10, 10, 2.0, {}, true}, {1, 20, 20, 1.5, {}, true}};
  // Trial 1 logs every 4 steps: rung 0 (10 steps) is decided at step 12.
  const MetricSeries series = {{4, 3.0}, {8, 2.6}, {12, 2.5}, {16, 2.4}, {20, 2.3}};
  const auto d = next_rung_decision(s, min_loss, state.trials[1], series, state);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->rung, 0);
  EXPECT_EQ(d->step, 12);
  EXPECT_EQ(d->value, 2.5);
  EXPECT_EQ(d->competing, std::vector<double>{2.0});
  EXPECT_FALSE(d->promoted);  // 2 values, factor 2: only the best (2.0) goes on
  // Once stopped, no further decision.
  state.trials[1].rungs.push_back(*d);
  EXPECT_FALSE(next_rung_decision(s, min_loss, state.trials[1], series, state));
  // Not there yet: nothing to decide.
  EXPECT_FALSE(next_rung_decision(s, min_loss, state.trials[2], {{4, 1.0}}, state));
  // Trial 2 better than both at rung 0: promoted, and its rung 1 follows at once.
  const MetricSeries good = {{10, 1.9}, {20, 1.4}};
  const auto r0 = next_rung_decision(s, min_loss, state.trials[2], good, state);
  ASSERT_TRUE(r0);
  EXPECT_TRUE(r0->promoted);
  EXPECT_EQ(r0->competing, (std::vector<double>{2.0, 2.5}));
  state.trials[2].rungs.push_back(*r0);
  const auto r1 = next_rung_decision(s, min_loss, state.trials[2], good, state);
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->rung, 1);
  EXPECT_EQ(r1->competing, std::vector<double>{1.5});
  EXPECT_TRUE(r1->promoted);
}

}  // namespace
}  // namespace tessera::tuning
