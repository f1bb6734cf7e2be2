// The local backend: each trial attempt is a process group on this machine (mpirun for
// more than one task), started in its own session so that it outlives a killed sweeper.
//
// A small bash wrapper around the command writes `<jobs dir>/<job>.pid` when it starts
// and `<job>.status` (the exit code) when the command ends, each by rename, so a
// restarted sweeper learns the result of a trial that ended while no sweeper ran. The job
// id is the job name. Cancel sends SIGUSR1, which the wrapper forwards: Tessera
// checkpoints at the next step boundary and exits 75, as under Slurm's time-limit signal.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "base/error.h"
#include "tuning/sweep_lock.h"
#include "tuning/trial_backend.h"

namespace tessera::tuning {
namespace {

namespace fs = std::filesystem;

// $1 pid file, $2 status file; the rest is the command. The loop around `wait` is needed
// because a trapped signal makes `wait` return before the child has ended.
// The traps are set before the child starts, so a stop that arrives early is not lost (the
// wrapper, not bash's default action, takes it; `stop` is then passed on at once).
const char* kWrapper =
    "pidf=$1 statf=$2; shift 2; child=; stop=\n"
    "trap 'stop=USR1; [ -n \"$child\" ] && kill -USR1 $child 2>/dev/null' USR1\n"
    "trap 'stop=TERM; [ -n \"$child\" ] && kill -TERM $child 2>/dev/null' TERM\n"
    "echo $$ > \"$pidf.tmp\" && mv \"$pidf.tmp\" \"$pidf\"\n"
    "\"$@\" & child=$!\n"
    "[ -n \"$stop\" ] && kill -$stop $child 2>/dev/null\n"
    "while :; do wait $child; rc=$?; kill -0 $child 2>/dev/null || break; done\n"
    "echo $rc > \"$statf.tmp\" && mv \"$statf.tmp\" \"$statf\"\n";

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

class LocalBackend : public TrialBackend {
 public:
  explicit LocalBackend(std::string jobs_dir) : jobs_dir_(std::move(jobs_dir)) {
    std::error_code ec;
    fs::create_directories(jobs_dir_, ec);
    if (ec) throw Error(jobs_dir_ + ": cannot create the local backend's job directory: " + ec.message());
  }
  std::string name() const override { return "local"; }

  std::string submit(const TrialLaunch& launch) override {
    std::vector<std::string> args = {"/bin/bash", "-c", kWrapper, "tessera-trial",
                                     pid_path(launch.job_name), status_path(launch.job_name)};
    if (launch.ntasks > 1) {
      // Trials share this machine: no binding, and oversubscription allowed.
      for (const char* a : {"mpirun", "--bind-to", "none", "--oversubscribe", "-x", "OMP_NUM_THREADS", "-n"})
        args.push_back(a);
      args.push_back(std::to_string(launch.ntasks));
    }
    for (const auto& a : launch.argv()) args.push_back(a);
    std::error_code ec;
    fs::create_directories(launch.trial_dir, ec);
    if (ec) throw Error(launch.trial_dir + ": cannot create the trial directory: " + ec.message());

    const pid_t pid = fork();
    if (pid < 0) throw Error(std::string("local backend: fork failed: ") + std::strerror(errno));
    if (pid == 0) exec_trial(launch, args);  // does not return
    children_.push_back(pid);  // reaped by query() once it ends
    // The job exists once its pid file does (the wrapper writes it first thing).
    for (int i = 0; i < 500 && !fs::exists(pid_path(launch.job_name)); i++)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!fs::exists(pid_path(launch.job_name))) {
      ::kill(-pid, SIGKILL);  // its session: nothing of it may run on unrecorded
      throw Error("local backend: the trial " + launch.job_name + " did not start within 5 s (no " +
                  pid_path(launch.job_name) + ")");
    }
    // The wrapper's start time, so that a pid reused by another process later (after a
    // reboot, say) is not taken for the trial.
    std::ofstream(start_path(launch.job_name)) << process_start_time(pid) << "\n";
    return launch.job_name;
  }

  JobStatus query(const std::string& job) override {
    reap();
    JobStatus s;
    const std::string status = read_first_line(status_path(job));
    if (!status.empty()) {
      s.exit_code = std::atoi(status.c_str());
      s.state = s.exit_code == 0 ? JobState::completed : JobState::failed;
      s.detail = "exit code " + status;
      return s;
    }
    const std::string pid_text = read_first_line(pid_path(job));
    if (pid_text.empty()) return s;  // unknown: never started
    const pid_t pid = (pid_t)std::atol(pid_text.c_str());
    if (pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM) && same_process(job, pid)) {
      s.state = JobState::running;
      s.detail = "pid " + pid_text;
      return s;
    }
    // Gone without a status file: killed with SIGKILL (or the machine rebooted).
    s.state = JobState::failed;
    s.exit_code = 137;
    s.detail = "process " + pid_text + " ended without writing its exit status (killed?)";
    return s;
  }

  void cancel(const std::string& job) override {
    if (!read_first_line(status_path(job)).empty()) return;  // already ended
    const pid_t pid = (pid_t)std::atol(read_first_line(pid_path(job)).c_str());
    if (pid > 0 && same_process(job, pid)) ::kill(pid, SIGUSR1);
  }

  std::optional<std::string> find(const std::string& job_name, const std::string&) override {
    if (fs::exists(pid_path(job_name)) || fs::exists(status_path(job_name))) return job_name;
    return std::nullopt;
  }

 private:
  std::string pid_path(const std::string& job) const { return jobs_dir_ + "/" + job + ".pid"; }
  std::string status_path(const std::string& job) const { return jobs_dir_ + "/" + job + ".status"; }
  std::string start_path(const std::string& job) const { return jobs_dir_ + "/" + job + ".start"; }

  // Whether pid is still the job's wrapper: its start time is the recorded one (when the
  // sweeper lived to record it).
  bool same_process(const std::string& job, pid_t pid) const {
    const std::string recorded = read_first_line(start_path(job));
    return recorded.empty() || recorded == process_start_time(pid);
  }

  // In the child: a new session (the trial survives the sweeper and its terminal), the
  // trial's working directory and output file, one OpenMP thread per CPU asked for.
  [[noreturn]] static void exec_trial(const TrialLaunch& launch, const std::vector<std::string>& args) {
    setsid();
    if (chdir(launch.work_dir.c_str()) != 0) _exit(126);
    const int out = ::open(launch.output_path().c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (out >= 0) {
      dup2(out, 1);
      dup2(out, 2);
      ::close(out);
    }
    const int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) {
      dup2(null, 0);
      ::close(null);
    }
    setenv("OMP_NUM_THREADS", std::to_string(launch.cpus_per_task).c_str(), 1);
    if (getuid() == 0) {
      setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
      setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    }
    std::vector<char*> cargs;
    for (const auto& a : args) cargs.push_back(const_cast<char*>(a.c_str()));
    cargs.push_back(nullptr);
    execv(cargs[0], cargs.data());
    _exit(127);
  }

  // Collects the wrappers that ended (they are our children while this sweeper lives).
  void reap() {
    for (auto it = children_.begin(); it != children_.end();) {
      if (waitpid(*it, nullptr, WNOHANG) != 0) it = children_.erase(it);
      else ++it;
    }
  }

  std::string jobs_dir_;
  std::vector<pid_t> children_;
};

}  // namespace

std::unique_ptr<TrialBackend> make_local_backend(const std::string& jobs_dir) {
  return std::make_unique<LocalBackend>(jobs_dir);
}

}  // namespace tessera::tuning
