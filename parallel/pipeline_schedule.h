// Pipeline schedules: the order in which one stage runs the forward and backward passes
// of a step's m micro-batches (Megatron-LM's two non-interleaved schedules).
//
//   GPipe  all m forwards, then all m backwards. Keeps the activations of all m
//          micro-batches.
//   1F1B   (PipeDream-Flush) stage s of p runs min(p - s - 1, m) warm-up forwards, then
//          alternates one forward and one backward, then drains the remaining backwards.
//          Keeps at most p - s micro-batches in flight: memory bounded by p, not m.
//
// Both have the same bubble: with equal forward and backward times per stage the
// idle fraction of every stage is (p - 1) / (m + p - 1). Both run the backwards in
// micro-batch order 0 .. m-1, so gradients accumulate in the same order on every layout.
// Pure functions: no MPI.
#pragma once
#include <string>
#include <vector>

namespace tessera {

// Layers per stage: the recipe's list when given (must have pp entries >= 1 summing to
// n_layer), else balanced, the first n_layer % pp stages one layer more. Throws
// tessera::Error naming parallel.stage_layers otherwise.
std::vector<int> stage_layer_counts(int n_layer, int pp, const std::vector<int>& listed = {});

enum class PipelineSchedule { GPipe, OneFOneB };

// "gpipe" | "1f1b" (the recipe's parallel.schedule); throws tessera::Error otherwise.
PipelineSchedule parse_pipeline_schedule(const std::string& name);

struct PipeAction {
  bool forward = true;  // false: backward
  int micro_batch = 0;
  bool operator==(const PipeAction&) const = default;
};

// What stage `stage` of `stages` runs in one step, in order.
std::vector<PipeAction> pipeline_actions(PipelineSchedule schedule, int stage, int stages,
                                         int micro_batches);

// A message between neighbouring stages in a step: micro-batch i's activation going
// forward (stage s to s + 1) or its gradient going back (s + 1 to s).
struct PipeMessage {
  bool send = true;       // false: a receive
  bool gradient = false;  // false: the activation
  int micro_batch = 0;
  int peer = 0;  // the neighbouring stage
  bool operator==(const PipeMessage&) const = default;
};

// One stage's step as the pipeline engine runs it: before each action, one group of
// messages posted together (Communicator::exchange_async): the receive that the action
// needs, if any, and the send of the previous action. The last step has no action: it
// carries the last send. Why a send waits for the next group: where a send blocks until
// its receive is posted (NCCL), a send posted alone can deadlock. In 1F1B, stage s sends
// micro-batch i + 1's activation while stage s + 1 sends micro-batch i's gradient, each
// waiting for the other's receive; in one group with the receive, both pairs meet.
// Receives are posted only when needed (a receive posted early blocks every message
// behind it on NCCL's stream). Messages between a pair of stages keep one order on both
// sides (activations in micro-batch order, gradients too), as NCCL's matching needs.
struct PipeStep {
  std::vector<PipeMessage> exchange;
  bool has_action = true;
  PipeAction action;
};
std::vector<PipeStep> pipeline_plan(const std::vector<PipeAction>& actions, int stage, int stages);

// The most micro-batches whose forward has run and backward not yet: the activation sets
// the stage must keep.
int peak_in_flight(const std::vector<PipeAction>& actions);

// (p - 1) / (m + p - 1): the idle fraction of each stage when forward and backward take
// the same time on every stage and communication is free.
double ideal_bubble_fraction(int stages, int micro_batches);

// Replays every stage's actions with fixed durations (forward_time, backward_time per
// micro-batch and stage; sends take no time) respecting the pipeline's dependencies:
// forward i on stage s after forward i on s - 1, backward i on s after backward i on
// s + 1, each stage one action at a time in its order. Returns the step's makespan and
// the mean idle fraction of the stages; throws tessera::Error if the schedules deadlock.
struct PipelineReplay {
  double makespan = 0;
  double bubble_fraction = 0;
};
PipelineReplay replay_pipeline(PipelineSchedule schedule, int stages, int micro_batches,
                               double forward_time, double backward_time);

}  // namespace tessera
