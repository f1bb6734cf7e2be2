// What a trial's run logs say: the series of a metric by step, and how the last run
// ended. Metrics come from the run logs (docs/run-log.md), never from a job's output.
//
// A trial's runs are `<trial dir>/runs/<run-id>/run.jsonl`: one per start of the job
// (a requeued or retried trial resumes into a new run id). They are read in run-id order
// (ids begin with the UTC start time), each up to its last complete line; when a step
// appears twice (a requeued job repeats the steps after its last checkpoint) the later
// value is kept.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace tessera::tuning {

using MetricSeries = std::map<int64_t, double>;  // step -> value

struct RunOutcome {
  std::string status;  // run_end's "ok" | "failed" | "interrupted"
  std::string reason;
  int64_t step = 0;
};

struct TrialMetrics {
  std::map<std::string, MetricSeries> series;  // every numeric field of metric and eval events
  int64_t last_step = 0;                       // the highest step logged
  std::optional<RunOutcome> last_end;          // run_end of the newest run, if written

  const MetricSeries* find(const std::string& metric) const;
};

// Reads every run log of a trial directory; a directory without runs gives empty metrics.
TrialMetrics read_trial_metrics(const std::string& trial_dir);

// The first logged value at a step >= `step`, with that step.
std::optional<std::pair<int64_t, double>> value_at_or_after(const MetricSeries& s, int64_t step);

}  // namespace tessera::tuning
