// What both Slurm backends (C API and command line) submit for a trial, and how they read
// Slurm's job states.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "tuning/trial_backend.h"

namespace tessera::tuning {

struct SlurmJobScript {
  std::string script_path;               // the batch script
  std::vector<std::string> script_args;  // its arguments
  std::vector<std::string> environment;  // KEY=VALUE added to the submitter's environment
  std::string export_list;               // the same for sbatch --export: "ALL,K=V,..."
};

// A training trial runs launchers/slurm/train.sbatch RECIPE --set ... with TESSERA (the
// binary) and TESSERA_LOG_DIR (the trial directory, for the job's training log) set; a
// command trial runs a two-line script written into its trial directory.
SlurmJobScript slurm_job_script(const TrialLaunch& launch);

// Throws tessera::Error unless a Slurm configuration file is there to be read: SLURM_CONF
// when it is set, else /etc/slurm/slurm.conf. Without one, libslurm and the Slurm tools
// retry for a minute and then end the process (fatal), which must not happen to a sweeper.
void check_slurm_config(const char* backend);

// The job id that a trial's job wrote into its output file (<trial dir>/<job name>.out:
// "train.sbatch: job 42 ..." or the command script's "trial job 42"). It finds a job that
// Slurm has already forgotten (MinJobAge) but that did run, so that a sweeper that died
// between submitting and journaling, and stayed away longer than that, does not run the
// trial a second time.
std::optional<std::string> job_id_from_output(const std::string& trial_dir, const std::string& job_name);

// PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ... as a JobState.
JobState job_state_from_slurm(const std::string& word);

}  // namespace tessera::tuning
