// The sweep loop (tuning/sweeper.h says what it does; docs/sweeps.md how to use it).
#include "tuning/sweeper.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "base/error.h"
#include "base/rng.h"
#include "framework/data/sha256.h"
#include "framework/recipe/recipe.h"
#include "tuning/asha.h"
#include "tuning/report.h"
#include "tuning/samplers.h"
#include "tuning/sweep_lock.h"
#include "tuning/trial_backend.h"
#include "tuning/trial_metrics.h"

namespace tessera::tuning {
namespace fs = std::filesystem;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string this_host() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

std::string trial_dir(const std::string& sweep_dir, int id) {
  return sweep_dir + "/trials/" + std::to_string(id);
}

// Fault injection for the crash tests: TESSERA_TEST_SWEEP_CRASH=<point>:<n> kills the
// sweeper with SIGKILL the n-th time it passes <point> (1-based).
void crash_point(const char* point) {
  static const char* spec = std::getenv("TESSERA_TEST_SWEEP_CRASH");
  static std::map<std::string, int> hits;
  if (!spec) return;
  const std::string s = spec;
  const size_t colon = s.find(':');
  if (s.substr(0, colon) != point) return;
  if (++hits[point] == (colon == std::string::npos ? 1 : std::atoi(s.c_str() + colon + 1)))
    std::raise(SIGKILL);
}

// The last lines of a trial's newest output file (the job's output or its training log).
std::string log_tail(const std::string& dir, size_t max_lines = 12) {
  fs::path newest;
  fs::file_time_type newest_time{};
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string ext = entry.path().extension().string();
    if (ext != ".out" && ext != ".log") continue;
    if (newest.empty() || entry.last_write_time(ec) > newest_time) {
      newest = entry.path();
      newest_time = entry.last_write_time(ec);
    }
  }
  if (newest.empty()) return "";
  std::vector<std::string> lines;
  std::istringstream text(read_text(newest.string()));
  for (std::string line; std::getline(text, line);) lines.push_back(line);
  std::string out;
  for (size_t i = lines.size() > max_lines ? lines.size() - max_lines : 0; i < lines.size(); i++)
    out += lines[i] + "\n";
  return out.size() > 4000 ? out.substr(out.size() - 4000) : out;
}

std::string params_text(const nlohmann::json& params) {
  std::string out;
  for (auto it = params.begin(); it != params.end(); ++it)
    out += (out.empty() ? "" : " ") + it.key() + "=" + (it->is_string() ? it->get<std::string>() : it->dump());
  return out;
}

std::string number(double v) {
  std::ostringstream s;
  s.precision(6);
  s << v;
  return s.str();
}

}  // namespace

SweepHandle open_sweep(const std::string& file_or_dir) {
  SweepHandle h;
  std::error_code ec;
  if (fs::is_directory(file_or_dir, ec)) {
    h.dir = fs::absolute(file_or_dir).lexically_normal().string();
    const std::string copy = h.dir + "/sweep.yaml";
    check(fs::exists(copy), file_or_dir + ": not a sweep directory (it has no sweep.yaml)");
    // The directory the sweep was started from, recorded by its first sweeper.
    for (const auto& e : read_journal(h.dir + "/journal.jsonl"))
      if (e.value("event", "") == "sweeper_start") {
        h.work_dir = e.value("work_dir", "");
        break;
      }
    check(!h.work_dir.empty(), h.dir + "/journal.jsonl: no sweeper_start event says where the sweep started");
    h.spec = parse_sweep(read_text(copy), copy);
    // Relative paths of the sweep file resolve against where the sweep was started.
    h.spec.recipe = (fs::path(h.work_dir) / h.spec.recipe).lexically_normal().string();
    h.spec.dir = h.dir;
    return h;
  }
  h.spec = load_sweep(file_or_dir);
  h.work_dir = fs::current_path().string();
  h.dir = fs::absolute(h.spec.dir).lexically_normal().string();
  h.spec.dir = h.dir;
  h.spec.recipe = fs::absolute(h.spec.recipe).lexically_normal().string();
  return h;
}

namespace {

class SweepRun {
 public:
  SweepRun(const SweepHandle& sweep, const SweepOptions& options)
      : sweep_(sweep), spec_(sweep.spec), options_(options), journal_(sweep.dir + "/journal.jsonl") {
    state_ = replay(read_journal(journal_.path()));
  }

  void start(const std::string& spec_text) {
    const std::string sha = sha256_hex(spec_text);
    for (const auto& e : read_journal(journal_.path()))
      if (e.value("event", "") == "sweeper_start" && e.value("spec_sha256", "") != sha)
        throw Error(sweep_.dir + ": the sweep file changed since this sweep started (" + spec_.source +
                    "); start the changed sweep in a new directory (key dir:)");
    journal_.append({{"event", "sweeper_start"}, {"pid", (int64_t)getpid()}, {"host", this_host()},
                     {"spec_sha256", sha}, {"work_dir", sweep_.work_dir}, {"backend", backend_->name()}});
  }

  void set_backend(std::unique_ptr<TrialBackend> backend) { backend_ = std::move(backend); }
  void set_sampler(std::unique_ptr<Sampler> sampler) { sampler_ = std::move(sampler); }
  SweepState& state() { return state_; }

  // Attempts that were being submitted when a sweeper died: found by name if the
  // submission went through, submitted again if the backend says it did not (and left
  // for the next pass if it cannot tell). Trials being stopped are asked again (cancel is
  // idempotent).
  void reattach() {
    for (size_t i = 0; i < state_.trials.size(); i++) {
      const TrialRecord& t = state_.trials[i];
      if (t.state == TrialState::submitting) {
        resolve_submitting((int)i);
      } else if (t.state == TrialState::stopping) {
        backend_->cancel(t.job_id);
      } else if (t.state == TrialState::queued) {
        options_.say("trial " + std::to_string(t.id) + ": re-attached to job " + t.job_id);
      }
    }
  }

  // One pass: watch every active trial, then create and submit what the limits allow.
  // Returns false when the sweep is over.
  bool step() {
    // By index: recording an event may grow the vector of trials.
    for (size_t i = 0; i < state_.trials.size(); i++) {
      const TrialState s = state_.trials[i].state;
      if (s == TrialState::submitting) resolve_submitting((int)i);
      else if (s == TrialState::queued || s == TrialState::stopping) watch((int)i);
    }
    create_trials();
    submit_trials();
    for (const TrialRecord& t : state_.trials)
      if (!finished(t.state)) return true;
    return !no_more_trials_;
  }

  void cancel_all(const std::string& reason) {
    for (size_t i = 0; i < state_.trials.size(); i++) {
      const TrialRecord t = state_.trials[i];
      if (finished(t.state)) continue;
      if (t.state == TrialState::submitting) resolve_submitting((int)i);  // a job it may have
      const TrialRecord& now = state_.trials[i];
      if (!now.job_id.empty() && now.state != TrialState::created) backend_->cancel(now.job_id);
      const TrialMetrics m = read_trial_metrics(trial_dir(sweep_.dir, t.id));
      record({{"event", "trial_end"}, {"trial", t.id}, {"attempt", t.attempt}, {"state", "cancelled"},
              {"steps", m.last_step}, {"reason", reason}});
    }
    record({{"event", "sweep_end"}, {"cancelled", true}});
  }

  void finish(const ComputeSpent& spent) {
    nlohmann::ordered_json end = {{"event", "sweep_end"}, {"trials", (int64_t)state_.trials.size()},
                                  {"steps_run", spent.steps_run}, {"steps_full", spent.steps_full},
                                  {"cancelled", false}};
    if (const TrialRecord* best = state_.best(spec_.objective.maximize)) {
      end["best_trial"] = best->id;
      end["objective"] = *best->objective;
    }
    record(end);
  }

 private:
  // Journals an event, then applies it to the state: the journal is always ahead.
  void record(const nlohmann::ordered_json& event) {
    journal_.append(event);
    try {
      apply_event(state_, nlohmann::json::parse(event.dump()));
    } catch (const nlohmann::json::exception& e) {
      throw Error("sweep journal: event " + event.dump() + " is missing a field: " + e.what());
    }
  }

  void resolve_submitting(int id) {
    TrialRecord& t = state_.trials[(size_t)id];
    std::optional<std::string> job;
    try {
      job = backend_->find(t.job_name, trial_dir(sweep_.dir, id));
    } catch (const Error& e) {
      options_.say("trial " + std::to_string(id) + ": cannot tell yet whether job " + t.job_name +
                   " was submitted (" + e.what() + "); asking again");
      return;
    }
    if (!job) {
      t.state = TrialState::created;  // never reached the backend: submit it again
      return;
    }
    record({{"event", "trial_submitted"}, {"trial", id}, {"attempt", t.attempt}, {"job_id", *job},
            {"reattached", true}});
    options_.say("trial " + std::to_string(id) + ": re-attached to job " + *job);
  }

  // The job's state first, then its run logs once: a rung logged just before the job
  // ended is still decided before the end is recorded.
  void watch(int id) {
    const JobStatus status = backend_->query(state_.trials[(size_t)id].job_id);
    if (status.state == JobState::unreachable) return;  // ask again at the next pass
    const TrialMetrics metrics = read_trial_metrics(trial_dir(sweep_.dir, id));
    if (state_.trials[(size_t)id].state == TrialState::queued) decide_rungs(id, metrics);
    const bool ended = status.state == JobState::completed || status.state == JobState::failed ||
                       status.state == JobState::cancelled || status.state == JobState::unknown;
    if (ended) end_attempt(id, status, metrics);
  }

  void decide_rungs(int id, const TrialMetrics& metrics) {
    const MetricSeries* series = metrics.find(spec_.objective.metric);
    if (!series) return;
    while (auto d = next_rung_decision(spec_.scheduler, spec_.objective, state_.trials[(size_t)id], *series, state_)) {
      record({{"event", "rung"}, {"trial", id}, {"rung", d->rung}, {"resource", d->resource},
              {"step", d->step}, {"value", d->value}, {"competing", d->competing}, {"promoted", d->promoted}});
      crash_point("after_rung");
      options_.say("trial " + std::to_string(id) + ": rung " + std::to_string(d->rung) + " (step " +
                   std::to_string(d->step) + ") " + spec_.objective.metric + " " + number(d->value) +
                   (d->promoted ? ": promoted" : ": stopped"));
      if (!d->promoted) {
        crash_point("after_prune_decision");
        const std::string reason = "ASHA: rung " + std::to_string(d->rung) + " at step " +
                                   std::to_string(d->step) + ", " + spec_.objective.metric + " " +
                                   number(d->value) + " not in the best 1/" +
                                   std::to_string(spec_.scheduler.reduction_factor) + " of " +
                                   std::to_string(d->competing.size() + 1);
        record({{"event", "trial_stopping"}, {"trial", id}, {"reason", reason}});
        crash_point("after_stopping");
        backend_->cancel(state_.trials[(size_t)id].job_id);
        return;
      }
    }
  }

  void end_attempt(int id, const JobStatus& status, const TrialMetrics& metrics) {
    const TrialRecord& t = state_.trials[(size_t)id];
    const MetricSeries* series = metrics.find(spec_.objective.metric);
    std::optional<double> objective;
    if (series && !series->empty()) objective = series->rbegin()->second;
    nlohmann::ordered_json end = {{"event", "trial_end"}, {"trial", id}, {"attempt", t.attempt}};
    // A job the backend forgot (Slurm keeps ended jobs for MinJobAge seconds) is judged
    // by its run log: a run that ended "ok" completed.
    bool ok = status.state == JobState::completed;
    if (status.state == JobState::unknown) ok = metrics.last_end && metrics.last_end->status == "ok";
    std::string reason;
    if (t.state == TrialState::stopping) {
      end["state"] = "pruned";
    } else if (ok && objective) {
      end["state"] = "completed";
    } else {
      reason = ok ? "the run log has no '" + spec_.objective.metric + "' (objective.metric)"
                  : "job " + t.job_id + " ended: " + std::string(to_string(status.state)) + ", exit code " +
                        std::to_string(status.exit_code) + (status.detail.empty() ? "" : " (" + status.detail + ")");
      if (t.attempt < spec_.trial.retries) {
        record({{"event", "trial_retry"}, {"trial", id}, {"attempt", t.attempt}, {"exit_code", status.exit_code},
                {"reason", reason}, {"log_tail", log_tail(trial_dir(sweep_.dir, id))}});
        options_.say("trial " + std::to_string(id) + ": failed (" + reason + "); retrying");
        return;
      }
      end["state"] = "failed";
    }
    if (objective) end["objective"] = *objective;
    end["steps"] = metrics.last_step;
    end["exit_code"] = status.exit_code;
    end["reason"] = reason;
    if (end["state"] == "failed") end["log_tail"] = log_tail(trial_dir(sweep_.dir, id));
    record(end);
    options_.say("trial " + std::to_string(id) + ": " + end["state"].get<std::string>() + " after " +
                 std::to_string(metrics.last_step) + " steps" +
                 (objective ? ", " + spec_.objective.metric + " " + number(*objective) : "") +
                 (reason.empty() ? "" : " (" + reason + ")"));
  }

  void create_trials() {
    int active = 0;
    for (const TrialRecord& t : state_.trials) active += !finished(t.state);
    while (active < spec_.max_concurrent && !no_more_trials_) {
      const int id = (int)state_.trials.size();
      if (id >= spec_.max_trials) {
        no_more_trials_ = true;
        break;
      }
      std::vector<Observation> history;
      for (const TrialRecord& t : state_.trials)
        history.push_back({t.params, t.state == TrialState::completed ? t.objective : std::nullopt,
                           t.state == TrialState::pruned});
      const std::optional<Assignment> params = sampler_->sample(id, history);
      if (!params) {
        no_more_trials_ = true;
        break;
      }
      record({{"event", "trial_created"}, {"trial", id}, {"params", *params}});
      crash_point("after_created");
      active++;
    }
  }

  void submit_trials() {
    for (size_t i = 0; i < state_.trials.size(); i++) {
      const TrialRecord& t = state_.trials[i];
      if (t.state != TrialState::created) continue;
      const int id = t.id;
      const nlohmann::json params = t.params;
      const int attempt = (int)t.job_ids.size();  // every earlier attempt got a job
      TrialLaunch launch;
      launch.job_name = job_name_prefix() + "-t" + std::to_string(id) + "-a" + std::to_string(attempt);
      launch.trial_dir = trial_dir(sweep_.dir, id);
      launch.tessera_train = spec_.trial.command.empty();
      launch.command = launch.tessera_train ? std::vector<std::string>{options_.tessera, "train"} : spec_.trial.command;
      launch.recipe = spec_.recipe;
      launch.overrides = trial_overrides(spec_, params, launch.trial_dir);
      launch.work_dir = sweep_.work_dir;
      launch.ntasks = spec_.trial.ntasks;
      launch.cpus_per_task = spec_.trial.cpus_per_task;
      launch.time_limit_minutes = spec_.trial.time_limit_minutes;
      fs::create_directories(launch.trial_dir);
      record({{"event", "trial_submitting"}, {"trial", id}, {"attempt", attempt}, {"job_name", launch.job_name}});
      crash_point("before_submit");
      std::string job_id;
      try {
        job_id = backend_->submit(launch);
      } catch (const Error& e) {
        // The trial stays `submitting`: a restart asks the backend whether the job exists
        // (a reply lost on the way) before it submits again.
        throw Error("trial " + std::to_string(id) + " was not submitted: " + e.what() +
                    ". The sweep stops here; run it again when the backend takes jobs");
      }
      crash_point("after_submit");
      record({{"event", "trial_submitted"}, {"trial", id}, {"attempt", attempt}, {"job_id", job_id}});
      options_.say("trial " + std::to_string(id) + ": job " + job_id + " (" + params_text(params) + ")");
    }
  }

  // The sweep's name and a hash of its directory: two sweeps of files with the same name
  // (or another user's) never share job names, which find() goes by.
  std::string job_name_prefix() const {
    char hash[16];
    std::snprintf(hash, sizeof hash, "%06llx", (unsigned long long)(fnv1a64(sweep_.dir) & 0xffffff));
    return spec_.name + "-" + hash;
  }

  const SweepHandle& sweep_;
  const SweepSpec& spec_;
  const SweepOptions& options_;
  Journal journal_;
  SweepState state_;
  std::unique_ptr<TrialBackend> backend_;
  std::unique_ptr<Sampler> sampler_;
  bool no_more_trials_ = false;
};

std::map<int, TrialMetrics> all_metrics(const SweepHandle& sweep, const SweepState& state) {
  std::map<int, TrialMetrics> out;
  for (const TrialRecord& t : state.trials) out[t.id] = read_trial_metrics(trial_dir(sweep.dir, t.id));
  return out;
}

std::string cancel_request_path(const SweepHandle& sweep) { return sweep.dir + "/cancel.request"; }

// The base recipe's train.steps after the fixed overrides (0 when it cannot be read), for
// the compute a sweep would have spent had every trial run to its end.
int64_t recipe_steps(const SweepHandle& sweep) {
  const std::string cwd = fs::current_path().string();
  int64_t steps = 0;
  try {
    fs::current_path(sweep.work_dir);
    steps = load_recipe(sweep.spec.recipe, sweep.spec.overrides).train.steps;
  } catch (const std::exception&) {
  }
  fs::current_path(cwd);
  return steps;
}

}  // namespace

int run_sweep(const SweepHandle& sweep, const SweepOptions& options) {
  // The backend first: a missing Slurm is refused before anything is written.
  std::unique_ptr<TrialBackend> backend = make_backend(sweep.spec, sweep.dir);
  fs::create_directories(sweep.dir);
  SweepLock lock(sweep.dir);
  const std::string copy = sweep.dir + "/sweep.yaml";
  const std::string spec_text = read_text(sweep.spec.source);  // compared with the journal's
  if (!fs::exists(copy)) std::ofstream(copy) << spec_text;
  SweepRun run(sweep, options);
  if (run.state().ended) {
    options.say("the sweep in " + sweep.dir + " has already ended: tessera sweep report " + sweep.dir);
    return run.state().best(sweep.spec.objective.maximize) ? 0 : 1;
  }
  run.set_backend(std::move(backend));
  run.set_sampler(make_sampler(sweep.spec));
  run.start(spec_text);
  run.reattach();
  const auto poll = std::chrono::milliseconds((int64_t)(sweep.spec.poll_seconds * 1000));
  while (true) {
    if (fs::exists(cancel_request_path(sweep))) {
      run.cancel_all("cancelled by tessera sweep cancel");
      fs::remove(cancel_request_path(sweep));
      options.say("sweep cancelled");
      return 1;
    }
    if (!run.step()) break;
    std::this_thread::sleep_for(poll);
  }
  run.finish(compute_spent(sweep.spec, run.state(), all_metrics(sweep, run.state()), recipe_steps(sweep)));
  options.say("report: " + sweep_report(sweep));
  return run.state().best(sweep.spec.objective.maximize) ? 0 : 1;
}

std::string sweep_status(const SweepHandle& sweep) {
  const SweepState state = replay(read_journal(sweep.dir + "/journal.jsonl"));
  return status_table(sweep.spec, state, all_metrics(sweep, state));
}

std::string sweep_report(const SweepHandle& sweep) {
  const SweepState state = replay(read_journal(sweep.dir + "/journal.jsonl"));
  return write_report(sweep.spec, state, all_metrics(sweep, state), sweep.dir, recipe_steps(sweep)).markdown;
}

void cancel_sweep(const SweepHandle& sweep, const SweepOptions& options) {
  if (sweeper_running(sweep.dir)) {
    std::ofstream(cancel_request_path(sweep)) << "cancel\n";
    options.say("asked the running sweeper to cancel; waiting for it to stop its trials");
    for (int i = 0; i < 600 && sweeper_running(sweep.dir); i++)
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    check(!sweeper_running(sweep.dir), sweep.dir + ": the sweeper did not stop within 5 minutes");
    if (replay(read_journal(sweep.dir + "/journal.jsonl")).ended) return;
    // The sweeper died before it could cancel: do it here.
    options.say("the sweeper ended without cancelling; cancelling its trials");
  }
  SweepLock lock(sweep.dir);
  SweepRun run(sweep, options);
  fs::remove(cancel_request_path(sweep));
  if (run.state().ended) {
    options.say("the sweep has already ended");
    return;
  }
  run.set_backend(make_backend(sweep.spec, sweep.dir));
  run.cancel_all("cancelled by tessera sweep cancel");
  options.say("cancelled the sweep's trials");
}

}  // namespace tessera::tuning
