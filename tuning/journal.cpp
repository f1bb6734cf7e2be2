// The sweep journal: append + fsync, read back up to the last complete line, and replay
// into the state of every trial (tuning/journal.h lists the events).
#include "tuning/journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>

#include "base/error.h"
#include "framework/runlog/run_log.h"

namespace tessera::tuning {

Journal::Journal(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(path + ": cannot open the sweep journal: " + std::strerror(errno));
  // A line cut short by a crash (or a full disk) was never acted on: cut it off, or the
  // next event appended to it would make one malformed line of the two.
  const off_t size = ::lseek(fd_, 0, SEEK_END);
  off_t keep = size;
  char c = 0;
  while (keep > 0 && ::pread(fd_, &c, 1, keep - 1) == 1 && c != '\n') keep--;
  if (keep != size && ::ftruncate(fd_, keep) != 0)
    throw Error(path + ": cannot cut the unfinished last line of the sweep journal: " + std::strerror(errno));
}

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);
}

void Journal::append(nlohmann::ordered_json event) {
  nlohmann::ordered_json line;
  line["event"] = event["event"];
  line["time"] = utc_timestamp();
  for (auto it = event.begin(); it != event.end(); ++it)
    if (it.key() != "event") line[it.key()] = it.value();
  // One write of the whole line (O_APPEND keeps it in one piece), then fsync: the sweeper
  // acts on an event only after it is on disk, so a crash never loses a decision taken.
  const std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd_, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(path_ + ": cannot append to the sweep journal: " + std::strerror(errno));
    done += (size_t)n;
  }
  if (::fsync(fd_) != 0) throw Error(path_ + ": fsync of the sweep journal failed: " + std::strerror(errno));
}

std::vector<nlohmann::json> read_journal(const std::string& path) {
  std::vector<nlohmann::json> events;
  std::ifstream in(path, std::ios::binary);
  if (!in) return events;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t start = 0;
  int line_no = 0;
  while (true) {
    const size_t end = text.find('\n', start);
    if (end == std::string::npos) break;  // a last line without '\n' was cut short: ignore it
    line_no++;
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.empty()) continue;
    try {
      events.push_back(nlohmann::json::parse(line));
    } catch (const nlohmann::json::exception& e) {
      throw Error(path + ":" + std::to_string(line_no) + ": not a JSON object: " + e.what());
    }
  }
  return events;
}

const char* to_string(TrialState s) {
  switch (s) {
    case TrialState::created: return "created";
    case TrialState::submitting: return "submitting";
    case TrialState::queued: return "running";
    case TrialState::stopping: return "stopping";
    case TrialState::completed: return "completed";
    case TrialState::pruned: return "pruned";
    case TrialState::failed: return "failed";
    case TrialState::cancelled: return "cancelled";
  }
  return "?";
}

bool finished(TrialState s) {
  return s == TrialState::completed || s == TrialState::pruned || s == TrialState::failed ||
         s == TrialState::cancelled;
}

const TrialRecord* SweepState::best(bool maximize) const {
  const TrialRecord* best = nullptr;
  for (const TrialRecord& t : trials) {
    if (t.state != TrialState::completed || !t.objective) continue;
    if (!best || (maximize ? *t.objective > *best->objective : *t.objective < *best->objective))
      best = &t;
  }
  return best;
}

namespace {

TrialRecord& trial_of(SweepState& state, const nlohmann::json& e) {
  const int id = e.at("trial").get<int>();
  if (id < 0 || id >= (int)state.trials.size())
    throw Error("sweep journal: event '" + e.value("event", "") + "' names trial " +
                std::to_string(id) + ", which was never created");
  return state.trials[(size_t)id];
}

}  // namespace

void apply_event(SweepState& state, const nlohmann::json& e) {
  const std::string kind = e.value("event", "");
  if (kind == "sweeper_start") {
    state.sweeper_starts++;
  } else if (kind == "trial_created") {
    TrialRecord t;
    t.id = e.at("trial").get<int>();
    if (t.id != (int)state.trials.size())
      throw Error("sweep journal: trial " + std::to_string(t.id) + " created out of order");
    t.params = e.at("params");
    state.trials.push_back(std::move(t));
  } else if (kind == "trial_submitting") {
    TrialRecord& t = trial_of(state, e);
    t.state = TrialState::submitting;
    t.attempt = e.at("attempt").get<int>();
    t.job_name = e.at("job_name").get<std::string>();
    t.job_id.clear();
  } else if (kind == "trial_submitted") {
    TrialRecord& t = trial_of(state, e);
    t.state = TrialState::queued;
    t.job_id = e.at("job_id").get<std::string>();
    t.job_ids.push_back(t.job_id);
  } else if (kind == "rung") {
    TrialRecord& t = trial_of(state, e);
    RungDecision d;
    d.rung = e.at("rung").get<int>();
    d.resource = e.at("resource").get<int64_t>();
    d.step = e.at("step").get<int64_t>();
    // A NaN value is written as null (JSON has no NaN); it is never promoted.
    d.value = e.at("value").is_null() ? std::nan("") : e.at("value").get<double>();
    for (const auto& v : e.at("competing"))
      if (v.is_number()) d.competing.push_back(v.get<double>());
    d.promoted = e.at("promoted").get<bool>();
    // A rung that stops the trial is its stop decision: were the sweeper killed before
    // journaling trial_stopping, the restart still cancels the trial.
    if (!d.promoted && !finished(t.state)) {
      t.state = TrialState::stopping;
      t.stop_reason = "ASHA: not promoted at rung " + std::to_string(d.rung);
    }
    t.rungs.push_back(std::move(d));
  } else if (kind == "trial_stopping") {
    TrialRecord& t = trial_of(state, e);
    t.state = TrialState::stopping;
    t.stop_reason = e.value("reason", "");
  } else if (kind == "trial_end") {
    TrialRecord& t = trial_of(state, e);
    const std::string s = e.at("state").get<std::string>();
    t.state = s == "completed"   ? TrialState::completed
              : s == "pruned"    ? TrialState::pruned
              : s == "cancelled" ? TrialState::cancelled
                                 : TrialState::failed;
    if (e.contains("objective") && e["objective"].is_number()) t.objective = e["objective"].get<double>();
    t.steps = e.value("steps", (int64_t)0);
    t.exit_code = e.value("exit_code", 0);
    if (s != "pruned" || t.stop_reason.empty()) t.stop_reason = e.value("reason", "");
    t.log_tail = e.value("log_tail", "");
  } else if (kind == "trial_retry") {
    TrialRecord& t = trial_of(state, e);
    t.state = TrialState::created;
    t.stop_reason = e.value("reason", "");
  } else if (kind == "sweep_end") {
    state.ended = true;
  }
  // Other events (added by later versions) are ignored.
}

SweepState replay(const std::vector<nlohmann::json>& events) {
  SweepState state;
  for (const auto& e : events) {
    try {
      apply_event(state, e);
    } catch (const nlohmann::json::exception& ex) {
      throw Error("sweep journal: event " + e.dump() + " is missing a field: " + ex.what());
    }
  }
  return state;
}

}  // namespace tessera::tuning
