// How a training process takes SIGUSR1 and SIGTERM (framework/train/stop_signals.h): inside
// a run both are recorded for the loop to act on; SIGUSR1, Slurm's "the time limit is near",
// never ends a `tessera train` process, before a run, during it or after it; SIGTERM
// outside a run ends the process as usual.
#include <gtest/gtest.h>

#include <csignal>

#include "framework/train/stop_signals.h"
#include "parallel/thread_communicator.h"

using namespace tessera;

namespace {

// Puts SIGUSR1 back to its default when a test ends (record_sigusr1_until_exit is for
// the rest of the process).
struct DefaultSigusr1AtEnd {
  ~DefaultSigusr1AtEnd() { std::signal(SIGUSR1, SIG_DFL); }
};

}  // namespace

TEST(StopSignals, Sigusr1BeforeDuringAndAfterARunNeverEndsTheProcess) {
  const DefaultSigusr1AtEnd restore;
  auto comms = make_thread_communicators(1);
  Communicator& world = *comms[0];
  record_sigusr1_until_exit();
  std::raise(SIGUSR1);  // before the run: recorded, and the run stops after its first step
  {
    const StopSignals run;
    EXPECT_EQ(StopSignals::agreed(world), SIGUSR1);
  }
  {
    const StopSignals next_run;  // the record ends with the run that saw it
    EXPECT_EQ(StopSignals::agreed(world), 0);
    std::raise(SIGUSR1);  // during a run
    EXPECT_EQ(StopSignals::agreed(world), SIGUSR1);
  }
  std::raise(SIGUSR1);  // after the run: the process goes on
  SUCCEED() << "still running after three SIGUSR1";
}

TEST(StopSignals, SigtermIsRecordedInsideARunOnly) {
  auto comms = make_thread_communicators(1);
  Communicator& world = *comms[0];
  {
    const StopSignals run;
    std::raise(SIGTERM);
    EXPECT_EQ(StopSignals::agreed(world), SIGTERM);
  }
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // BLAS threads may be running
  EXPECT_EXIT(std::raise(SIGTERM), testing::KilledBySignal(SIGTERM), "");
}
