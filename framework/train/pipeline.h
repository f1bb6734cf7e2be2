// The pipeline engine: runs one step's micro-batches through this rank's stage of the
// model, in the order of a schedule (parallel/pipeline_schedule.h), exchanging the
// residual stream between neighbouring stages point to point.
//
// Every stage of a data-parallel replica reads the same micro-batches (the first stage
// needs the inputs, the last the targets). Activations go forward and their gradients
// backward as [B, T, C] float messages in the pp group's communicator, from the backend's
// memory (GPU to GPU over NCCL), in the groups of pipeline_plan (parallel/pipeline_schedule.h):
// before each action, its receive together with the previous action's send, so that no
// order of the neighbours' actions deadlocks even where a send waits for its receive.
// Sends are completed at the end of the step. At pp = 1 the same engine runs forward and
// backward of each micro-batch in turn (no messages).
//
// The tied embedding: the first stage's wte (token embedding) and the last stage's
// copy (LM head) start equal; sum_tied_embedding_grads() adds their gradients so both
// copies take the same optimizer step and stay equal.
#pragma once

#include <cstdint>
#include <vector>

#include "framework/model/gpt_model.h"
#include "kernels/buffer.h"
#include "parallel/pipeline_schedule.h"

namespace tessera {

// Where one stage's time went in the last step: computing, or waiting for a neighbour.
struct StageTimes {
  double step_ms = 0, compute_ms = 0, wait_ms = 0;
  double bubble_fraction() const { return step_ms > 0 ? 1.0 - compute_ms / step_ms : 0.0; }
};

class PipelineEngine {
 public:
  // model: this rank's stage, with at least slots_needed() activation slots.
  // micro_batches: m per step; B x T tokens each.
  PipelineEngine(GPTModel& model, PipelineSchedule schedule, int micro_batches, int B, int T);

  // Activation slots the model needs for this schedule on this stage (1 at pp = 1).
  static int slots_needed(PipelineSchedule schedule, int stage, int stages, int micro_batches);

  // Forward and backward of all micro-batches: inputs and targets are [m][B * T] back to
  // back. ADDS grad_scale * d(mean loss of each micro-batch) into model.grads(); the
  // model's grad-ready hook, if `last_backward_hook` is set, is that hook during the last
  // micro-batch's backward (when gradients become final). Returns the mean loss over the
  // micro-batches on every stage (collective over the pp group).
  // LoRA dropout draws the masks of optimizer step `step`, micro-batch i starting at
  // sample first_sample + i * B of the global batch (GPTModel::set_dropout_key).
  double train_step(const int32_t* inputs, const int32_t* targets, float grad_scale,
                    const GPTModel::GradReadyHook& last_backward_hook = nullptr, uint64_t step = 0,
                    int64_t first_sample = 0);

  // Forward only (evaluation): the mean loss of `count` micro-batches of B x T, on every
  // stage (collective over the pp group).
  double evaluate(const int32_t* inputs, const int32_t* targets, int count);

  // The greedy next token after `tokens` (one sequence of T <= seq_len), on every stage
  // (collective over the pp and tp groups).
  int32_t next_token(const std::vector<int32_t>& tokens);

  // Adds the two tied copies of wte's gradient between the first and the last stage
  // (same dp and tp rank); a no-op at pp = 1. Collective over those two stages.
  void sum_tied_embedding_grads();

  const StageTimes& last_times() const { return times_; }

 private:
  // Runs `actions` over `count` micro-batches of B_ x T tokens; returns the sum of the
  // last stage's micro-batch losses (0 on other stages).
  double run(const std::vector<PipeAction>& actions, const int32_t* inputs,
             const int32_t* targets, int count, int T, float grad_scale, bool backward,
             const GPTModel::GradReadyHook& last_backward_hook);
  double loss_from_last_stage(double loss) const;  // broadcast over the pp group
  GPTModel::DropoutKey step_key_;  // of the training step in progress (off otherwise)

  GPTModel& model_;
  PipelineSchedule schedule_;
  int m_, B_, T_;
  Communicator* pp_;  // the pipeline group (null at pp = 1)
  int stage_, stages_;
  // Per micro-batch message buffers [m][B * T * C] in the backend's memory: received
  // activations / gradients and the copies sent (a send buffer is not touched again
  // until the step's sends complete).
  kernels::Buffer<float> recv_x_, recv_dx_, send_x_, send_dx_;
  kernels::Buffer<float> peer_wte_grad_;  // the other copy's wte gradient (first, last stage)
  StageTimes times_;
};

}  // namespace tessera
