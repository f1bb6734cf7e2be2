// The training loop: recipe in, trained model, run log and summary out.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "framework/recipe/recipe.h"

namespace tessera {

struct TrainOptions {
  std::vector<std::string> argv;  // recorded in run_start
  bool print = true;              // progress lines on rank 0's stdout
};

struct TrainSummary {
  std::string run_id;
  std::string run_log;            // <log.dir>/<run-id>/run.jsonl
  int64_t steps = 0;
  std::vector<double> losses;     // training loss of every step (mean over the global batch)
  double val_loss = -1;           // last validation loss (-1: none)
  std::string sample;             // greedy continuation printed at the end
  double tokens_per_s = 0;        // median over steps after the first
  double mfu = 0;                 // at that median
  std::string checkpoint;         // the last checkpoint written, e.g. "ckpt/step_000200"
  bool preempted = false;         // stopped by SIGUSR1/SIGTERM after checkpointing
};

// The exit code of a run stopped by SIGUSR1 or SIGTERM after it checkpointed (EX_TEMPFAIL:
// "try again"): launchers/slurm/train.sbatch turns it into `scontrol requeue`, and the
// requeued job continues with checkpoint.resume: auto.
inline constexpr int kPreemptedExitCode = 75;

// Trains under MPI_COMM_WORLD (MPI must be initialised; world size must equal
// dp * tp * pp). Every rank calls it. Bad recipes and data throw tessera::Error before
// any step runs; a failure mid-run writes run_end "failed" with the reason, then throws.
// SIGUSR1 or SIGTERM (Slurm's --signal, preemption) on any rank makes every rank stop at
// the end of the current step, checkpoint, write run_end "interrupted" (reason "preempted: SIGUSR1 after step N; ...")
// and return with
// summary.preempted set.
TrainSummary train(const Recipe& recipe, const TrainOptions& options);

}  // namespace tessera
