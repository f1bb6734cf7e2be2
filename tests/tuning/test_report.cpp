// Sweep reports (tuning/report.h): the status table, parameter importance, and the
// report files (SVG that parses as XML, markdown that names the best trial).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tuning/report.h"

namespace tessera::tuning {
namespace {

namespace fs = std::filesystem;

std::string fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("tessera_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

SweepSpec test_spec(const std::string& dir) {
  SweepSpec spec;
  spec.source = "sweeps/lr.yaml";
  spec.name = "lr <&> test";  // characters that must be escaped in the SVG
  spec.dir = dir;
  spec.recipe = "recipes/tiny.yaml";
  spec.overrides = {"train.steps=90", "train.eval_every=10"};
  Param lr;
  lr.key = "optim.lr", lr.dist = Distribution::loguniform, lr.low = 1e-4, lr.high = 1e-1;
  Param wd;
  wd.key = "optim.weight_decay", wd.dist = Distribution::uniform, wd.low = 0, wd.high = 0.2;
  Param prec;
  prec.key = "train.precision", prec.dist = Distribution::choice, prec.choices = {"fp32", "bf16"};
  spec.space = {lr, wd, prec};
  spec.objective.metric = "val_loss";
  spec.scheduler.kind = SchedulerKind::asha;
  spec.scheduler.min_resource = 10;
  spec.scheduler.reduction_factor = 3;
  return spec;
}

// Eight trials: the objective is a function of lr alone (weight decay is noise-free
// but irrelevant: it cycles through values unrelated to lr), precision alternates.
// Trial 6 is pruned at rung 1, trial 7 failed.
struct Fixture {
  SweepSpec spec;
  SweepState state;
  std::map<int, TrialMetrics> metrics;
};

Fixture make_fixture(const std::string& dir) {
  Fixture f{test_spec(dir), {}, {}};
  const double lrs[] = {1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 5e-2, 2e-2};
  const double wds[] = {0.15, 0.02, 0.19, 0.07, 0.11, 0.0, 0.05, 0.1};
  for (int i = 0; i < 8; i++) {
    TrialRecord t;
    t.id = i;
    t.params = {{"optim.lr", lrs[i]}, {"optim.weight_decay", wds[i]}, {"train.precision", i % 2 ? "bf16" : "fp32"}};
    t.job_id = std::to_string(1000 + i);
    t.job_ids = {t.job_id};
    const double final_loss = 2.0 + std::pow(std::log10(lrs[i]) + 2.5, 2);
    TrialMetrics m;
    const int64_t last = i == 6 ? 30 : i == 7 ? 20 : 90;
    for (int64_t s = 0; s <= last; s += 10) m.series["loss"][s] = final_loss + 3.0 * std::exp(-(double)s / 25);
    m.last_step = last;
    t.steps = last;
    if (i < 6) {
      t.state = TrialState::completed;
      t.objective = final_loss;
    } else if (i == 6) {
      t.state = TrialState::pruned;
      t.rungs = {{0, 10, 10, 4.9, {4.1, 4.0, 4.3}, true}, {1, 30, 30, 3.9, {2.9, 2.8, 3.5, 3.0}, false}};
    } else {
      t.state = TrialState::failed;
      t.exit_code = 137;
      t.stop_reason = "killed by the OOM killer";
    }
    f.metrics[i] = m;
    f.state.trials.push_back(t);
  }
  return f;
}

TEST(Report, StatusTableHasARowPerTrialWithItsState) {
  const Fixture f = make_fixture("sweeps/x");
  const std::string table = status_table(f.spec, f.state, f.metrics);
  std::istringstream lines(table);
  std::vector<std::string> rows;
  for (std::string line; std::getline(lines, line);) rows.push_back(line);
  ASSERT_EQ(rows.size(), 9u) << table;  // header + 8 trials
  EXPECT_NE(rows[0].find("why stopped"), std::string::npos);
  for (int i = 0; i < 8; i++) {
    const std::string& r = rows[(size_t)i + 1];
    EXPECT_EQ(r.substr(0, r.find_first_not_of(' ')).size() + std::to_string(i).size(), rows[0].find("trial") + 5)
        << "trial id right-aligned in its column: " << r;
    EXPECT_NE(r.find(std::to_string(1000 + i)), std::string::npos) << r;
    EXPECT_NE(r.find(i < 6 ? "completed" : i == 6 ? "pruned" : "failed"), std::string::npos) << r;
    EXPECT_NE(r.find("lr="), std::string::npos) << r;
  }
  // Why trials stopped: the rung, its value and the cutoff (Optuna's rule: 5 values at the
  // rung, reduction factor 3 -> the best one, 2.8); the exit code.
  EXPECT_NE(rows[7].find("pruned at rung 1 (step 30): 3.9 vs cutoff 2.8"), std::string::npos) << rows[7];
  EXPECT_NE(rows[8].find("failed: exit code 137, killed by the OOM killer"), std::string::npos) << rows[8];
  // All rows line up: the same width up to the last column.
  EXPECT_EQ(rows[1].find("completed"), rows[0].find("state"));
}

TEST(Report, ImportanceRanksTheParameterThatDecidesTheObjectiveFirst) {
  const Fixture f = make_fixture("sweeps/x");
  std::string why;
  const auto imp = parameter_importance(f.spec, f.state, &why);
  ASSERT_EQ(imp.size(), 3u) << why;
  EXPECT_EQ(imp[0].key, "optim.lr");
  EXPECT_EQ(imp[0].method, "spearman rho^2");
  for (const auto& i : imp) {
    EXPECT_GE(i.score, 0.0);
    EXPECT_LE(i.score, 1.0);
    if (i.key == "train.precision") {
      EXPECT_EQ(i.method, "eta^2");
    }
  }
  EXPECT_GT(imp[0].score, imp[1].score);

  // Fewer than 3 completed trials: nothing, with the reason.
  Fixture few = f;
  few.state.trials.resize(2);
  EXPECT_TRUE(parameter_importance(few.spec, few.state, &why).empty());
  EXPECT_NE(why.find("at least 3"), std::string::npos) << why;
}

TEST(Report, ImportanceOfAChoiceThatDecidesTheObjective) {
  Fixture f = make_fixture("sweeps/x");
  for (auto& t : f.state.trials)
    if (t.objective) t.objective = t.params["train.precision"] == "bf16" ? 1.0 + 0.01 * t.id : 5.0 - 0.01 * t.id;
  const auto imp = parameter_importance(f.spec, f.state);
  ASSERT_FALSE(imp.empty());
  EXPECT_EQ(imp[0].key, "train.precision");
  EXPECT_GT(imp[0].score, 0.99);
}

TEST(Report, ComputeSpentCountsStepsRunAgainstFullLength) {
  const Fixture f = make_fixture("sweeps/x");
  const ComputeSpent c = compute_spent(f.spec, f.state, f.metrics);
  EXPECT_EQ(c.steps_run, 6 * 90 + 30 + 20);
  EXPECT_EQ(c.steps_full, 8 * 90);
  SweepSpec unknown = f.spec;
  unknown.overrides = {};
  EXPECT_EQ(compute_spent(unknown, f.state, f.metrics).steps_full, 0);
  EXPECT_EQ(compute_spent(unknown, f.state, f.metrics, 100).steps_full, 800);
}

TEST(Report, WritesParseableSvgAndMarkdownNamingTheBestTrial) {
  const std::string dir = fresh_dir("report");
  const Fixture f = make_fixture(dir + "/sweep");
  const ReportFiles files = write_report(f.spec, f.state, f.metrics, dir + "/out");
  EXPECT_EQ(files.svg, dir + "/out/report.svg");
  EXPECT_EQ(files.markdown, dir + "/out/report.md");

  const std::string svg = read_file(files.svg);
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("lr &lt;&amp;&gt; test"), std::string::npos);
  EXPECT_NE(svg.find("stroke-dasharray"), std::string::npos) << "pruned trials are dashed";
  EXPECT_NE(svg.find("best: trial 3"), std::string::npos);
  const std::string cmd = "/usr/bin/python3 -c 'import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])' '" +
                          files.svg + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << "report.svg is not well-formed XML";

  // Trial 3 has lr 3e-3, the closest to the optimum 10^-2.5.
  const std::string md = read_file(files.markdown);
  EXPECT_NE(md.find("![sweep](report.svg)"), std::string::npos);
  EXPECT_NE(md.find("Trial 3: val_loss"), std::string::npos) << md;
  EXPECT_NE(md.find(dir + "/sweep/trials/3/runs"), std::string::npos) << md;
  EXPECT_NE(md.find(dir + "/sweep/trials/3/ckpt"), std::string::npos) << md;
  EXPECT_NE(md.find("`optim.lr=0.0030000000000000001`"), std::string::npos) << md;
  EXPECT_NE(md.find("1. `optim.lr`"), std::string::npos) << md;
  EXPECT_NE(md.find("spearman rho^2"), std::string::npos) << md;
  EXPECT_NE(md.find("Steps run over all trials: 590. Had every trial run to its full train.steps: 720."), std::string::npos) << md;
  for (int i = 0; i < 8; i++) EXPECT_NE(md.find("| " + std::to_string(i) + " | "), std::string::npos) << i;

  // Only the two files: no temporary left behind, also when written a second time.
  write_report(f.spec, f.state, f.metrics, dir + "/out");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir + "/out")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"report.md", "report.svg"}));
  fs::remove_all(dir);
}

TEST(Report, EmptySweepStillGivesAValidReport) {
  const std::string dir = fresh_dir("report_empty");
  SweepSpec spec = test_spec(dir);
  const ReportFiles files = write_report(spec, SweepState{}, {}, dir);
  const std::string cmd = "/usr/bin/python3 -c 'import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])' '" +
                          files.svg + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  const std::string md = read_file(files.markdown);
  EXPECT_NE(md.find("No trial has completed"), std::string::npos) << md;
  EXPECT_NE(md.find("Not computed"), std::string::npos) << md;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tessera::tuning
