// What the Slurm backends submit, and how they read Slurm back, without a cluster (the
// sweeps on the test cluster are in sweep_runs.py).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "base/error.h"
#include "tuning/slurm_common.h"

namespace tessera::tuning {
namespace {

namespace fs = std::filesystem;

TrialLaunch launch_in(const std::string& dir) {
  TrialLaunch l;
  l.job_name = "s-t3-a1";
  l.trial_dir = dir;
  l.command = {"/opt/tessera", "train"};
  l.recipe = "recipes/tiny.yaml";
  l.overrides = {"optim.lr=0.01", "log.dir=" + dir + "/runs"};
  return l;
}

TEST(SlurmCommon, ATrainingTrialRunsTrainSbatchWithTheBinaryAndLogDirectory) {
  const std::string dir = testing::TempDir() + "slurm_trial";
  const SlurmJobScript job = slurm_job_script(launch_in(dir));
  EXPECT_EQ(job.script_path, train_sbatch_path());
  EXPECT_EQ(job.script_args, (std::vector<std::string>{"recipes/tiny.yaml", "--set", "optim.lr=0.01",
                                                       "--set", "log.dir=" + dir + "/runs"}));
  EXPECT_EQ(job.export_list, "ALL,TESSERA=/opt/tessera,TESSERA_LOG_DIR=" + dir);
}

TEST(SlurmCommon, ACommandTrialGetsAScriptThatNamesItsJobAndQuotesArguments) {
  const std::string dir = testing::TempDir() + "slurm_command_trial";
  fs::create_directories(dir);
  TrialLaunch l = launch_in(dir);
  l.tessera_train = false;
  l.command = {"/usr/bin/python3", "it's.py"};
  const SlurmJobScript job = slurm_job_script(l);
  std::ifstream in(job.script_path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("echo \"trial job ${SLURM_JOB_ID}\""), std::string::npos) << text;
  EXPECT_NE(text.find("exec '/usr/bin/python3' 'it'\\''s.py' 'recipes/tiny.yaml' '--set' 'optim.lr=0.01'"),
            std::string::npos) << text;
  EXPECT_TRUE(job.script_args.empty());
}

TEST(SlurmCommon, AJobSlurmForgotIsFoundByTheIdInItsOutput) {
  const std::string dir = testing::TempDir() + "slurm_output";
  fs::remove_all(dir);
  fs::create_directories(dir);
  EXPECT_FALSE(job_id_from_output(dir, "s-t0-a0"));
  std::ofstream(dir + "/s-t0-a0.out") << "train.sbatch: job 4711 (restart 0) on node1: 2 tasks x 1 threads\nmore\n";
  EXPECT_EQ(job_id_from_output(dir, "s-t0-a0"), "4711");
  std::ofstream(dir + "/s-t1-a0.out") << "trial job 12\n";
  EXPECT_EQ(job_id_from_output(dir, "s-t1-a0"), "12");
  std::ofstream(dir + "/s-t2-a0.out") << "some other job 5\n";
  EXPECT_FALSE(job_id_from_output(dir, "s-t2-a0"));
}

TEST(SlurmCommon, SlurmStateWordsMapToJobStates) {
  EXPECT_EQ(job_state_from_slurm("PENDING"), JobState::pending);
  EXPECT_EQ(job_state_from_slurm("REQUEUED"), JobState::pending);  // a requeued trial goes on
  EXPECT_EQ(job_state_from_slurm("RUNNING"), JobState::running);
  EXPECT_EQ(job_state_from_slurm("COMPLETING"), JobState::running);
  EXPECT_EQ(job_state_from_slurm("COMPLETED"), JobState::completed);
  EXPECT_EQ(job_state_from_slurm("CANCELLED"), JobState::cancelled);
  EXPECT_EQ(job_state_from_slurm("TIMEOUT"), JobState::failed);
  EXPECT_EQ(job_state_from_slurm("NODE_FAIL"), JobState::failed);
  EXPECT_EQ(job_state_from_slurm("SPECIAL_EXIT"), JobState::pending);  // not over: held for a requeue
  EXPECT_EQ(job_state_from_slurm("SOMETHING_NEW"), JobState::pending);
  EXPECT_EQ(job_state_from_slurm(""), JobState::unknown);
}

TEST(SlurmCommon, AMissingConfigurationIsRefusedBeforeSlurmIsCalled) {
  const char* old = std::getenv("SLURM_CONF");
  const std::string saved = old ? old : "";
  setenv("SLURM_CONF", "/nonexistent/slurm.conf", 1);
  try {
    check_slurm_config("api");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no Slurm configuration at /nonexistent/slurm.conf"), std::string::npos);
  }
  if (old) setenv("SLURM_CONF", saved.c_str(), 1);
  else unsetenv("SLURM_CONF");
}

}  // namespace
}  // namespace tessera::tuning
