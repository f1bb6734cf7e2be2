// Pipeline schedules (parallel/pipeline_schedule.h): the order of each stage's passes,
// the activations each keeps, and the bubble of a replay against (p - 1) / (m + p - 1).
#include <gtest/gtest.h>

#include "base/error.h"
#include "parallel/pipeline_schedule.h"

namespace tessera {
namespace {

std::string text(const std::vector<PipeAction>& actions) {
  std::string s;
  for (const PipeAction& a : actions)
    s += (s.empty() ? "" : " ") + std::string(a.forward ? "F" : "B") + std::to_string(a.micro_batch);
  return s;
}

TEST(PipelineSchedule, GPipeRunsAllForwardsThenAllBackwards) {
  EXPECT_EQ(text(pipeline_actions(PipelineSchedule::GPipe, 1, 4, 3)), "F0 F1 F2 B0 B1 B2");
}

TEST(PipelineSchedule, OneFOneBWarmsUpThenAlternates) {
  // Stage s of p = 4 warms up with p - s - 1 forwards.
  EXPECT_EQ(text(pipeline_actions(PipelineSchedule::OneFOneB, 0, 4, 6)),
            "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5");
  EXPECT_EQ(text(pipeline_actions(PipelineSchedule::OneFOneB, 2, 4, 6)),
            "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 B5");
  EXPECT_EQ(text(pipeline_actions(PipelineSchedule::OneFOneB, 3, 4, 6)),
            "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5");
  // Fewer micro-batches than stages: the warm-up is cut to m.
  EXPECT_EQ(text(pipeline_actions(PipelineSchedule::OneFOneB, 0, 4, 2)), "F0 F1 B0 B1");
}

TEST(PipelineSchedule, EveryMicroBatchRunsOnceForwardBeforeBackward) {
  for (auto schedule : {PipelineSchedule::GPipe, PipelineSchedule::OneFOneB})
    for (int p : {1, 2, 4})
      for (int m : {1, 3, 8})
        for (int s = 0; s < p; s++) {
          const auto actions = pipeline_actions(schedule, s, p, m);
          ASSERT_EQ((int)actions.size(), 2 * m);
          std::vector<int> forward_at(m, -1), backward_at(m, -1);
          for (int k = 0; k < (int)actions.size(); k++)
            (actions[k].forward ? forward_at : backward_at)[actions[k].micro_batch] = k;
          for (int i = 0; i < m; i++) {
            EXPECT_GE(forward_at[i], 0);
            EXPECT_LT(forward_at[i], backward_at[i]);
            if (i > 0) EXPECT_LT(backward_at[i - 1], backward_at[i]);  // backwards in order
          }
        }
}

TEST(PipelineSchedule, InFlightActivations) {
  // GPipe keeps all m; 1F1B at most p - s (and never more than m).
  EXPECT_EQ(peak_in_flight(pipeline_actions(PipelineSchedule::GPipe, 0, 4, 8)), 8);
  for (int s = 0; s < 4; s++)
    EXPECT_EQ(peak_in_flight(pipeline_actions(PipelineSchedule::OneFOneB, s, 4, 8)), 4 - s);
  EXPECT_EQ(peak_in_flight(pipeline_actions(PipelineSchedule::OneFOneB, 0, 4, 2)), 2);
}

TEST(PipelineSchedule, ReplayedBubbleIsTheTheoreticalOne) {
  for (auto schedule : {PipelineSchedule::GPipe, PipelineSchedule::OneFOneB})
    for (int p : {1, 2, 4})
      for (int m : {1, 4, 8, 16}) {
        // Backward twice the forward, as in a transformer: the bubble fraction is the
        // same (every stage waits p - 1 forward and p - 1 backward slots).
        const PipelineReplay r = replay_pipeline(schedule, p, m, 1.0, 2.0);
        EXPECT_NEAR(r.makespan, (m + p - 1) * 3.0, 1e-9) << p << " " << m;
        EXPECT_NEAR(r.bubble_fraction, ideal_bubble_fraction(p, m), 1e-12) << p << " " << m;
      }
  EXPECT_DOUBLE_EQ(ideal_bubble_fraction(4, 8), 3.0 / 11.0);
}

TEST(PipelineSchedule, StageLayers) {
  EXPECT_EQ(stage_layer_counts(12, 4), (std::vector<int>{3, 3, 3, 3}));
  EXPECT_EQ(stage_layer_counts(10, 4), (std::vector<int>{3, 3, 2, 2}));
  EXPECT_EQ(stage_layer_counts(4, 2, {3, 1}), (std::vector<int>{3, 1}));
  EXPECT_THROW(stage_layer_counts(4, 2, {2, 1}), Error);  // sums to 3
  EXPECT_THROW(stage_layer_counts(4, 2, {4, 0}), Error);  // an empty stage
  EXPECT_THROW(stage_layer_counts(4, 3, {2, 2}), Error);  // not one per stage
  EXPECT_THROW(stage_layer_counts(2, 4), Error);          // fewer layers than stages
  EXPECT_EQ(parse_pipeline_schedule("gpipe"), PipelineSchedule::GPipe);
  EXPECT_THROW(parse_pipeline_schedule("interleaved"), Error);
}

}  // namespace
}  // namespace tessera
