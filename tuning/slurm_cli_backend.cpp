// The Slurm backend over its command-line tools: `sbatch --parsable` to submit,
// `scontrol show job` to ask (it keeps an ended job for MinJobAge seconds), `scancel` to
// stop, `squeue --name` and `scontrol` to find a job by name. For clusters whose libslurm does not
// match this build; slurm_api_backend.cpp does the same through the C API.
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "base/error.h"
#include "tuning/slurm_common.h"
#include "tuning/trial_backend.h"

namespace tessera::tuning {
namespace {

struct CommandResult {
  int exit_code = -1;   // -1: it did not finish within the time limit (killed)
  std::string out;      // stdout
  std::string err;      // stderr
  std::string said() const { return err.empty() ? out : err; }
};

// Runs a program (no shell) and returns its exit code, stdout and stderr apart (sbatch's
// warnings must not be read as its job id). A program that runs longer than `seconds`
// (a hung controller or file system) is killed: exit_code -1.
CommandResult run_program(const std::vector<std::string>& argv, int seconds = 60) {
  std::vector<char*> args;  // built before fork: the child only calls exec
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  FILE* err = std::tmpfile();
  int pipefd[2];
  if (!err || pipe2(pipefd, O_CLOEXEC) != 0) {
    if (err) std::fclose(err);
    throw Error(std::string("cannot run ") + argv[0] + ": " + std::strerror(errno));
  }
  const pid_t pid = fork();
  if (pid < 0) {
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    std::fclose(err);
    throw Error(std::string("fork failed: ") + std::strerror(errno));
  }
  if (pid == 0) {
    dup2(pipefd[1], 1);
    dup2(fileno(err), 2);
    execvp(args[0], args.data());
    _exit(127);
  }
  ::close(pipefd[1]);
  CommandResult r;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  std::array<char, 4096> buf;
  bool timed_out = false;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd pfd{pipefd[0], POLLIN, 0};
    if (left.count() <= 0 || ::poll(&pfd, 1, (int)left.count()) == 0) {
      timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    const ssize_t n = ::read(pipefd[0], buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    r.out.append(buf.data(), (size_t)n);
  }
  ::close(pipefd[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::rewind(err);
  for (int c; (c = std::fgetc(err)) != EOF;) r.err.push_back((char)c);
  std::fclose(err);
  r.exit_code = timed_out ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (timed_out) r.err = argv[0] + std::string(" did not answer within ") + std::to_string(seconds) + " s";
  return r;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// `KEY=value` of a `scontrol -o show job` line ("JobState=COMPLETED ... ExitCode=0:0").
std::string field(const std::string& line, const std::string& key) {
  for (size_t at = line.find(key + "="); at != std::string::npos; at = line.find(key + "=", at + 1)) {
    if (at > 0 && line[at - 1] != ' ') continue;  // "ArrayJobId=" is not "JobId="
    const size_t start = at + key.size() + 1;
    return line.substr(start, line.find_first_of(" \n", start) - start);
  }
  return "";
}

class SlurmCliBackend : public TrialBackend {
 public:
  explicit SlurmCliBackend(std::string partition) : partition_(std::move(partition)) {
    check_slurm_config("cli");
    const CommandResult r = run_program({"sinfo", "-h", "-o", "%P"});
    if (r.exit_code != 0)
      throw Error("slurm backend (cli): `sinfo` does not answer (" + trim(r.said()) +
                  "); is Slurm installed and SLURM_CONF set? Nothing was submitted");
  }
  std::string name() const override { return "slurm (sbatch/squeue/scancel)"; }

  std::string submit(const TrialLaunch& launch) override {
    const SlurmJobScript job = slurm_job_script(launch);
    std::vector<std::string> argv = {"sbatch", "--parsable", "--job-name=" + launch.job_name,
                                     "--output=" + launch.output_path(), "--open-mode=append",
                                     "--chdir=" + launch.work_dir, "--nodes=1",
                                     "--ntasks=" + std::to_string(launch.ntasks),
                                     "--cpus-per-task=" + std::to_string(launch.cpus_per_task),
                                     "--export=" + job.export_list};
    if (launch.time_limit_minutes > 0) argv.push_back("--time=" + std::to_string(launch.time_limit_minutes));
    if (!partition_.empty()) argv.push_back("--partition=" + partition_);
    argv.push_back(job.script_path);
    argv.insert(argv.end(), job.script_args.begin(), job.script_args.end());
    const CommandResult r = run_program(argv);
    // --parsable prints "id[;cluster]" as the last line of stdout.
    const std::string out = trim(r.out);
    const std::string last = out.substr(out.find_last_of('\n') == std::string::npos ? 0 : out.find_last_of('\n') + 1);
    const std::string id = last.substr(0, last.find(';'));
    if (r.exit_code != 0 || id.empty() || id.find_first_not_of("0123456789") != std::string::npos)
      throw Error("sbatch refused trial " + launch.job_name + ": " + trim(r.said()));
    return id;
  }

  JobStatus query(const std::string& job_id) override {
    const CommandResult r = run_program({"scontrol", "-o", "show", "job", job_id});
    JobStatus s;
    if (r.exit_code != 0) {
      // "Invalid job id specified": Slurm forgot it (unknown); anything else: not asked.
      s.detail = trim(r.said());
      if (s.detail.find("Invalid job id") == std::string::npos) s.state = JobState::unreachable;
      return s;
    }
    const std::string state = field(r.out, "JobState");
    const std::string exit = field(r.out, "ExitCode");  // "code:signal"
    s.exit_code = std::atoi(exit.c_str());
    const int signal = exit.find(':') != std::string::npos ? std::atoi(exit.c_str() + exit.find(':') + 1) : 0;
    if (signal != 0 && s.exit_code == 0) s.exit_code = 128 + signal;
    s.state = job_state_from_slurm(state);
    s.detail = state + " " + field(r.out, "Reason");
    return s;
  }

  void cancel(const std::string& job_id) override { run_program({"scancel", job_id}); }

  std::optional<std::string> find(const std::string& job_name, const std::string& trial_dir) override {
    const CommandResult r = run_program({"squeue", "-h", "--name=" + job_name, "-o", "%i"});
    if (r.exit_code != 0) throw Error("squeue does not answer: " + trim(r.said()));
    const std::string id = trim(r.out);
    if (!id.empty() && id.find('\n') == std::string::npos) return id;
    // An ended job is no longer in squeue: scontrol still knows it for MinJobAge.
    const CommandResult all = run_program({"scontrol", "-o", "show", "job"});
    if (all.exit_code != 0) throw Error("scontrol does not answer: " + trim(all.said()));
    std::istringstream lines(all.out);
    for (std::string line; std::getline(lines, line);)
      if (field(line, "JobName") == job_name) return field(line, "JobId");
    return job_id_from_output(trial_dir, job_name);
  }

 private:
  std::string partition_;
};

}  // namespace

std::unique_ptr<TrialBackend> make_slurm_cli_backend(const std::string& partition) {
  return std::make_unique<SlurmCliBackend>(partition);
}

}  // namespace tessera::tuning
