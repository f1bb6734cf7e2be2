#include "parallel/pipeline_schedule.h"

#include <algorithm>

#include "base/error.h"

namespace tessera {

std::vector<int> stage_layer_counts(int n_layer, int pp, const std::vector<int>& listed) {
  check(pp >= 1 && n_layer >= pp, "model.n_layer " + std::to_string(n_layer) +
                                      " cannot be split into parallel.pp " + std::to_string(pp) +
                                      " stages of at least one layer");
  if (listed.empty()) {
    std::vector<int> counts(pp, n_layer / pp);
    for (int s = 0; s < n_layer % pp; s++) counts[s]++;
    return counts;
  }
  std::string text;
  int sum = 0;
  bool positive = true;
  for (int c : listed) {
    text += (text.empty() ? "" : ",") + std::to_string(c);
    sum += c;
    positive = positive && c >= 1;
  }
  check((int)listed.size() == pp && positive && sum == n_layer,
        "parallel.stage_layers: '" + text + "' must list parallel.pp = " + std::to_string(pp) +
            " layer counts, each >= 1, summing to model.n_layer = " + std::to_string(n_layer));
  return listed;
}

PipelineSchedule parse_pipeline_schedule(const std::string& name) {
  if (name == "gpipe") return PipelineSchedule::GPipe;
  if (name == "1f1b") return PipelineSchedule::OneFOneB;
  throw Error("parallel.schedule: expected 'gpipe' or '1f1b', got '" + name + "'");
}

std::vector<PipeAction> pipeline_actions(PipelineSchedule schedule, int stage, int stages,
                                         int micro_batches) {
  check(stages >= 1 && stage >= 0 && stage < stages && micro_batches >= 1,
        "pipeline_actions: bad stage, stage count or micro-batch count");
  const int m = micro_batches;
  std::vector<PipeAction> actions;
  if (schedule == PipelineSchedule::GPipe) {
    for (int i = 0; i < m; i++) actions.push_back({true, i});
    for (int i = 0; i < m; i++) actions.push_back({false, i});
    return actions;
  }
  const int warmup = std::min(stages - stage - 1, m);
  int next_forward = 0, next_backward = 0;
  for (; next_forward < warmup; next_forward++) actions.push_back({true, next_forward});
  while (next_forward < m) {  // steady state: one forward, one backward
    actions.push_back({true, next_forward++});
    actions.push_back({false, next_backward++});
  }
  while (next_backward < m) actions.push_back({false, next_backward++});  // cool-down
  return actions;
}

std::vector<PipeStep> pipeline_plan(const std::vector<PipeAction>& actions, int stage,
                                    int stages) {
  const bool first = stage == 0, last = stage == stages - 1;
  std::vector<PipeStep> plan;
  std::vector<PipeMessage> unsent;  // the previous action's send
  for (const PipeAction& a : actions) {
    PipeStep step{std::move(unsent), true, a};
    unsent.clear();
    const int i = a.micro_batch;
    if (a.forward) {
      if (!first) step.exchange.push_back({false, false, i, stage - 1});
      if (!last) unsent.push_back({true, false, i, stage + 1});
    } else {
      if (!last) step.exchange.push_back({false, true, i, stage + 1});
      if (!first) unsent.push_back({true, true, i, stage - 1});
    }
    plan.push_back(std::move(step));
  }
  if (!unsent.empty()) plan.push_back({std::move(unsent), false, {}});
  return plan;
}

int peak_in_flight(const std::vector<PipeAction>& actions) {
  int now = 0, peak = 0;
  for (const PipeAction& a : actions) {
    now += a.forward ? 1 : -1;
    peak = std::max(peak, now);
  }
  return peak;
}

double ideal_bubble_fraction(int stages, int micro_batches) {
  return (double)(stages - 1) / (double)(micro_batches + stages - 1);
}

PipelineReplay replay_pipeline(PipelineSchedule schedule, int stages, int micro_batches,
                               double forward_time, double backward_time) {
  const int p = stages, m = micro_batches;
  std::vector<std::vector<PipeAction>> actions(p);
  for (int s = 0; s < p; s++) actions[s] = pipeline_actions(schedule, s, p, m);
  // Finish times of each (stage, micro-batch) forward and backward; -1: not run yet.
  std::vector<std::vector<double>> fwd(p, std::vector<double>(m, -1)), bwd = fwd;
  std::vector<size_t> next(p, 0);
  std::vector<double> free_at(p, 0);  // when the stage finished its previous action
  size_t remaining = (size_t)p * 2 * m;
  while (remaining > 0) {
    bool progressed = false;
    for (int s = 0; s < p; s++) {
      if (next[s] == actions[s].size()) continue;
      const PipeAction a = actions[s][next[s]];
      const int i = a.micro_batch;
      // The input this action waits for: the previous stage's forward, or the next
      // stage's backward (the last stage's backward follows its own forward).
      double ready = 0;
      if (a.forward && s > 0) ready = fwd[s - 1][i];
      if (!a.forward && s < p - 1) ready = bwd[s + 1][i];
      if (ready < 0) continue;
      const double start = std::max(ready, free_at[s]);
      free_at[s] = start + (a.forward ? forward_time : backward_time);
      (a.forward ? fwd : bwd)[s][i] = free_at[s];
      next[s]++;
      remaining--;
      progressed = true;
    }
    check(progressed, "pipeline schedule deadlocks");
  }
  PipelineReplay r;
  r.makespan = *std::max_element(free_at.begin(), free_at.end());
  const double busy = m * (forward_time + backward_time);
  r.bubble_fraction = 1.0 - busy / r.makespan;
  return r;
}

}  // namespace tessera
