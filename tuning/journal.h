// The sweep's journal: `<sweep dir>/journal.jsonl`, append-only, one JSON object per
// line, each written with fsync before the sweeper acts on it. It is the sweep's only
// state: replaying it gives every trial's parameters, attempts, job ids, rung decisions
// and results, so a sweeper killed at any moment continues where it stopped. A person
// can read it (docs/sweeps.md lists the events); no database, no lock on a shared file
// system beyond the sweeper's own lock file (tuning/sweep_lock.h).
//
// Events (field "event"):
//   sweeper_start   {pid, host, spec_sha256}            a sweeper (re)started
//   trial_created   {trial, params}                     sampled, before anything runs
//   trial_submitting{trial, attempt, job_name}          about to submit (intent)
//   trial_submitted {trial, attempt, job_id}            the backend took it
//   rung            {trial, rung, resource, step, value, competing, promoted}
//   trial_stopping  {trial, reason}                     pruned: the job is being cancelled
//   trial_retry     {trial, attempt, exit_code, reason, log_tail}  failed, run again
//   trial_end       {trial, attempt, state, objective, steps, exit_code, reason, log_tail}
//   sweep_end       {best_trial, objective, trials, steps_run, steps_full, cancelled}
// trial_end's state is completed, pruned, failed or cancelled (`tessera sweep cancel`).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tessera::tuning {

// Appends one event (adding "time") and fsyncs the file. Throws tessera::Error naming
// the file when it cannot write.
class Journal {
 public:
  explicit Journal(const std::string& path);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;
  void append(nlohmann::ordered_json event);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// Every complete line of a journal (a line cut short by a crash is ignored; a malformed
// complete line is an error naming the file and line).
std::vector<nlohmann::json> read_journal(const std::string& path);

enum class TrialState { created, submitting, queued, stopping, completed, pruned, failed, cancelled };
const char* to_string(TrialState s);
bool finished(TrialState s);  // completed, pruned, failed or cancelled

struct RungDecision {
  int rung = 0;
  int64_t resource = 0;     // the rung's step count
  int64_t step = 0;         // the logged step whose value was used (first >= resource)
  double value = 0;
  std::vector<double> competing;  // values of earlier trials at this rung
  bool promoted = false;
};

struct TrialRecord {
  int id = 0;
  nlohmann::json params;           // key -> value
  TrialState state = TrialState::created;
  int attempt = 0;                 // 0 = first run; retries count up
  std::string job_name;            // of the current attempt
  std::string job_id;              // of the current attempt ("" = not submitted)
  std::vector<std::string> job_ids;  // of every attempt
  std::vector<RungDecision> rungs;
  std::string stop_reason;         // why it was pruned or failed
  std::optional<double> objective;
  int64_t steps = 0;               // steps run (the last logged step)
  int exit_code = 0;
  std::string log_tail;
};

struct SweepState {
  std::vector<TrialRecord> trials;  // by id, 0..n-1
  int sweeper_starts = 0;
  bool ended = false;
  // The best finished trial with an objective (completed first, then pruned ones are not
  // considered), or nullptr.
  const TrialRecord* best(bool maximize) const;
};

// Folds one event into the state (events of later versions are ignored).
void apply_event(SweepState& state, const nlohmann::json& event);
// Folds a journal's events into the state of every trial.
SweepState replay(const std::vector<nlohmann::json>& events);

}  // namespace tessera::tuning
