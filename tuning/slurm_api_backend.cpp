// The Slurm backend through Slurm's C API (libslurm): slurm_submit_batch_job to submit,
// slurm_load_job to ask, slurm_kill_job to stop, slurm_load_jobs to find a job by name.
// The batch script is launchers/slurm/train.sbatch as for sbatch, but the API does not
// read its #SBATCH lines (sbatch does that), so the options it relies on are set here:
// append to the output file, requeue allowed, USR1 to the batch shell 120 s before the
// time limit.
#include "tuning/trial_backend.h"

#ifdef TESSERA_HAVE_LIBSLURM
#include <slurm/slurm.h>
#include <slurm/slurm_errno.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "tuning/slurm_common.h"

extern char** environ;

namespace tessera::tuning {
namespace {

std::string slurm_error() { return slurm_strerror(slurm_get_errno()); }

// Runs `call` with stderr sent to a temporary file: libslurm prints its own "error:"
// lines there, which would break our one-line messages. Returns what it printed, on
// one line.
template <class F>
std::string quietly(F call) {
  std::fflush(stderr);
  FILE* capture = std::tmpfile();
  const int saved = dup(2);
  if (capture) dup2(fileno(capture), 2);
  call();
  std::fflush(stderr);
  if (saved >= 0) {
    dup2(saved, 2);
    ::close(saved);
  }
  std::string text;
  if (capture) {
    std::rewind(capture);
    for (int c; (c = std::fgetc(capture)) != EOF;) {
      if (c == '\n') text += "; ";
      else text.push_back((char)c);
    }
    std::fclose(capture);
  }
  return text;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot read the trial's batch script");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

JobState state_of(uint32_t job_state) {
  if (job_state & (JOB_REQUEUE | JOB_REQUEUE_HOLD | JOB_SPECIAL_EXIT)) return JobState::pending;
  if (job_state & JOB_COMPLETING) return JobState::running;
  switch (job_state & JOB_STATE_BASE) {
    case JOB_RUNNING: return JobState::running;
    case JOB_COMPLETE: return JobState::completed;
    case JOB_CANCELLED: return JobState::cancelled;
    case JOB_FAILED:
    case JOB_TIMEOUT:
    case JOB_NODE_FAIL:
    case JOB_PREEMPTED:
    case JOB_BOOT_FAIL:
    case JOB_DEADLINE:
    case JOB_OOM: return JobState::failed;
    default: return JobState::pending;  // PENDING, SUSPENDED, and what later versions add
  }
}

class SlurmApiBackend : public TrialBackend {
 public:
  explicit SlurmApiBackend(std::string partition) : partition_(std::move(partition)) {
    check_slurm_config("api");
    quietly([] { slurm_init(nullptr); });
    // Asking for the partitions proves that the controller answers (with no controller
    // the call fails after some seconds rather than hanging).
    partition_info_msg_t* parts = nullptr;
    int rc = SLURM_SUCCESS;
    const std::string said = quietly([&] { rc = slurm_load_partitions(0, &parts, SHOW_ALL); });
    if (rc != SLURM_SUCCESS)
      throw Error("slurm backend (api): the Slurm controller does not answer (" + slurm_error() +
                  (said.empty() ? "" : "; libslurm: " + said) +
                  "); is Slurm running and SLURM_CONF set? Nothing was submitted");
    slurm_free_partition_info_msg(parts);
  }
  std::string name() const override { return "slurm (libslurm)"; }

  std::string submit(const TrialLaunch& launch) override {
    const SlurmJobScript job = slurm_job_script(launch);
    const std::string script = read_file(job.script_path);
    std::vector<std::string> env;
    for (char** e = environ; *e; e++) env.push_back(*e);
    env.insert(env.end(), job.environment.begin(), job.environment.end());
    std::vector<std::string> args = {job.script_path};
    args.insert(args.end(), job.script_args.begin(), job.script_args.end());
    std::vector<char*> env_ptrs, arg_ptrs;
    for (auto& e : env) env_ptrs.push_back(e.data());
    for (auto& a : args) arg_ptrs.push_back(a.data());
    std::string name = launch.job_name, out = launch.output_path(), dir = launch.work_dir,
                partition = partition_;

    job_desc_msg_t desc;
    slurm_init_job_desc_msg(&desc);
    desc.name = name.data();
    desc.script = const_cast<char*>(script.c_str());
    desc.argc = (uint32_t)arg_ptrs.size();
    desc.argv = arg_ptrs.data();
    desc.environment = env_ptrs.data();
    desc.env_size = (uint32_t)env_ptrs.size();
    desc.work_dir = dir.data();
    desc.std_out = out.data();
    desc.open_mode = OPEN_MODE_APPEND;
    desc.user_id = getuid();
    desc.group_id = getgid();
    desc.min_nodes = 1;
    desc.max_nodes = 1;
    desc.num_tasks = (uint32_t)launch.ntasks;
    desc.cpus_per_task = (uint16_t)launch.cpus_per_task;
    if (launch.time_limit_minutes > 0) desc.time_limit = (uint32_t)launch.time_limit_minutes;
    if (!partition.empty()) desc.partition = partition.data();
    desc.requeue = 1;
    desc.warn_signal = SIGUSR1;
    desc.warn_time = 120;
    desc.warn_flags = KILL_JOB_BATCH;

    submit_response_msg_t* response = nullptr;
    if (slurm_submit_batch_job(&desc, &response) != SLURM_SUCCESS)
      throw Error("Slurm refused trial " + launch.job_name + ": " + slurm_error());
    const std::string id = std::to_string(response->job_id);
    slurm_free_submit_response_response_msg(response);
    return id;
  }

  JobStatus query(const std::string& job_id) override {
    JobStatus s;
    job_info_msg_t* info = nullptr;
    if (slurm_load_job(&info, (uint32_t)std::stoul(job_id), SHOW_ALL) != SLURM_SUCCESS) {
      // ESLURM_INVALID_JOB_ID: Slurm forgot it (unknown); anything else: not asked.
      if (slurm_get_errno() != ESLURM_INVALID_JOB_ID) s.state = JobState::unreachable;
      s.detail = slurm_error();
      return s;
    }
    if (info->record_count > 0) {
      const slurm_job_info_t& job = info->job_array[0];
      s.state = state_of(job.job_state);
      const int status = (int)job.exit_code;  // a wait() status
      s.exit_code = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
      s.detail = "job_state " + std::to_string(job.job_state & JOB_STATE_BASE) +
                 ", restarts " + std::to_string(job.restart_cnt);
    }
    slurm_free_job_info_msg(info);
    return s;
  }

  // Like scancel: SIGTERM to the job now, SIGKILL after the cluster's KillWait.
  void cancel(const std::string& job_id) override { slurm_kill_job((uint32_t)std::stoul(job_id), SIGKILL, 0); }

  std::optional<std::string> find(const std::string& job_name, const std::string& trial_dir) override {
    job_info_msg_t* info = nullptr;
    if (slurm_load_jobs(0, &info, SHOW_ALL) != SLURM_SUCCESS)
      throw Error("the Slurm controller does not answer (" + slurm_error() + ")");
    std::optional<std::string> found;
    for (uint32_t i = 0; i < info->record_count; i++)
      if (info->job_array[i].name && job_name == info->job_array[i].name)
        found = std::to_string(info->job_array[i].job_id);
    slurm_free_job_info_msg(info);
    return found ? found : job_id_from_output(trial_dir, job_name);
  }

 private:
  std::string partition_;
};

}  // namespace

std::unique_ptr<TrialBackend> make_slurm_api_backend(const std::string& partition) {
  return std::make_unique<SlurmApiBackend>(partition);
}

}  // namespace tessera::tuning

#else  // a build without libslurm-dev

#include "base/error.h"

namespace tessera::tuning {

std::unique_ptr<TrialBackend> make_slurm_api_backend(const std::string&) {
  throw Error("slurm backend: this build has no libslurm (install libslurm-dev and rebuild), "
              "or set slurm.interface: cli in the sweep file to use sbatch/squeue/scancel");
}

}  // namespace tessera::tuning
#endif
