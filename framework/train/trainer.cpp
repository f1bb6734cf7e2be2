// train(): the phases of a run in order, and the phases that repeat every step — one
// training step, reporting, checkpointing and stopping — then the final checkpoint and
// sample. Set-up and resume are in train_setup.cpp.
#include "framework/train/trainer.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "framework/data/prepare.h"
#include "framework/data/tokenizer.h"
#include "framework/train/stop_signals.h"
#include "framework/train/training_run.h"
#include "framework/train/zero.h"
#include "base/error.h"
#include "framework/util/memory.h"
#include "framework/util/peak.h"

namespace tessera {

namespace {

// Fault injection for the tests of failure handling: TESSERA_TEST_FAIL_AT="RANK:STEP" makes
// world rank RANK throw at the start of step STEP (1-based), as a real fault on one rank
// would (a bad sample, a full disk, an out-of-memory). Unset: nothing happens.
void maybe_inject_failure(int world_rank, int64_t step) {
  const char* spec = std::getenv("TESSERA_TEST_FAIL_AT");
  if (!spec || !*spec) return;
  int rank = -1;
  long long at = -1;
  check(std::sscanf(spec, "%d:%lld", &rank, &at) == 2,
        std::string("TESSERA_TEST_FAIL_AT: expected RANK:STEP, got '") + spec + "'");
  if (rank == world_rank && at == step)
    throw Error("injected failure on rank " + std::to_string(rank) + " at step " +
                std::to_string(at) + " (TESSERA_TEST_FAIL_AT)");
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The tokenizer that made the data (framework/data/prepare.h); null when unknown (the
// sample is then printed as token ids).
std::unique_ptr<Tokenizer> sample_tokenizer(const std::string& first_shard) {
  try {
    return data_tokenizer(first_shard);
  } catch (const Error&) {
    return nullptr;
  }
}

// Greedy continuation of `prompt` (argmax over the real vocabulary at each position).
// Collective over the model's tp and pp groups (the logits are sharded by vocabulary and
// live on the last stage).
std::vector<int32_t> greedy_sample(PipelineEngine& engine, const GPTConfig& c,
                                   std::vector<int32_t> tokens, int n) {
  for (int i = 0; i < n; i++) {
    const int T = std::min<int>((int)tokens.size(), c.seq_len);
    tokens.push_back(engine.next_token(std::vector<int32_t>(tokens.end() - T, tokens.end())));
  }
  return tokens;
}

// The progress line's end under fp16: the loss scale, or that the step was skipped.
std::string scale_note(Precision precision, double scale, bool applied) {
  if (precision != Precision::fp16) return "";
  char text[96];
  std::snprintf(text, sizeof text, applied ? " | scale %g" : " | scale %g: overflow, step skipped",
                scale);
  return text;
}

}  // namespace

TrainSummary train(const Recipe& r, const TrainOptions& options) {
  TrainingRun run(r, options);
  return run.run();
}

TrainSummary TrainingRun::run() {
  const StopSignals stop_signals;
  try {
    flops_per_token_ = model_->config().training_flops_per_token(T_);
    // The peak of all ranks' cores together; none on a GPU (its peak is not measured
    // here), so no MFU there (0 in the summary, null in the run log).
    peak_ = backend_->computes_on_host()
                ? all_reduce_value(*world_, measure_fp32_peak_flops(0.1), ReduceOp::sum)
                : 0;
    tokens_per_step_ = (double)r_.train.global_batch * T_;
    print_header();
    summary_.steps = start_step_;
    // Every run ends with its final state in its own checkpoint.dir, even a resumed one
    // with nothing left to do.
    TrainingCheckpoints checkpoints(r_, summary_.run_id, *log_, options_.print, *world_);
    last_step_ = r_.train.exit_after_step > 0 ? std::min(r_.train.steps, r_.train.exit_after_step)
                                              : r_.train.steps;
    for (int64_t step = start_step_; step < last_step_; step++) {
      const StepOutcome outcome = train_step(step);
      record(step, outcome);
      summary_.steps = step + 1;
      if (checkpoint_or_stop(checkpoints)) return summary_;
    }
    finish(checkpoints);
  } catch (const std::exception& e) {
    log_->run_end("failed", e.what());
    throw;
  }
  log_->run_end("ok", "");
  return summary_;
}

void TrainingRun::print_header() const {
  if (!lead_ || !options_.print) return;
  std::printf("run %s: %s, %.2fM parameters, %d rank(s) x %d thread(s), %d micro-batch(es) "
              "of %dx%d per step\n  log: %s\n",
              summary_.run_id.c_str(), r_.source.c_str(), parameters_ / 1e6, world_->size(),
              omp_get_max_threads(), accum_, B_, T_, log_->path().c_str());
  if (!resume_path_.empty())
    std::printf("resumed from %s at step %lld\n", resume_path_.c_str(), (long long)start_step_);
}

// ---------------------------------------------------------------------------------------
// One training step.

StepOutcome TrainingRun::train_step(int64_t step) {
  const auto t0 = std::chrono::steady_clock::now();
  maybe_inject_failure(world_->rank(), step + 1);
  StepOutcome s;
  s.loss_scale = scaler_->scale();
  s.loss = forward_backward(step, s.loss_scale);
  sync_gradients();
  s.loss = all_reduce_mean(mesh_->dp(), s.loss);
  s.grad_norm = global_grad_norm(s.loss_scale);
  // fp16: an overflow on any rank skips the step on every rank (the norm is already
  // the same everywhere; the agreement makes that explicit and cheap).
  bool finite = std::isfinite(s.grad_norm);
  if (r_.train.precision == Precision::fp16)
    finite = all_reduce_value<int32_t>(*world_, finite, ReduceOp::min) == 1;
  s.applied = scaler_->update(finite);
  s.lr = learning_rate(r_.optim, step, r_.train.steps);
  if (s.applied) optimizer_step(step, s.lr, s.grad_norm, s.loss_scale);
  backend_->synchronize();  // the step's time includes what a device still has queued
  // NCCL: a failure its watchdog found during the step ends the run here, before the
  // step's parameters are logged or saved.
  mesh_->synchronize_groups();
  s.seconds = seconds_since(t0);
  if (!std::isfinite(s.loss))
    throw Error("training diverged: loss is " + std::to_string(s.loss) + " at step " +
                std::to_string(step + 1) + " (lower optim.lr or check the data)");
  return s;
}

// This rank's loss over its micro-batches, with grad_scale's share of the gradient of
// loss_scale * (the global mean loss) added into grads().
double TrainingRun::forward_backward(int64_t step, double loss_scale) {
  model_->zero_grad();
  const size_t BT = (size_t)B_ * T_;
  for (int m = 0; m < accum_; m++)
    train_data_->next_micro_batch(x_.data() + m * BT, y_.data() + m * BT);
  GPTModel::GradReadyHook hook;
  if (buckets_) hook = [this](int i) { buckets_->mark_ready(n_params_ - 1 - i); };
  // This rank's share of the global batch starts at sample dp_rank * accum * B.
  return engine_->train_step(x_.data(), y_.data(), (float)(loss_scale / (double)(accum_ * dp_)),
                             hook, (uint64_t)step, (int64_t)mesh_->dp_rank() * accum_ * B_);
}

// The tied embedding's two copies (first and last stage) get the sum of both gradients:
// after the buckets' dp sum, or before ZeRO's reduce-scatter splits it.
void TrainingRun::sync_gradients() {
  if (buckets_) buckets_->finish();
  engine_->sum_tied_embedding_grads();
  if (zero_)  // this rank's range of grads() becomes the sum over dp (the rest is stale)
    mesh_->dp().reduce_scatter(model_->grads(), model_->grads() + shard_.lo, shard_.size());
}

// Of the logical model: sharded parameters summed over tp, replicated counted once; of
// the gradient of loss_scale * loss, so divided by it.
double TrainingRun::global_grad_norm(double loss_scale) {
  const double norm =
      zero_ ? zero_grad_norm(*model_, shard_, mesh_->dp()) : model_->grad_norm();
  return norm / loss_scale;
}

void TrainingRun::optimizer_step(int64_t step, double lr, double norm, double loss_scale) {
  GPTModel& model = *model_;
  // AdamW counts the updates it made (bias correction), skipped steps not included.
  const int64_t updates = step + 1 - scaler_->skipped_steps();
  float* params = model.params();  // (the 16-bit copy goes stale: written below)
  uint16_t* copy16 = zero_ ? nullptr : model.weights16_for_full_update();
  adamw_->step(params, model.grads(), lr, updates,
               (float)(clip_factor(norm, r_.optim.grad_clip) / loss_scale), copy16,
               model.options().precision);
  if (zero_)  // every rank's updated range, to every dp rank
    mesh_->dp().all_gather(model.params() + shard_.lo, model.params(), shard_.size());
}

// ---------------------------------------------------------------------------------------
// Reporting.

void TrainingRun::record(int64_t step, const StepOutcome& s) {
  summary_.losses.push_back(s.loss);
  const double tps = tokens_per_step_ / s.seconds;
  const double mfu = peak_ > 0 ? tps * flops_per_token_ / peak_ : 0;
  if (step > start_step_ || last_step_ == start_step_ + 1) step_rates_.push_back(tps);
  if ((step + 1) % r_.log.every == 0 || step + 1 == r_.train.steps)
    report_metrics(step, s, tps, mfu);
  maybe_evaluate(step);
}

// The metric record and the progress line. Every rank calls it (the cadence is the same
// on all).
void TrainingRun::report_metrics(int64_t step, const StepOutcome& s, double tps, double mfu) {
  const double peak_rss = all_reduce_value(*world_, peak_rss_mib(), ReduceOp::max);  // the job's worst rank
  nlohmann::json metrics = {{"loss", s.loss}, {"lr", s.lr}, {"grad_norm", s.grad_norm},
                            {"tokens_per_s", tps},
                            {"mfu", peak_ > 0 ? nlohmann::json(mfu) : nlohmann::json()},
                            {"step_ms", s.seconds * 1e3},
                            {"tokens_seen", (step + 1) * (int64_t)r_.train.global_batch * T_},
                            {"peak_rss_mb", peak_rss}};
  if (r_.train.precision == Precision::fp16) {
    metrics["loss_scale"] = s.loss_scale;
    metrics["skipped"] = !s.applied;
    metrics["skipped_steps"] = scaler_->skipped_steps();
  }
  // The idle fraction of the schedule, mean over the stages; timed on the host, so only
  // where the host computes (a GPU's kernels run after their launches return).
  if (mesh_->pp_size() > 1 && backend_->computes_on_host())
    metrics["pipeline_bubble"] =
        all_reduce_mean(mesh_->pp(), engine_->last_times().bubble_fraction());
  log_->metric(step + 1, metrics);
  char mfu_text[16] = "n/a";
  if (peak_ > 0) std::snprintf(mfu_text, sizeof mfu_text, "%.1f%%", 100 * mfu);
  if (lead_ && options_.print)
    std::printf("step %5lld/%lld | loss %.4f | lr %.2e | norm %.3f | %.0f tok/s | MFU %s "
                "| %.0f ms%s\n",
                (long long)(step + 1), (long long)r_.train.steps, s.loss, s.lr, s.grad_norm, tps,
                mfu_text, s.seconds * 1e3,
                scale_note(r_.train.precision, s.loss_scale, s.applied).c_str());
}

void TrainingRun::maybe_evaluate(int64_t step) {
  if (!val_data_ || ((step + 1) % r_.train.eval_every != 0 && step + 1 != r_.train.steps)) return;
  summary_.val_loss = evaluate();
  log_->eval(step + 1, {{"val_loss", summary_.val_loss}});
  if (lead_ && options_.print)
    std::printf("step %5lld | val loss %.4f\n", (long long)(step + 1), summary_.val_loss);
}

// Mean loss over the first train.eval_batches global batches of the validation set, in
// order (the same samples every time), split over dp ranks and micro-batches exactly as
// a training batch is, so the value does not depend on the layout (as in Megatron-LM).
double TrainingRun::evaluate() {
  DataLoader& val = *val_data_;
  const int64_t fit = std::max<int64_t>(1, val.num_samples() / r_.train.global_batch);
  const int64_t batches = std::min<int64_t>(r_.train.eval_batches, fit);
  const int64_t BT = (int64_t)B_ * T_;
  val.set_position(0);
  double total = 0;
  for (int64_t i = 0; i < batches; i++) {  // one global batch: accum micro-batches
    for (int m = 0; m < accum_; m++) val.next_micro_batch(x_.data() + m * BT, y_.data() + m * BT);
    total += engine_->evaluate(x_.data(), y_.data(), accum_);
  }
  mesh_->synchronize_groups();  // NCCL: no loss computed after a failure is reported
  return all_reduce_mean(mesh_->dp(), total / (double)batches);
}

// ---------------------------------------------------------------------------------------
// Checkpoints and stopping.

void TrainingRun::save(TrainingCheckpoints& checkpoints) {
  checkpoints.save(summary_.steps, *model_, *adamw_, *train_data_, mesh_->dp_rank(), world_->size(),
                   checkpoint_extra());
}

// After each step: the checkpoint cadence, then the stop signal agreed over every rank
// (preemption or the time limit), which checkpoints, writes run_end and says stop.
bool TrainingRun::checkpoint_or_stop(TrainingCheckpoints& checkpoints) {
  checkpoints.poll();  // publishes a background save once every rank has written it
  if (r_.checkpoint.every > 0 && summary_.steps % r_.checkpoint.every == 0) save(checkpoints);
  const int signo = StopSignals::agreed(*world_);
  if (!signo) return false;
  if (checkpoints.last_step() != summary_.steps) save(checkpoints);
  checkpoints.wait();
  summary_.checkpoint = checkpoints.last_path();
  const std::string why = std::string("preempted: ") + (signo == SIGUSR1 ? "SIGUSR1" : "SIGTERM") +
                          " after step " + std::to_string(summary_.steps) + "; checkpoint " +
                          summary_.checkpoint;
  if (lead_ && options_.print) std::printf("stopping: %s\n", why.c_str());
  log_->run_end("interrupted", why);
  summary_.preempted = true;
  return true;
}

// ---------------------------------------------------------------------------------------
// After the last step: the final checkpoint, the median rate, the sample.

void TrainingRun::finish(TrainingCheckpoints& checkpoints) {
  if (checkpoints.last_step() != summary_.steps) save(checkpoints);
  checkpoints.wait();
  summary_.checkpoint = checkpoints.last_path();
  if (!step_rates_.empty()) {
    std::nth_element(step_rates_.begin(), step_rates_.begin() + step_rates_.size() / 2,
                     step_rates_.end());
    summary_.tokens_per_s = step_rates_[step_rates_.size() / 2];
    summary_.mfu = peak_ > 0 ? summary_.tokens_per_s * flops_per_token_ / peak_ : 0;
  }
  final_sample();
}

// Rank 0's replica samples: its tp groups (the logits are sharded) and pp stages.
void TrainingRun::final_sample() {
  if (mesh_->dp_rank() != 0 || r_.train.sample_tokens <= 0) return;
  const auto tokenizer = sample_tokenizer(train_data_->files().front());
  std::vector<int32_t> prompt(x_.begin(), x_.begin() + std::max(1, std::min(T_ / 2, 16)));
  const auto out = greedy_sample(*engine_, model_->config(), prompt, r_.train.sample_tokens);
  if (tokenizer) {
    summary_.sample = tokenizer->decode(std::vector<int>(out.begin(), out.end()));
  } else {
    for (int32_t t : out) summary_.sample += std::to_string(t) + " ";
  }
  if (lead_ && options_.print)
    std::printf("sample (greedy, prompt of %zu tokens):\n%s\n", prompt.size(),
                summary_.sample.c_str());
}

}  // namespace tessera
