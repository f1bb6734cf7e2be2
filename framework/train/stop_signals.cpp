#include "framework/train/stop_signals.h"

#include <csignal>

#include "parallel/collectives.h"

namespace tessera {

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;
void record_stop_signal(int signo) { g_stop_signal = signo; }

struct sigaction recording_action() {
  struct sigaction action {};
  action.sa_handler = record_stop_signal;
  sigemptyset(&action.sa_mask);
  return action;
}

}  // namespace

void record_sigusr1_until_exit() {
  const struct sigaction action = recording_action();
  sigaction(SIGUSR1, &action, nullptr);
}

// The record is not cleared here: a SIGUSR1 recorded before the run (see above) counts.
StopSignals::StopSignals() {
  const struct sigaction action = recording_action();
  sigaction(SIGUSR1, &action, &old_usr1_);
  sigaction(SIGTERM, &action, &old_term_);
}

StopSignals::~StopSignals() {
  sigaction(SIGUSR1, &old_usr1_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
  g_stop_signal = 0;
}

int StopSignals::agreed(Communicator& world) {
  return all_reduce_value<int32_t>(world, g_stop_signal, ReduceOp::max);
}

}  // namespace tessera
