// Test helper: run the real `tessera` binary (or mpirun) as a child process and collect
// how it ended, its stdout and its stderr; plus what the tests that run it share: the
// tiny model their recipes train, the `tessera train` command line, the one-line error
// they expect, and reading back run.jsonl. Temporary directories, text files and token
// shards come from tests/unit/test_support.h.
//
// Header-only so that tests/unit/*.cpp can include it without a new library target.
// Used by tests/unit/test_cli_errors.cpp and tests/unit/test_trainer.cpp.
#pragma once
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/unit/test_support.h"

extern char** environ;

namespace tessera::test_support {

struct ProcessResult {
  bool exited = false;     // WIFEXITED
  int exit_code = -1;      // WEXITSTATUS when exited
  int signal = 0;          // WTERMSIG when killed by a signal
  bool timed_out = false;  // we killed it after the timeout
  double seconds = 0;
  std::string out, err;

  // Non-empty lines of stderr.
  std::vector<std::string> err_lines() const {
    std::vector<std::string> lines;
    std::istringstream in(err);
    for (std::string line; std::getline(in, line);)
      if (line.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(line);
    return lines;
  }
  // For failure messages.
  std::string describe() const {
    std::ostringstream s;
    s << "exited=" << exited << " code=" << exit_code << " signal=" << signal
      << " timed_out=" << timed_out << " (" << seconds << " s)\n--- stdout ---\n"
      << out << "--- stderr ---\n" << err << "--------------";
    return s.str();
  }
};

// Runs argv[0] (a path, not searched unless it has no '/': then PATH is searched) with
// OMP_NUM_THREADS=1 added to the environment, in `workdir` if given. stdout and stderr
// go to separate files and are read back. The child runs in its own process group, which
// is killed with SIGKILL after `timeout_s` (mpirun and its ranks with it).
inline ProcessResult run_process(const std::vector<std::string>& argv,
                                 const std::string& workdir = "", double timeout_s = 60,
                                 const std::vector<std::string>& extra_env = {}) {
  namespace fs = std::filesystem;
  static int counter = 0;
  const fs::path capture = fs::path(::testing::TempDir()) /
                           ("tessera_proc_" + std::to_string(::getpid()) + "_" +
                            std::to_string(counter++));
  const std::string out_path = capture.string() + ".out", err_path = capture.string() + ".err";

  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "OMP_NUM_THREADS=", 16) != 0) env_strings.emplace_back(*e);
  env_strings.emplace_back("OMP_NUM_THREADS=1");
  for (const auto& e : extra_env) env_strings.push_back(e);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (auto& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  if (!workdir.empty()) posix_spawn_file_actions_addchdir_np(&actions, workdir.c_str());
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);

  ProcessResult r;
  const auto t0 = std::chrono::steady_clock::now();
  pid_t pid = -1;
  const int rc = args[0].find('/') == std::string::npos
                     ? posix_spawnp(&pid, args[0].c_str(), &actions, &attr, cargv.data(),
                                    envp.data())
                     : posix_spawn(&pid, args[0].c_str(), &actions, &attr, cargv.data(),
                                   envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw std::runtime_error("cannot spawn " + args[0] + ": " + std::strerror(rc));

  int status = 0;
  for (;;) {
    const pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) throw std::runtime_error("waitpid failed");
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (elapsed > timeout_s && !r.timed_out) {
      r.timed_out = true;
      ::kill(-pid, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // Whatever the group left behind (mpirun's ranks after a timeout) goes too.
  if (r.timed_out) ::kill(-pid, SIGKILL);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.exited = WIFEXITED(status);
  r.exit_code = r.exited ? WEXITSTATUS(status) : -1;
  r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  r.out = read_text(out_path);
  r.err = read_text(err_path);
  std::error_code ec;
  fs::remove(out_path, ec);
  fs::remove(err_path, ec);
  return r;
}

// `tessera ARGS...`: the binary the build made.
inline ProcessResult run_tessera(const std::vector<std::string>& args,
                                 const std::string& workdir = "", double timeout_s = 60) {
  std::vector<std::string> argv = {TESSERA_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv, workdir, timeout_s);
}

// `tessera train RECIPE --set S1 --set S2 ...`, without the program name.
inline std::vector<std::string> train_args(const std::string& recipe,
                                           const std::vector<std::string>& sets = {}) {
  std::vector<std::string> args = {"train", recipe};
  for (const auto& s : sets) args.insert(args.end(), {"--set", s});
  return args;
}

// The model section of the recipes the tests train: 1 layer, 32 wide, a byte vocabulary
// and 32-token windows, small enough that a run takes about a second.
inline std::string tiny_model_yaml() {
  return "model:\n"
         "  n_layer: 1\n"
         "  n_head: 2\n"
         "  n_embd: 32\n"
         "  vocab_size: 256\n"
         "  seq_len: 32\n";
}

// A model for the tool tests to read: byte shards in <dir>/data of one sentence repeated
// 200 times, and the tiny model trained on them for 150 steps (enough for a greedy
// continuation that is not one byte repeated) into <dir>/ckpt, logging to <dir>/runs,
// with a final greedy sample of sample_tokens. The result of `data prepare` if that
// failed, else of `train`.
inline ProcessResult train_sentence_model(const std::string& dir, int sample_tokens = 0) {
  std::string text;
  for (int i = 0; i < 200; ++i) text += "a stitch in time saves nine, said the tailor. ";
  std::ofstream(dir + "/corpus.txt", std::ios::binary) << text;
  const ProcessResult prep = run_tessera({"data", "prepare", "--input", dir + "/corpus.txt",
                                          "--out", dir + "/data", "--tokenizer", "bytes"});
  if (!prep.exited || prep.exit_code != 0) return prep;
  std::ofstream(dir + "/recipe.yaml", std::ios::binary)
      << tiny_model_yaml() << "data:\n  train: " << dir << "/data/train_*.bin\n"
      << "train:\n  steps: 150\n  global_batch: 4\n  micro_batch: 2\n"
      << "  sample_tokens: " << sample_tokens << "\n"
      << "optim:\n  lr: 3.0e-2\n  warmup_steps: 0\n"
      << "checkpoint:\n  dir: " << dir << "/ckpt\n" << "log:\n  dir: " << dir << "/runs\n";
  return run_tessera(train_args(dir + "/recipe.yaml"), dir, 120);
}

// How `tessera` refuses bad input: exit code 2 and exactly one non-empty stderr line,
// which starts "tessera: error: " and contains every string of `needles`.
inline ::testing::AssertionResult one_error_line(const ProcessResult& r,
                                                 const std::vector<std::string>& needles) {
  if (!r.exited)
    return ::testing::AssertionFailure() << "did not exit normally\n" << r.describe();
  if (r.exit_code != 2)
    return ::testing::AssertionFailure() << "exit code " << r.exit_code << ", expected 2\n"
                                         << r.describe();
  const auto lines = r.err_lines();
  if (lines.size() != 1)
    return ::testing::AssertionFailure() << lines.size()
                                         << " non-empty stderr lines, expected exactly 1\n"
                                         << r.describe();
  const std::string& line = lines[0];
  if (line.rfind("tessera: error: ", 0) != 0)
    return ::testing::AssertionFailure() << "stderr does not start with 'tessera: error: '\n"
                                         << r.describe();
  for (const auto& needle : needles)
    if (line.find(needle) == std::string::npos)
      return ::testing::AssertionFailure() << "the message does not contain '" << needle
                                           << "'\n" << r.describe();
  return ::testing::AssertionSuccess();
}

// The events of a run.jsonl, in order. Fails (throws) on a line that is not JSON.
inline std::vector<nlohmann::json> read_run_log(const std::string& path) {
  std::vector<nlohmann::json> events;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open run log " + path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) events.push_back(nlohmann::json::parse(line));
  return events;
}

// The run.jsonl of the one run under log_dir ("" if there is none or more than one).
inline std::string only_run_log(const std::string& log_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(log_dir, ec)) return "";
  std::string found;
  int runs = 0;
  for (const auto& entry : fs::directory_iterator(log_dir)) {
    if (!entry.is_directory()) continue;
    ++runs;
    found = (entry.path() / "run.jsonl").string();
  }
  return runs == 1 && fs::exists(found) ? found : "";
}

inline std::vector<nlohmann::json> events_named(const std::vector<nlohmann::json>& events,
                                                const std::string& name) {
  std::vector<nlohmann::json> out;
  for (const auto& e : events)
    if (e.value("event", "") == name) out.push_back(e);
  return out;
}

// The loss of every metric line, in order.
inline std::vector<double> metric_losses(const std::vector<nlohmann::json>& events) {
  std::vector<double> losses;
  for (const auto& e : events_named(events, "metric")) losses.push_back(e.at("loss").get<double>());
  return losses;
}

}  // namespace tessera::test_support
