// SIGUSR1 and SIGTERM in a training run: Slurm's --signal=B:USR1@T before the time limit,
// preemption, `scontrol requeue`, scancel. The handler only records the signal; the
// training loop agrees on it across ranks at the end of each step (a rank may get it
// before the others, or alone), checkpoints and stops (trainer.cpp).
#pragma once

#include <signal.h>

namespace tessera {

class Communicator;

// For the rest of the process, SIGUSR1 is recorded and never ends it. A SIGUSR1 that comes
// before training starts (MPI start-up, loading data or a checkpoint) stops the run after
// its first step; one that comes after training ended is ignored: the run is complete and
// checkpointed, and dying of it in MPI_Finalize would fail a finished job. `tessera train`
// calls this first thing; SIGTERM outside training keeps its default (the process ends).
void record_sigusr1_until_exit();

// While alive, SIGUSR1 and SIGTERM are recorded instead of ending the process; then the
// previous handlers come back and the record is cleared for a later run in this process.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  // Collective over `world`: the signal any rank has recorded so far (0: none).
  static int agreed(Communicator& world);

 private:
  struct sigaction old_usr1_ {}, old_term_ {};
};

}  // namespace tessera
