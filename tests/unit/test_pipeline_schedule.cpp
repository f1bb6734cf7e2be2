// Pipeline schedules (parallel/pipeline_schedule.h): the order of each stage's passes,
// the activations each keeps, and the bubble of a replay against (p - 1) / (m + p - 1).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <utility>

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
            if (i > 0) {
              EXPECT_LT(backward_at[i - 1], backward_at[i]);  // backwards in order
            }
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

namespace tessera {
namespace {

// Each stage's messages in groups, in the order the stage posts them.
using Groups = std::vector<std::vector<PipeMessage>>;

Groups plan_groups(const std::vector<PipeStep>& plan) {
  Groups groups;
  for (const PipeStep& step : plan) groups.push_back(step.exchange);
  return groups;
}

// The plan a naive engine would follow: each receive alone before its action, each send
// alone after it.
Groups naive_groups(const std::vector<PipeStep>& plan) {
  Groups groups;
  for (const PipeStep& step : plan)
    for (const PipeMessage& m : step.exchange) groups.push_back({m});
  return groups;
}

// Replays every stage's groups the way NCCL may run them at worst: a stage posts its
// groups one after the other, a send completes only while its receive is posted in the
// peer's current group (and the receive with it), a group when all its messages have.
// True if every stage gets through; false if they deadlock.
bool completes_under_rendezvous(const std::vector<Groups>& stages) {
  const int p = (int)stages.size();
  std::vector<size_t> at(p, 0);
  std::vector<std::vector<bool>> done(p);
  auto start_group = [&](int s) {
    if (at[s] < stages[s].size()) done[s].assign(stages[s][at[s]].size(), false);
  };
  for (int s = 0; s < p; s++) start_group(s);
  for (;;) {
    for (int s = 0; s < p; s++) {
      if (at[s] == stages[s].size()) continue;
      const auto& mine = stages[s][at[s]];
      for (size_t k = 0; k < mine.size(); k++) {
        const int q = mine[k].peer;
        if (done[s][k] || at[q] == stages[q].size()) continue;
        const auto& theirs = stages[q][at[q]];
        for (size_t j = 0; j < theirs.size(); j++)
          if (!done[q][j] && theirs[j].peer == s && theirs[j].send != mine[k].send &&
              theirs[j].gradient == mine[k].gradient &&
              theirs[j].micro_batch == mine[k].micro_batch)
            done[s][k] = done[q][j] = true;
      }
    }
    bool progressed = false, finished = true;
    for (int s = 0; s < p; s++) {
      if (at[s] == stages[s].size()) continue;
      if (std::find(done[s].begin(), done[s].end(), false) == done[s].end()) {
        at[s]++, progressed = true;
        start_group(s);
      }
      finished = finished && at[s] == stages[s].size();
    }
    if (finished) return true;
    if (!progressed) return false;
  }
}

// The messages from stage `from` to `to` as `who` posts them (sends of `from`, receives of `to`).
std::string messages_between(const Groups& groups, int from_or_to, bool sends) {
  std::string s;
  for (const auto& group : groups)
    for (const PipeMessage& m : group)
      if (m.send == sends && m.peer == from_or_to)
        s += std::string(m.gradient ? "d" : "x") + std::to_string(m.micro_batch) + " ";
  return s;
}

TEST(PipelinePlan, EveryMessageOfTheStepOnceInAGroup) {
  // Stage 1 of 3, 1F1B, m = 2: F0 B0 F1 B1 (warm-up 1: F0 F1 B0 B1).
  const auto plan = pipeline_plan(pipeline_actions(PipelineSchedule::OneFOneB, 1, 3, 2), 1, 3);
  ASSERT_EQ(plan.size(), 5u);
  using M = PipeMessage;
  EXPECT_EQ(plan[0].exchange, (std::vector<M>{{false, false, 0, 0}}));  // recv x0
  EXPECT_EQ(plan[1].exchange, (std::vector<M>{{true, false, 0, 2}, {false, false, 1, 0}}));
  EXPECT_EQ(plan[2].exchange, (std::vector<M>{{true, false, 1, 2}, {false, true, 0, 2}}));
  EXPECT_EQ(plan[3].exchange, (std::vector<M>{{true, true, 0, 0}, {false, true, 1, 2}}));
  EXPECT_FALSE(plan[4].has_action);
  EXPECT_EQ(plan[4].exchange, (std::vector<M>{{true, true, 1, 0}}));
}

TEST(PipelinePlan, CannotDeadlockWhereSendsWaitForTheirReceives) {
  for (auto schedule : {PipelineSchedule::GPipe, PipelineSchedule::OneFOneB})
    for (int p : {2, 3, 4, 5})
      for (int m : {1, 2, 3, 4, 8}) {
        std::vector<Groups> stages;
        for (int s = 0; s < p; s++)
          stages.push_back(plan_groups(pipeline_plan(pipeline_actions(schedule, s, p, m), s, p)));
        EXPECT_TRUE(completes_under_rendezvous(stages)) << "p=" << p << " m=" << m;
        // NCCL matches a pair's messages in order: both sides must list them alike.
        for (int s = 0; s + 1 < p; s++) {
          EXPECT_EQ(messages_between(stages[s], s + 1, true),
                    messages_between(stages[s + 1], s, false));
          EXPECT_EQ(messages_between(stages[s + 1], s, true),
                    messages_between(stages[s], s + 1, false));
        }
      }
}

TEST(PipelinePlan, TheReplayFindsTheDeadlockOfSendsPostedAlone) {
  // The replay can fail: 1F1B with each message posted on its own deadlocks (stage 0
  // sends x1 while stage 1 sends dx0); GPipe's order happens to survive it.
  for (auto [schedule, survives] : {std::pair{PipelineSchedule::OneFOneB, false},
                                    std::pair{PipelineSchedule::GPipe, true}}) {
    std::vector<Groups> stages;
    for (int s = 0; s < 2; s++)
      stages.push_back(naive_groups(pipeline_plan(pipeline_actions(schedule, s, 2, 4), s, 2)));
    EXPECT_EQ(completes_under_rendezvous(stages), survives);
  }
}

}  // namespace
}  // namespace tessera
