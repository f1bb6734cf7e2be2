// The status table, parameter importance, compute spent and report.md (tuning/report.h);
// the picture is drawn in report_svg.cpp.
#include "tuning/report.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "base/error.h"
#include "tuning/report_svg.h"

namespace tessera::tuning {

namespace fs = std::filesystem;

namespace {

std::string number(double v, int digits = 4) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

std::string value_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) return number(v.get<double>(), 3);
  return v.dump();
}

// "lr=0.00032 weight_decay=0.1": the last part of each key, or the whole key where two
// parameters share their last part.
std::string params_text(const SweepSpec& spec, const nlohmann::json& params) {
  std::map<std::string, int> tails;
  auto tail = [](const std::string& k) { return k.substr(k.rfind('.') + 1); };
  for (const Param& p : spec.space) tails[tail(p.key)]++;
  std::string out;
  for (const Param& p : spec.space) {
    if (!params.contains(p.key)) continue;
    if (!out.empty()) out += ' ';
    out += (tails[tail(p.key)] > 1 ? p.key : tail(p.key)) + "=" + value_text(params[p.key]);
  }
  return out;
}

int64_t steps_of(const TrialRecord& t, const std::map<int, TrialMetrics>& metrics) {
  auto it = metrics.find(t.id);
  return std::max(t.steps, it == metrics.end() ? (int64_t)0 : it->second.last_step);
}

// The value a trial had to reach at a rung, by the rule of Optuna's SuccessiveHalvingPruner:
// among the rung's values (earlier trials' and its own), sorted best first, the one at
// index max(0, n / reduction_factor - 1).
double rung_cutoff(const RungDecision& d, int reduction_factor, bool maximize) {
  std::vector<double> values = d.competing;
  values.push_back(d.value);
  std::sort(values.begin(), values.end());
  if (maximize) std::reverse(values.begin(), values.end());
  const size_t index = (size_t)std::max<long>(0, (long)values.size() / std::max(1, reduction_factor) - 1);
  return values[std::min(index, values.size() - 1)];
}

std::string why_stopped(const SweepSpec& spec, const TrialRecord& t) {
  if (t.state == TrialState::pruned || t.state == TrialState::stopping) {
    for (const RungDecision& d : t.rungs)
      if (!d.promoted)
        return "pruned at rung " + std::to_string(d.rung) + " (step " + std::to_string(d.step) + "): " +
               number(d.value) + " vs cutoff " +
               number(rung_cutoff(d, spec.scheduler.reduction_factor, spec.objective.maximize));
    return t.stop_reason.empty() ? "pruned" : "pruned: " + t.stop_reason;
  }
  if (t.state == TrialState::failed)
    return "failed: exit code " + std::to_string(t.exit_code) + (t.stop_reason.empty() ? "" : ", " + t.stop_reason);
  if (t.attempt > 0 && !finished(t.state)) return "retry " + std::to_string(t.attempt);
  return "-";
}

std::string job_of(const TrialRecord& t) {
  if (!t.job_id.empty()) return t.job_id;
  return t.job_ids.empty() ? "-" : t.job_ids.back();
}

// The cells of one trial's row, shared by the terminal table and report.md.
std::vector<std::string> row_of(const SweepSpec& spec, const TrialRecord& t,
                                const std::map<int, TrialMetrics>& metrics) {
  return {std::to_string(t.id), params_text(spec, t.params), to_string(t.state), job_of(t),
          std::to_string(steps_of(t, metrics)), t.objective ? number(*t.objective, 5) : "-",
          why_stopped(spec, t)};
}

const std::vector<std::string> kColumns = {"trial", "params", "state", "job", "steps", "objective", "why stopped"};

// Average ranks (ties share the mean of their positions), as Spearman's rho needs.
std::vector<double> ranks(const std::vector<double>& v) {
  std::vector<size_t> order(v.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> r(v.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) j++;
    for (size_t k = i; k <= j; k++) r[order[k]] = 0.5 * (double)(i + j);
    i = j + 1;
  }
  return r;
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = (double)x.size();
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); i++) mx += x[i] / n, my += y[i] / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : 0.0;
}

void write_atomically(const std::string& path, const std::string& text) {
  // A temporary name in the same directory, then rename: a reader sees the old report or
  // the whole new one, never a part.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw Error(tmp + ": cannot write the sweep report (is the directory writable and the disk not full?)");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw Error(path + ": cannot rename the sweep report into place: " + ec.message());
  }
}

std::string md_cell(std::string s) {
  for (size_t i = 0; (i = s.find('|', i)) != std::string::npos; i += 2) s.replace(i, 1, "\\|");
  return s;
}

}  // namespace

std::string status_table(const SweepSpec& spec, const SweepState& state,
                         const std::map<int, TrialMetrics>& metrics) {
  std::vector<std::vector<std::string>> rows = {kColumns};
  for (const TrialRecord& t : state.trials) rows.push_back(row_of(spec, t, metrics));
  std::vector<size_t> width(kColumns.size(), 0);
  for (const auto& r : rows)
    for (size_t c = 0; c < r.size(); c++) width[c] = std::max(width[c], r[c].size());
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t c = 0; c < r.size(); c++) {
      // Numbers right-aligned (trial, steps, objective), text left-aligned.
      const bool right = c == 0 || c == 4 || c == 5;
      const std::string pad(width[c] - r[c].size(), ' ');
      line += (right ? pad + r[c] : r[c] + (c + 1 < r.size() ? pad : "")) + (c + 1 < r.size() ? "  " : "");
    }
    out += line + "\n";
  }
  return out;
}

// Why these two measures: both need no model and no more trials than a sweep has (tens),
// both are in [0, 1], and they answer the question a person asks of a small sweep,
// "which knob went with the result". Spearman's rho on ranks catches any monotone
// relation, on the log scale for loguniform parameters, but not a U shape: a learning
// rate whose trials straddle its optimum scores lower than its effect (the per-parameter
// panels of report.svg show the shape). Eta squared is the share of the
// objective's variance explained by a choice's groups. They are not the same scale: eta
// squared grows with the number of choices on few trials, so the list is an ordering to
// look at, not a measurement. Neither is causal: with TPE the sampled values depend on
// earlier results, and parameters that interact are judged one at a time (fANOVA or
// Optuna's PED-ANOVA would need a surrogate model and many more trials).
std::vector<ParamImportance> parameter_importance(const SweepSpec& spec, const SweepState& state,
                                                  std::string* why_empty) {
  std::vector<const TrialRecord*> done;
  for (const TrialRecord& t : state.trials)
    if (t.state == TrialState::completed && t.objective && std::isfinite(*t.objective)) done.push_back(&t);
  std::vector<ParamImportance> out;
  if (done.size() < 3) {
    if (why_empty)
      *why_empty = std::to_string(done.size()) + " trial(s) completed with an objective; at least 3 are needed";
    return out;
  }
  for (const Param& p : spec.space) {
    std::vector<double> x, y;
    for (const TrialRecord* t : done) {
      if (!t->params.contains(p.key)) continue;
      try {
        x.push_back(coordinate(p, t->params[p.key]));
      } catch (const std::exception&) {
        continue;  // a value outside the current space (an edited sweep file): not comparable
      }
      y.push_back(*t->objective);
    }
    ParamImportance imp{p.key, 0.0, p.dist == Distribution::choice ? "eta^2" : "spearman rho^2"};
    if (x.size() >= 3 && p.dist == Distribution::choice) {
      std::map<double, std::pair<double, int>> groups;  // choice index -> (sum, count)
      double mean = 0;
      for (size_t i = 0; i < y.size(); i++) {
        groups[x[i]].first += y[i], groups[x[i]].second++;
        mean += y[i] / (double)y.size();
      }
      double between = 0, total = 0;
      for (const auto& [c, g] : groups) between += g.second * std::pow(g.first / g.second - mean, 2);
      for (double v : y) total += (v - mean) * (v - mean);
      imp.score = total > 0 ? between / total : 0.0;
    } else if (x.size() >= 3) {
      const double rho = pearson(ranks(x), ranks(y));
      imp.score = rho * rho;
    }
    out.push_back(imp);
  }
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.score > b.score; });
  return out;
}

ComputeSpent compute_spent(const SweepSpec& spec, const SweepState& state,
                           const std::map<int, TrialMetrics>& metrics, int64_t recipe_steps) {
  int64_t fixed = recipe_steps;
  for (const std::string& o : spec.overrides)
    if (o.rfind("train.steps=", 0) == 0) {
      try {
        fixed = std::stoll(o.substr(12));
      } catch (const std::exception&) {
      }
    }
  ComputeSpent c;
  bool known = true;
  for (const TrialRecord& t : state.trials) {
    c.steps_run += steps_of(t, metrics);
    int64_t full = fixed;
    if (t.params.contains("train.steps") && t.params["train.steps"].is_number())
      full = (int64_t)t.params["train.steps"].get<double>();
    if (full <= 0) known = false;
    c.steps_full += full;
  }
  if (!known) c.steps_full = 0;
  return c;
}

ReportFiles write_report(const SweepSpec& spec, const SweepState& state,
                         const std::map<int, TrialMetrics>& metrics, const std::string& out_dir,
                         int64_t recipe_steps) {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw Error(out_dir + ": cannot create the report directory: " + ec.message());
  ReportFiles files{(fs::path(out_dir) / "report.md").string(), (fs::path(out_dir) / "report.svg").string()};

  std::ostringstream md;
  const std::string metric = spec.objective.metric;
  md << "# Sweep " << spec.name << "\n\n";
  md << "Sweep file `" << spec.source << "`, recipe `" << spec.recipe << "`, objective: "
     << (spec.objective.maximize ? "maximise " : "minimise ") << "`" << metric << "`.\n\n";
  std::map<std::string, int> counts;
  for (const TrialRecord& t : state.trials) counts[to_string(t.state)]++;
  md << state.trials.size() << " trial(s)";
  const char* sep = ": ";
  for (const auto& [s, n] : counts) md << sep << n << " " << s, sep = ", ";
  md << (state.ended ? " (the sweep has ended)" : " (the sweep has not ended)") << ".\n\n";

  md << "## Best trial\n\n";
  if (const TrialRecord* best = state.best(spec.objective.maximize)) {
    const std::string dir = (fs::path(spec.dir) / "trials" / std::to_string(best->id)).string();
    md << "Trial " << best->id << ": " << metric << " = " << number(*best->objective, 6) << "\n\n";
    for (const Param& p : spec.space)
      if (best->params.contains(p.key)) md << "- `" << override_text(p.key, best->params[p.key]) << "`\n";
    md << "\nRun log: `" << dir << "/runs`  \nCheckpoints: `" << dir << "/ckpt`\n\n";
  } else {
    md << "No trial has completed with an objective yet.\n\n";
  }

  md << "## Parameter importance\n\n";
  std::string why;
  const auto importance = parameter_importance(spec, state, &why);
  if (importance.empty()) {
    md << "Not computed: " << why << ".\n\n";
  } else {
    md << "Over the completed trials: squared Spearman rank correlation with the objective for "
          "numeric parameters (log scale for loguniform), eta squared for choices. An ordering, "
          "not a causal measure: parameters are judged one at a time.\n\n";
    for (size_t i = 0; i < importance.size(); i++)
      md << i + 1 << ". `" << importance[i].key << "`: " << number(importance[i].score, 3) << " ("
         << importance[i].method << ")\n";
    md << "\n";
  }

  md << "## Trials\n\n|";
  for (const auto& c : kColumns) md << " " << c << " |";
  md << "\n|";
  for (size_t i = 0; i < kColumns.size(); i++) md << (i == 0 || i == 4 || i == 5 ? "---:|" : "---|");
  md << "\n";
  for (const TrialRecord& t : state.trials) {
    md << "|";
    for (const auto& cell : row_of(spec, t, metrics)) md << " " << md_cell(cell) << " |";
    md << "\n";
  }

  md << "\n## Compute\n\n";
  const ComputeSpent c = compute_spent(spec, state, metrics, recipe_steps);
  md << "Steps run over all trials: " << c.steps_run << ".";
  if (c.steps_full > 0)
    md << " Had every trial run to its full train.steps: " << c.steps_full << ". The sweep spent "
       << number(100.0 * (double)c.steps_run / (double)c.steps_full, 3) << "% of that.\n\n";
  else
    md << " (The full train.steps is not known here: it is neither a parameter nor a fixed override.)\n\n";

  md << "![sweep](report.svg)\n";

  write_atomically(files.svg, report_svg(spec, state, metrics));
  write_atomically(files.markdown, md.str());
  return files;
}

}  // namespace tessera::tuning
