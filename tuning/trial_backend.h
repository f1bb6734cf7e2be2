// Where trials run. One interface, three implementations: local processes
// (local_backend.cpp), Slurm through its C API (slurm_api_backend.cpp), and Slurm through
// its command-line tools (slurm_cli_backend.cpp) for clusters whose libslurm does not match
// the build. The sweeper only submits, asks and cancels; everything it must remember is
// in its journal, so a backend holds no state a restart would need.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tuning/sweep_spec.h"

namespace tessera::tuning {

// One attempt of one trial. Its command line is `command recipe --set o1 --set o2 ...`;
// for a training trial command is {tessera, train}, and the Slurm backends run it through
// launchers/slurm/train.sbatch (so a trial job checkpoints on USR1/SIGTERM and requeues).
struct TrialLaunch {
  std::string job_name;      // unique in the sweep: "<sweep>-t<id>-a<attempt>"
  std::string trial_dir;     // absolute; the job's output (<job_name>.out) goes here
  std::vector<std::string> command;     // program and leading arguments
  std::string recipe;
  std::vector<std::string> overrides;   // key=value
  bool tessera_train = true;  // command is `tessera train`
  std::string work_dir;      // absolute; where relative paths of the recipe resolve
  int ntasks = 1;
  int cpus_per_task = 1;
  int time_limit_minutes = 0;

  std::vector<std::string> argv() const;  // command, recipe, --set, o1, --set, o2, ...
  std::string output_path() const { return trial_dir + "/" + job_name + ".out"; }
};

// unknown: the backend answered that it does not know the job (Slurm forgets ended jobs
// after MinJobAge); unreachable: the backend could not be asked (controller down, a
// command timed out): the job may well be running, ask again later.
enum class JobState { pending, running, completed, failed, cancelled, unknown, unreachable };
const char* to_string(JobState s);

struct JobStatus {
  JobState state = JobState::unknown;
  int exit_code = 0;                   // for completed, failed and cancelled
  std::string detail;                  // the backend's own words (Slurm state, reason)
};

class TrialBackend {
 public:
  virtual ~TrialBackend() = default;
  virtual std::string name() const = 0;
  // Starts the attempt and returns its job id. Throws tessera::Error when the backend
  // refuses it (the message says why).
  virtual std::string submit(const TrialLaunch& launch) = 0;
  virtual JobStatus query(const std::string& job_id) = 0;
  // Asks the job to stop (SIGTERM: a training run checkpoints first) and returns at once.
  virtual void cancel(const std::string& job_id) = 0;
  // The job id of a job submitted under this name that the journal did not record (the
  // sweeper died between submitting and writing the id), or nullopt when the backend
  // answered that there is none. Throws tessera::Error when it cannot tell (Slurm does
  // not answer): the caller must not submit again then.
  virtual std::optional<std::string> find(const std::string& job_name,
                                          const std::string& trial_dir) = 0;
};

// The backend of a sweep file. Throws tessera::Error when it is not usable here (no
// Slurm controller answering, a build without libslurm): nothing has been submitted then.
// `sweep_dir` is absolute; the local backend keeps its pid and exit-status files there.
std::unique_ptr<TrialBackend> make_backend(const SweepSpec& spec, const std::string& sweep_dir);

// The implementations (make_backend picks one).
std::unique_ptr<TrialBackend> make_local_backend(const std::string& jobs_dir);
std::unique_ptr<TrialBackend> make_slurm_cli_backend(const std::string& partition);
std::unique_ptr<TrialBackend> make_slurm_api_backend(const std::string& partition);

// launchers/slurm/train.sbatch of this source tree (the Slurm backends submit it).
std::string train_sbatch_path();

}  // namespace tessera::tuning
