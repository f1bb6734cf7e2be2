// The journal: what is appended is replayed; a line cut short by a crash is ignored; the
// run logs of a requeued trial keep a repeated step's last value.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "base/error.h"
#include "tuning/journal.h"
#include "tuning/trial_metrics.h"

namespace tessera::tuning {
namespace {

namespace fs = std::filesystem;

std::string fresh_dir(const std::string& name) {
  const std::string dir = testing::TempDir() + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

TEST(Journal, ReplaysTrialsThroughTheirLives) {
  const std::string path = fresh_dir("journal") + "/journal.jsonl";
  {
    Journal j(path);
    j.append({{"event", "sweeper_start"}, {"pid", 1}});
    j.append({{"event", "trial_created"}, {"trial", 0}, {"params", {{"optim.lr", 0.01}}}});
    j.append({{"event", "trial_created"}, {"trial", 1}, {"params", {{"optim.lr", 0.1}}}});
    j.append({{"event", "trial_submitting"}, {"trial", 0}, {"attempt", 0}, {"job_name", "s-t0-a0"}});
    j.append({{"event", "trial_submitted"}, {"trial", 0}, {"attempt", 0}, {"job_id", "41"}});
    j.append({{"event", "trial_submitting"}, {"trial", 1}, {"attempt", 0}, {"job_name", "s-t1-a0"}});
    j.append({{"event", "trial_submitted"}, {"trial", 1}, {"attempt", 0}, {"job_id", "42"}});
    j.append({{"event", "rung"}, {"trial", 1}, {"rung", 0}, {"resource", 10}, {"step", 10}, {"value", 3.0},
              {"competing", {2.0}}, {"promoted", false}});
    j.append({{"event", "trial_stopping"}, {"trial", 1}, {"reason", "ASHA"}});
    j.append({{"event", "trial_end"}, {"trial", 1}, {"attempt", 0}, {"state", "pruned"}, {"steps", 12}});
    j.append({{"event", "trial_retry"}, {"trial", 0}, {"attempt", 0}, {"exit_code", 1}, {"reason", "x"}});
    j.append({{"event", "trial_submitting"}, {"trial", 0}, {"attempt", 1}, {"job_name", "s-t0-a1"}});
    j.append({{"event", "trial_submitted"}, {"trial", 0}, {"attempt", 1}, {"job_id", "43"}});
    j.append({{"event", "trial_end"}, {"trial", 0}, {"attempt", 1}, {"state", "completed"}, {"objective", 1.25},
              {"steps", 30}, {"exit_code", 0}});
  }
  // A crash while writing leaves half a line: it is not an event.
  std::ofstream(path, std::ios::app) << "{\"event\":\"trial_created\",\"tri";
  const SweepState s = replay(read_journal(path));
  ASSERT_EQ(s.trials.size(), 2u);
  EXPECT_EQ(s.sweeper_starts, 1);
  EXPECT_EQ(s.trials[0].state, TrialState::completed);
  EXPECT_EQ(s.trials[0].attempt, 1);
  EXPECT_EQ(s.trials[0].job_ids, (std::vector<std::string>{"41", "43"}));
  EXPECT_EQ(*s.trials[0].objective, 1.25);
  EXPECT_EQ(s.trials[1].state, TrialState::pruned);
  EXPECT_EQ(s.trials[1].stop_reason, "ASHA");
  ASSERT_EQ(s.trials[1].rungs.size(), 1u);
  EXPECT_EQ(s.trials[1].rungs[0].competing, std::vector<double>{2.0});
  EXPECT_EQ(s.best(false), &s.trials[0]);
  // The next sweeper cuts the unfinished line off before it appends.
  Journal(path).append({{"event", "sweeper_start"}, {"pid", 2}});
  const auto events = read_journal(path);
  ASSERT_EQ(events.size(), 15u);
  EXPECT_EQ(events.back()["event"], "sweeper_start");
  EXPECT_EQ(replay(events).sweeper_starts, 2);
}

TEST(Journal, ARungThatStopsATrialIsItsStopDecision) {
  // The sweeper was killed after journaling the rung, before trial_stopping: the replayed
  // trial is being stopped all the same (the restart cancels its job).
  const SweepState s = replay({{{"event", "trial_created"}, {"trial", 0}, {"params", nlohmann::json::object()}},
                               {{"event", "trial_submitting"}, {"trial", 0}, {"attempt", 0}, {"job_name", "j"}},
                               {{"event", "trial_submitted"}, {"trial", 0}, {"attempt", 0}, {"job_id", "7"}},
                               {{"event", "rung"}, {"trial", 0}, {"rung", 0}, {"resource", 5}, {"step", 5},
                                {"value", nullptr}, {"competing", {1.0}}, {"promoted", false}}});
  EXPECT_EQ(s.trials[0].state, TrialState::stopping);
  EXPECT_TRUE(std::isnan(s.trials[0].rungs[0].value));  // NaN is journaled as null
}

TEST(Journal, AMalformedCompleteLineIsAnErrorNamingTheLine) {
  const std::string path = fresh_dir("journal_bad") + "/journal.jsonl";
  std::ofstream(path) << "{\"event\":\"sweeper_start\"}\nnot json\n";
  try {
    read_journal(path);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("journal.jsonl:2:"), std::string::npos) << e.what();
  }
  EXPECT_THROW(replay({{{"event", "rung"}, {"trial", 5}}}), Error);  // a trial never created
}

void write_run(const std::string& trial, const std::string& run_id, const std::string& lines) {
  fs::create_directories(trial + "/runs/" + run_id);
  std::ofstream(trial + "/runs/" + run_id + "/run.jsonl") << lines;
}

TEST(TrialMetrics, ARequeuedRunsRepeatedStepKeepsTheLastValue) {
  const std::string trial = fresh_dir("trial_metrics");
  write_run(trial, "20260101-000000-aaaaaa",
            "{\"event\":\"run_start\"}\n"
            "{\"event\":\"metric\",\"step\":1,\"loss\":5.0}\n"
            "{\"event\":\"metric\",\"step\":2,\"loss\":4.0}\n"
            "{\"event\":\"eval\",\"step\":2,\"val_loss\":4.5}\n"
            "{\"event\":\"metric\",\"step\":3,\"loss\":3.9}\n"
            "{\"event\":\"run_end\",\"status\":\"interrupted\",\"reason\":\"preempted\",\"step\":3}\n");
  // The requeued job resumed from the checkpoint of step 2 and repeated step 3; its last
  // line is still being written.
  write_run(trial, "20260101-000100-bbbbbb",
            "{\"event\":\"run_start\"}\n"
            "{\"event\":\"metric\",\"step\":3,\"loss\":3.8}\n"
            "{\"event\":\"metric\",\"step\":4,\"loss\":3.5}\n"
            "{\"event\":\"metric\",\"step\":5,\"lo");
  const TrialMetrics m = read_trial_metrics(trial);
  const MetricSeries* loss = m.find("loss");
  ASSERT_TRUE(loss);
  EXPECT_EQ(*loss, (MetricSeries{{1, 5.0}, {2, 4.0}, {3, 3.8}, {4, 3.5}}));
  EXPECT_EQ(m.find("val_loss")->at(2), 4.5);
  EXPECT_EQ(m.last_step, 4);
  EXPECT_FALSE(m.last_end);  // the newest run has not ended
  EXPECT_EQ(value_at_or_after(*loss, 3)->second, 3.8);
  EXPECT_FALSE(value_at_or_after(*loss, 5));
  EXPECT_TRUE(read_trial_metrics(trial + "/nothing").series.empty());
}

}  // namespace
}  // namespace tessera::tuning
