// Reading a trial's run logs (tuning/trial_metrics.h).
#include "tuning/trial_metrics.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

namespace tessera::tuning {

namespace fs = std::filesystem;

const MetricSeries* TrialMetrics::find(const std::string& metric) const {
  auto it = series.find(metric);
  return it == series.end() ? nullptr : &it->second;
}

// One run log, up to its last complete line. A line that does not parse (the file is
// being written, or was cut by a crash) ends the reading: what follows is not trusted.
static void read_run_log(const fs::path& path, TrialMetrics& out) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t start = 0;
  for (size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
    nlohmann::json e;
    try {
      e = nlohmann::json::parse(text.begin() + (long)start, text.begin() + (long)end);
    } catch (const nlohmann::json::exception&) {
      return;
    }
    if (!e.is_object()) continue;
    const std::string kind = e.value("event", "");
    if (kind == "run_start") {
      out.last_end.reset();  // a newer run started: its end (if any) is the one that counts
    } else if (kind == "run_end") {
      out.last_end = RunOutcome{e.value("status", ""), e.value("reason", ""), e.value("step", (int64_t)0)};
    } else if ((kind == "metric" || kind == "eval") && e.contains("step") && e["step"].is_number_integer()) {
      const int64_t step = e["step"].get<int64_t>();
      out.last_step = std::max(out.last_step, step);
      for (auto it = e.begin(); it != e.end(); ++it)
        if (it.value().is_number() && it.key() != "step" && it.key() != "schema_version")
          out.series[it.key()][step] = it.value().get<double>();  // later runs overwrite
    }
  }
}

TrialMetrics read_trial_metrics(const std::string& trial_dir) {
  TrialMetrics out;
  std::error_code ec;
  const fs::path runs = fs::path(trial_dir) / "runs";
  if (!fs::is_directory(runs, ec)) return out;
  std::vector<fs::path> logs;
  for (const auto& entry : fs::directory_iterator(runs, ec)) {
    const fs::path log = entry.path() / "run.jsonl";
    if (fs::is_regular_file(log, ec)) logs.push_back(log);
  }
  std::sort(logs.begin(), logs.end());  // run ids begin with their UTC start time
  for (const auto& log : logs) read_run_log(log, out);
  return out;
}

std::optional<std::pair<int64_t, double>> value_at_or_after(const MetricSeries& s, int64_t step) {
  auto it = s.lower_bound(step);
  if (it == s.end()) return std::nullopt;
  return *it;
}

}  // namespace tessera::tuning
