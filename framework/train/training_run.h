// Internal to framework/train: one training run's state and its phases, in the order
// train() runs them. The set-up and resume phases are in train_setup.cpp; the step,
// reporting, stopping and final phases in trainer.cpp.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "framework/data/loader.h"
#include "framework/model/gpt_model.h"
#include "framework/optim/adamw.h"
#include "framework/optim/loss_scaler.h"
#include "framework/recipe/recipe.h"
#include "framework/runlog/run_log.h"
#include "framework/train/checkpointing.h"
#include "framework/train/pipeline.h"
#include "framework/train/trainer.h"
#include "parallel/grad_buckets.h"
#include "parallel/mesh.h"
#include "parallel/collectives.h"

namespace tessera {

// What one optimizer step produced, for reporting.
struct StepOutcome {
  double loss = 0;        // mean over the global batch
  double grad_norm = 0;   // of the unscaled gradient
  double lr = 0;
  double loss_scale = 1;  // the step's (fp16; 1 otherwise)
  bool applied = true;    // false: fp16 overflow, the update was skipped
  double seconds = 0;
};

class TrainingRun {
 public:
  // Set-up: validates the recipe and the layout, opens the data, builds the model,
  // optimizer and gradient buckets, resumes, and writes run_start. Throws tessera::Error
  // before any step for bad recipes, data or checkpoints.
  TrainingRun(const Recipe& recipe, const TrainOptions& options);
  ~TrainingRun();
  // The steps, then the final checkpoint and sample; writes run_end.
  TrainSummary run();

 private:
  // Set-up (train_setup.cpp).
  void set_up_layout();
  void open_data_sets();
  void build_model();
  void build_gradient_buckets();
  void resume();
  void count_parameters();
  void start_run_log();
  nlohmann::json run_start_record() const;
  nlohmann::json checkpoint_extra() const;

  // One step (trainer.cpp): forward-backward over the micro-batches, gradient sync,
  // norm and overflow agreement, optimizer.
  StepOutcome train_step(int64_t step);
  double forward_backward(int64_t step, double loss_scale);
  void sync_gradients();
  double global_grad_norm(double loss_scale);
  void optimizer_step(int64_t step, double lr, double norm, double loss_scale);
  // Reporting: the metric line, the validation loss.
  void record(int64_t step, const StepOutcome& s);
  void report_metrics(int64_t step, const StepOutcome& s, double tps, double mfu);
  void maybe_evaluate(int64_t step);
  double evaluate();
  // Stopping: checkpoint cadence and the agreed preemption signal; true: stop now.
  bool checkpoint_or_stop(TrainingCheckpoints& checkpoints);
  void save(TrainingCheckpoints& checkpoints);
  // After the last step.
  void finish(TrainingCheckpoints& checkpoints);
  void final_sample();
  void print_header() const;

  const Recipe& r_;
  const TrainOptions& options_;
  Communicator* world_ = nullptr;  // the mesh's: every rank of the job
  // Where the model and optimizer compute (train.device; kernels/backend.h).
  kernels::Backend* backend_ = nullptr;
  bool lead_ = false;
  int dp_ = 1, B_ = 0, T_ = 0, accum_ = 1;
  bool zero_ = false;  // ZeRO-1: parallel.zero = 1 at dp > 1
  bool nccl_ = false;  // the dp, tp and pp groups are NCCL communicators (GPU memory)
  PipelineSchedule schedule_ = PipelineSchedule::OneFOneB;
  std::vector<int> stage_layers_;
  std::unique_ptr<Mesh> mesh_;
  std::unique_ptr<DataLoader> train_data_, val_data_;
  std::string grad_sync_;  // how the dp gradients are summed, for run_start
  std::unique_ptr<GPTModel> model_;
  ResumeInfo base_;  // LoRA: the frozen base model's checkpoint
  std::unique_ptr<LossScaler> scaler_;
  std::unique_ptr<PipelineEngine> engine_;
  FlatRange shard_;
  std::unique_ptr<AdamW> adamw_;
  std::vector<int32_t> x_, y_;  // a step's micro-batches, [accum][B * T]
  std::unique_ptr<GradBuckets> buckets_;
  int n_params_ = 0;

  std::string resume_path_;
  int64_t start_step_ = 0;
  ResumeInfo resumed_;

  int64_t parameters_ = 0, trainable_ = 0;
  TrainSummary summary_;
  std::unique_ptr<RunLog> log_;
  double flops_per_token_ = 0, peak_ = 1, tokens_per_step_ = 0;
  int64_t last_step_ = 0;
  std::vector<double> step_rates_;
};

}  // namespace tessera
