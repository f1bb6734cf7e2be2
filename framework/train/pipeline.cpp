#include "framework/train/pipeline.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "base/error.h"

namespace tessera {

namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Waits for a message. On the host, a wait that gives the core away while the neighbour
// is still computing: with more ranks than cores (a pipeline under `mpirun
// --oversubscribe`) a spinning wait would take the core from the very stage it waits for.
// On a GPU, wait() orders the compute stream after the message (NCCL) and returns, so the
// host goes on queueing the stage's kernels.
void wait_for_message(CommRequest& request, bool on_host) {
  if (!on_host) return request.wait();
  for (int polls = 0; !request.test(); polls++)
    if (polls >= 64) usleep(20);
}

}  // namespace

int PipelineEngine::slots_needed(PipelineSchedule schedule, int stage, int stages,
                                 int micro_batches) {
  if (stages == 1) return 1;  // forward and backward of each micro-batch in turn
  return peak_in_flight(pipeline_actions(schedule, stage, stages, micro_batches));
}

PipelineEngine::PipelineEngine(GPTModel& model, PipelineSchedule schedule, int micro_batches, int B,
                               int T)
    : model_(model), schedule_(schedule), m_(micro_batches), B_(B), T_(T),
      pp_(model.stage().comm), stage_(model.stage().rank), stages_(model.stage().size) {
  check(m_ >= 1 && B_ >= 1 && T_ >= 1, "pipeline: bad micro-batch shape");
  check(model.activation_slots() >= slots_needed(schedule, stage_, stages_, m_),
        "pipeline: the model keeps fewer activation slots than the schedule needs");
  const int64_t n = (int64_t)m_ * B_ * T_ * model.config().n_embd;
  kernels::Backend& backend = model.backend();
  if (stages_ > 1) {
    if (!model.stage().is_first())
      recv_x_ = backend.allocate<float>(n), send_dx_ = backend.allocate<float>(n);
    if (!model.stage().is_last())
      recv_dx_ = backend.allocate<float>(n), send_x_ = backend.allocate<float>(n);
  }
}

double PipelineEngine::run(const std::vector<PipeAction>& actions, const int32_t* inputs,
                           const int32_t* targets, int count, int T, float grad_scale,
                           bool backward, const GPTModel::GradReadyHook& last_backward_hook) {
  const auto t0 = Clock::now();
  double compute_ms = 0;
  const bool first = model_.stage().is_first(), last = model_.stage().is_last();
  const bool on_host = model_.backend().computes_on_host();
  const int64_t BT = (int64_t)B_ * T, NC = BT * model_.config().n_embd;
  const int slots = model_.activation_slots();
  // Micro-batch i's message: its slice of the buffer of that direction and kind.
  auto message = [&](const PipeMessage& m) {
    kernels::Buffer<float>& buffer =
        m.gradient ? (m.send ? send_dx_ : recv_dx_) : (m.send ? send_x_ : recv_x_);
    const int tag = 2 * m.micro_batch + (m.gradient ? 1 : 0);  // for MPI; NCCL matches in order
    return Communicator::PeerMessage{m.send, buffer.data() + m.micro_batch * NC, NC, m.peer, tag};
  };

  std::vector<CommRequest> sends;  // groups of sends only, completed at the end of the step
  double loss_sum = 0;
  for (const PipeStep& step : pipeline_plan(actions, stage_, stages_)) {
    if (!step.exchange.empty()) {
      std::vector<Communicator::PeerMessage> group;
      bool receives = false;
      for (const PipeMessage& m : step.exchange) {
        group.push_back(message(m));
        receives = receives || !m.send;
      }
      CommRequest request = pp_->exchange_async(group);
      if (receives)
        wait_for_message(request, on_host);  // the action's input
      else
        sends.push_back(request);
    }
    if (!step.has_action) continue;
    const int i = step.action.micro_batch, slot = i % slots;
    const auto c0 = Clock::now();
    if (step.action.forward) {
      GPTModel::DropoutKey key = step_key_;  // off outside training steps
      key.first_sample += (int64_t)i * B_;
      model_.set_dropout_key(slot, key);
      model_.stage_forward(slot, inputs + i * BT, first ? nullptr : recv_x_.data() + i * NC, B_, T);
      if (last && targets)
        loss_sum += model_.stage_loss(slot, targets + i * BT, B_, T, grad_scale, backward);
      if (!last) model_.backend().copy(send_x_.data() + i * NC, model_.stage_output(slot), NC);
    } else {
      const bool hook = last_backward_hook && i == count - 1;
      if (hook) model_.set_grad_ready_hook(last_backward_hook);
      model_.stage_backward(slot, inputs + i * BT, last ? nullptr : recv_dx_.data() + i * NC,
                            first ? nullptr : send_dx_.data() + i * NC, B_, T);
      if (hook) model_.set_grad_ready_hook(nullptr);
    }
    compute_ms += ms_between(c0, Clock::now());
  }
  for (CommRequest& r : sends) wait_for_message(r, on_host);
  times_.step_ms = ms_between(t0, Clock::now());
  times_.compute_ms = compute_ms;
  times_.wait_ms = times_.step_ms - compute_ms;
  return loss_sum;
}

double PipelineEngine::loss_from_last_stage(double loss) const {
  if (stages_ > 1) pp_->broadcast_bytes(&loss, sizeof loss, stages_ - 1);
  return loss;
}

double PipelineEngine::train_step(const int32_t* inputs, const int32_t* targets, float grad_scale,
                                  const GPTModel::GradReadyHook& last_backward_hook, uint64_t step,
                                  int64_t first_sample) {
  // At pp = 1 the schedule does not matter: 1F1B's order is forward, backward, forward...
  const PipelineSchedule schedule = stages_ == 1 ? PipelineSchedule::OneFOneB : schedule_;
  const auto actions = pipeline_actions(schedule, stage_, stages_, m_);
  step_key_ = {true, step, first_sample};
  const double sum = run(actions, inputs, targets, m_, T_, grad_scale, true, last_backward_hook);
  step_key_ = {};
  return loss_from_last_stage(sum / m_);
}

double PipelineEngine::evaluate(const int32_t* inputs, const int32_t* targets, int count) {
  double sum = 0;
  const int64_t BT = (int64_t)B_ * T_;
  for (int done = 0; done < count; done += m_) {  // in chunks of at most m micro-batches
    const int n = std::min(m_, count - done);
    std::vector<PipeAction> forwards;
    for (int i = 0; i < n; i++) forwards.push_back({true, i});
    sum += run(forwards, inputs + done * BT, targets + done * BT, n, T_, 0.0f, false, nullptr);
  }
  return loss_from_last_stage(sum / count);
}

int32_t PipelineEngine::next_token(const std::vector<int32_t>& tokens) {
  const int T = (int)tokens.size();
  check(B_ >= 1 && T >= 1 && T <= model_.config().seq_len, "next_token: bad sequence length");
  const int saved_B = B_;
  B_ = 1;  // one sequence; the buffers hold m * B * T >= T positions
  run({{true, 0}}, tokens.data(), nullptr, 1, T, 0.0f, false, nullptr);
  B_ = saved_B;
  int32_t token = model_.stage().is_last() ? model_.argmax_token(T - 1) : 0;
  if (stages_ > 1) pp_->broadcast_bytes(&token, sizeof token, stages_ - 1);
  return token;
}

void PipelineEngine::sum_tied_embedding_grads() {
  if (stages_ == 1 || !(model_.stage().is_first() || model_.stage().is_last())) return;
  if (!model_.config().tied()) return;  // llama's own lm_head: nothing shared
  if (model_.wte_index() < 0) return;  // frozen (LoRA) on both stages
  const ParamInfo& wte = model_.table().params().at(model_.wte_index());
  const int peer = model_.stage().is_first() ? stages_ - 1 : 0;
  kernels::Backend& backend = model_.backend();
  float* mine = model_.grads() + wte.offset;
  // Made once (a GPU's allocation and free would each synchronise the device every step).
  if (!peer_wte_grad_) peer_wte_grad_ = backend.allocate<float>(wte.numel);
  float* theirs = peer_wte_grad_.data();
  const int tag = 1 << 20;  // apart from the activations' tags
  // One group: each side sends and receives (two separate calls would deadlock on NCCL).
  pp_->exchange_async({{true, mine, wte.numel, peer, tag}, {false, theirs, wte.numel, peer, tag}})
      .wait();
  // a + b == b + a exactly: both copies get bit-identical sums.
  backend.residual_forward(mine, mine, theirs, wte.numel);
}

}  // namespace tessera
