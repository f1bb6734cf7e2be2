// The batch script of a trial and Slurm's state words (tuning/slurm_common.h).
#include "tuning/slurm_common.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>

#include "base/error.h"

namespace tessera::tuning {

std::string train_sbatch_path() {
  if (const char* path = std::getenv("TESSERA_TRAIN_SBATCH")) return path;
  return std::string(TESSERA_SOURCE_DIR) + "/launchers/slurm/train.sbatch";
}

// 'text' for bash, with embedded single quotes closed and escaped.
static std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

SlurmJobScript slurm_job_script(const TrialLaunch& launch) {
  SlurmJobScript job;
  if (launch.tessera_train) {
    job.script_path = train_sbatch_path();
    job.script_args.push_back(launch.recipe);
    for (const auto& o : launch.overrides) {
      job.script_args.push_back("--set");
      job.script_args.push_back(o);
    }
    job.environment = {"TESSERA=" + launch.command.at(0), "TESSERA_LOG_DIR=" + launch.trial_dir};
  } else {
    job.script_path = launch.trial_dir + "/" + launch.job_name + ".sh";
    // The first line names the job (job_id_from_output reads it back).
    std::string text = "#!/bin/bash\n# trial " + launch.job_name + " of a Tessera sweep\n"
                       "echo \"trial job ${SLURM_JOB_ID}\"\nexec";
    for (const auto& a : launch.argv()) {
      text += ' ';
      text += shell_quote(a);
    }
    std::ofstream(job.script_path) << text << "\n";
    chmod(job.script_path.c_str(), 0755);
  }
  job.export_list = "ALL";
  for (const auto& kv : job.environment) {
    check(kv.find(',') == std::string::npos,
          "slurm backend: '" + kv + "' holds a comma, which sbatch --export cannot pass; use a path without commas");
    job.export_list += "," + kv;
  }
  return job;
}

void check_slurm_config(const char* backend) {
  const char* env = std::getenv("SLURM_CONF");
  const std::string conf = env && *env ? env : "/etc/slurm/slurm.conf";
  struct stat st {};
  if (stat(conf.c_str(), &st) != 0)
    throw Error(std::string("slurm backend (") + backend + "): no Slurm configuration at " + conf +
                (env && *env ? " (SLURM_CONF)" : " (set SLURM_CONF to your cluster's slurm.conf)") +
                "; nothing was submitted");
}

std::optional<std::string> job_id_from_output(const std::string& trial_dir, const std::string& job_name) {
  std::ifstream in(trial_dir + "/" + job_name + ".out");
  for (std::string line; std::getline(in, line);) {
    const size_t at = line.find("job ");
    if (line.rfind("train.sbatch: job ", 0) != 0 && line.rfind("trial job ", 0) != 0) continue;
    const size_t start = at + 4, end = line.find_first_not_of("0123456789", start);
    if (end != start) return line.substr(start, end - start);
  }
  return std::nullopt;
}

JobState job_state_from_slurm(const std::string& word) {
  // The ended states, listed: anything else (PENDING, RUNNING, REQUEUED, COMPLETING,
  // SPECIAL_EXIT, STOPPED, ... and states of later Slurm versions) is not over yet.
  if (word == "COMPLETED") return JobState::completed;
  if (word == "CANCELLED") return JobState::cancelled;
  if (word == "FAILED" || word == "TIMEOUT" || word == "NODE_FAIL" || word == "PREEMPTED" ||
      word == "BOOT_FAIL" || word == "DEADLINE" || word == "OUT_OF_MEMORY")
    return JobState::failed;
  if (word.empty()) return JobState::unknown;
  if (word == "RUNNING" || word == "COMPLETING") return JobState::running;
  return JobState::pending;
}

}  // namespace tessera::tuning
