// Reading a sweep file: strict YAML like recipes (unknown keys, wrong types and values
// out of range are errors naming the file, line and key), then each parameter checked
// against the base recipe.
#include "tuning/sweep_spec.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "base/error.h"
#include "framework/recipe/recipe.h"

namespace tessera::tuning {
namespace {

// Messages point at "file:line:column: " like the recipe reader's.
struct Reader {
  std::string source;

  std::string where(const YAML::Node& node) const {
    const YAML::Mark m = node.Mark();
    if (m.is_null() || m.line < 0) return source + ": ";
    return source + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1) + ": ";
  }
  [[noreturn]] void fail(const YAML::Node& node, const std::string& message) const {
    throw Error(where(node) + message);
  }
  // The keys of a mapping, each checked against `allowed`.
  void expect_keys(const YAML::Node& map, const std::string& what,
                   const std::set<std::string>& allowed) const {
    if (!map.IsMap()) fail(map, what + ": expected a mapping");
    std::set<std::string> seen;
    for (auto it = map.begin(); it != map.end(); ++it) {
      const std::string key = it->first.Scalar();
      if (!allowed.count(key)) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        fail(it->first, "unknown key '" + (what.empty() ? key : what + "." + key) +
                            "' (expected one of: " + list + ")");
      }
      if (!seen.insert(key).second) fail(it->first, "duplicate key '" + key + "'");
    }
  }
  template <class T>
  T scalar(const YAML::Node& node, const std::string& key, const char* expected) const {
    if (!node.IsScalar()) fail(node, key + ": expected " + expected);
    try {
      return node.as<T>();
    } catch (const YAML::Exception&) {
      fail(node, key + ": expected " + expected + ", got '" + node.Scalar() + "'");
    }
  }
  int64_t integer(const YAML::Node& node, const std::string& key, int64_t min) const {
    const int64_t v = scalar<int64_t>(node, key, "an integer");
    if (v < min) fail(node, key + ": expected an integer >= " + std::to_string(min) + ", got " + std::to_string(v));
    return v;
  }
  std::string word(const YAML::Node& node, const std::string& key,
                   const std::vector<std::string>& words) const {
    const std::string w = scalar<std::string>(node, key, "a word");
    for (const auto& ok : words)
      if (w == ok) return w;
    std::string list;
    for (const auto& ok : words) list += (list.empty() ? "" : " | ") + ok;
    fail(node, key + ": expected " + list + ", got '" + w + "'");
  }
};

// A YAML scalar as JSON: a number when it reads as one, else the string.
nlohmann::json scalar_json(const YAML::Node& node) {
  const std::string text = node.Scalar();
  if (node.Tag() != "!") {  // not quoted
    try {
      size_t used = 0;
      const long long i = std::stoll(text, &used);
      if (used == text.size()) return (int64_t)i;
    } catch (...) {
    }
    try {
      size_t used = 0;
      const double d = std::stod(text, &used);
      if (used == text.size() && std::isfinite(d)) return d;
    } catch (...) {
    }
  }
  return text;
}

Param read_param(const Reader& r, const std::string& key, const YAML::Node& body) {
  const std::string what = "space." + key;
  r.expect_keys(body, what, {"choice", "uniform", "loguniform", "int", "step"});
  Param p;
  p.key = key;
  int kinds = 0;
  for (const char* kind : {"choice", "uniform", "loguniform", "int"}) {
    if (!body[kind]) continue;
    kinds++;
    const YAML::Node v = body[kind];
    if (!v.IsSequence()) r.fail(v, what + "." + kind + ": expected a list");
    if (std::string(kind) == "choice") {
      p.dist = Distribution::choice;
      if (v.size() == 0) r.fail(v, what + ".choice: the list is empty");
      for (const auto& c : v) {
        if (!c.IsScalar()) r.fail(c, what + ".choice: expected scalars");
        p.choices.push_back(scalar_json(c));
      }
      continue;
    }
    if (v.size() != 2) r.fail(v, what + "." + kind + ": expected [low, high]");
    p.low = r.scalar<double>(v[0], what + "." + kind, "a number");
    p.high = r.scalar<double>(v[1], what + "." + kind, "a number");
    if (!(p.low <= p.high)) r.fail(v, what + "." + kind + ": low must not exceed high");
    if (std::string(kind) == "uniform") p.dist = Distribution::uniform;
    if (std::string(kind) == "loguniform") {
      p.dist = Distribution::loguniform;
      if (!(p.low > 0)) r.fail(v, what + ".loguniform: bounds must be > 0");
    }
    if (std::string(kind) == "int") {
      p.dist = Distribution::integer;
      if (p.low != std::floor(p.low) || p.high != std::floor(p.high))
        r.fail(v, what + ".int: bounds must be integers");
    }
  }
  if (kinds != 1)
    r.fail(body, what + ": expected exactly one of choice, uniform, loguniform, int");
  if (body["step"]) {
    if (p.dist != Distribution::integer) r.fail(body["step"], what + ".step: only int parameters have a step");
    p.step = r.integer(body["step"], what + ".step", 1);
  }
  return p;
}

// Each parameter's extreme values (or every choice) must load into the base recipe: an
// unknown key, a wrong type or a refused value is found before any trial is submitted.
void check_against_recipe(const SweepSpec& spec) {
  for (const Param& p : spec.space) {
    std::vector<nlohmann::json> probes = p.choices;
    if (p.dist != Distribution::choice) probes = {value_at(p, 0.0), value_at(p, 0.999999)};
    for (const auto& value : probes) {
      std::vector<std::string> overrides = spec.overrides;
      overrides.push_back(override_text(p.key, value));
      try {
        load_recipe(spec.recipe, overrides);
      } catch (const Error& e) {
        throw Error(spec.source + ": space." + p.key + " = " + value.dump() +
                    " does not fit the recipe: " + e.what());
      }
    }
  }
}

}  // namespace

SweepSpec parse_sweep(const std::string& yaml_text, const std::string& source) {
  Reader r{source};
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw Error(source + ":" + std::to_string(e.mark.line + 1) + ": malformed YAML: " + e.msg);
  }
  r.expect_keys(root, "", {"recipe", "set", "space", "objective", "sampler", "scheduler",
                           "max_trials", "max_concurrent", "trial", "backend", "slurm",
                           "dir", "poll_seconds"});
  SweepSpec spec;
  spec.source = source;
  spec.name = std::filesystem::path(source).stem().string();
  spec.dir = root["dir"] ? r.scalar<std::string>(root["dir"], "dir", "a path")
                         : "sweeps/" + spec.name;
  if (!root["recipe"]) r.fail(root, "missing key 'recipe' (the base recipe of every trial)");
  spec.recipe = r.scalar<std::string>(root["recipe"], "recipe", "a path");
  if (const auto set = root["set"]) {
    if (!set.IsSequence()) r.fail(set, "set: expected a list of key=value");
    for (const auto& s : set) {
      const std::string kv = r.scalar<std::string>(s, "set", "key=value");
      if (kv.find('=') == std::string::npos) r.fail(s, "set: expected key=value, got '" + kv + "'");
      spec.overrides.push_back(kv);
    }
  }
  if (!root["space"] || !root["space"].IsMap() || root["space"].size() == 0)
    r.fail(root["space"] ? root["space"] : root,
           "space: expected a mapping of recipe keys to distributions (it is missing or empty)");
  for (auto it = root["space"].begin(); it != root["space"].end(); ++it) {
    const std::string key = it->first.Scalar();
    for (const Param& seen : spec.space)
      if (seen.key == key) r.fail(it->first, "space: duplicate key '" + key + "'");
    spec.space.push_back(read_param(r, key, it->second));
  }
  if (const auto o = root["objective"]) {
    r.expect_keys(o, "objective", {"metric", "mode"});
    if (o["metric"]) spec.objective.metric = r.scalar<std::string>(o["metric"], "objective.metric", "a run-log field");
    if (o["mode"]) spec.objective.maximize = r.word(o["mode"], "objective.mode", {"min", "max"}) == "max";
  }
  if (const auto s = root["sampler"]) {
    r.expect_keys(s, "sampler", {"kind", "seed", "startup_trials", "ei_candidates"});
    if (s["kind"]) {
      const std::string k = r.word(s["kind"], "sampler.kind", {"grid", "random", "tpe"});
      spec.sampler.kind = k == "grid" ? SamplerKind::grid : k == "tpe" ? SamplerKind::tpe : SamplerKind::random;
    }
    if (s["seed"]) spec.sampler.seed = (uint64_t)r.integer(s["seed"], "sampler.seed", 0);
    if (s["startup_trials"]) spec.sampler.startup_trials = (int)r.integer(s["startup_trials"], "sampler.startup_trials", 1);
    if (s["ei_candidates"]) spec.sampler.ei_candidates = (int)r.integer(s["ei_candidates"], "sampler.ei_candidates", 1);
  }
  if (const auto s = root["scheduler"]) {
    r.expect_keys(s, "scheduler", {"kind", "min_resource", "reduction_factor", "min_early_stopping_rate"});
    if (s["kind"]) spec.scheduler.kind = r.word(s["kind"], "scheduler.kind", {"none", "asha"}) == "asha" ? SchedulerKind::asha : SchedulerKind::none;
    if (s["min_resource"]) spec.scheduler.min_resource = r.integer(s["min_resource"], "scheduler.min_resource", 1);
    if (s["reduction_factor"]) spec.scheduler.reduction_factor = (int)r.integer(s["reduction_factor"], "scheduler.reduction_factor", 2);
    if (s["min_early_stopping_rate"]) spec.scheduler.min_early_stopping_rate = (int)r.integer(s["min_early_stopping_rate"], "scheduler.min_early_stopping_rate", 0);
  }
  if (root["max_trials"]) spec.max_trials = (int)r.integer(root["max_trials"], "max_trials", 1);
  if (root["max_concurrent"]) spec.max_concurrent = (int)r.integer(root["max_concurrent"], "max_concurrent", 1);
  if (const auto t = root["trial"]) {
    r.expect_keys(t, "trial", {"ntasks", "cpus_per_task", "time_limit_minutes", "retries", "command"});
    if (t["ntasks"]) spec.trial.ntasks = (int)r.integer(t["ntasks"], "trial.ntasks", 1);
    if (t["cpus_per_task"]) spec.trial.cpus_per_task = (int)r.integer(t["cpus_per_task"], "trial.cpus_per_task", 1);
    if (t["time_limit_minutes"]) spec.trial.time_limit_minutes = (int)r.integer(t["time_limit_minutes"], "trial.time_limit_minutes", 0);
    if (t["retries"]) spec.trial.retries = (int)r.integer(t["retries"], "trial.retries", 0);
    if (const auto c = t["command"]) {
      if (!c.IsSequence() || c.size() == 0) r.fail(c, "trial.command: expected a non-empty list (program and arguments)");
      for (const auto& a : c) spec.trial.command.push_back(r.scalar<std::string>(a, "trial.command", "a string"));
    }
  }
  if (root["backend"]) spec.backend = r.word(root["backend"], "backend", {"local", "slurm"}) == "slurm" ? BackendKind::slurm : BackendKind::local;
  if (const auto s = root["slurm"]) {
    r.expect_keys(s, "slurm", {"interface", "partition"});
    if (s["interface"]) spec.slurm_interface = r.word(s["interface"], "slurm.interface", {"api", "cli"}) == "cli" ? SlurmInterface::cli : SlurmInterface::api;
    if (s["partition"]) spec.slurm_partition = r.scalar<std::string>(s["partition"], "slurm.partition", "a partition name");
  }
  if (root["poll_seconds"]) {
    spec.poll_seconds = r.scalar<double>(root["poll_seconds"], "poll_seconds", "a number of seconds");
    if (!(spec.poll_seconds > 0 && spec.poll_seconds <= 600)) r.fail(root["poll_seconds"], "poll_seconds: expected a number in (0, 600]");
  }
  if (spec.sampler.kind == SamplerKind::grid) {
    const size_t points = grid_points(spec.space, source).size();
    if ((size_t)spec.max_trials > points) spec.max_trials = (int)points;
  }
  return spec;
}

SweepSpec load_sweep(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot read the sweep file (does it exist?)");
  std::stringstream text;
  text << in.rdbuf();
  SweepSpec spec = parse_sweep(text.str(), path);
  check_against_recipe(spec);
  return spec;
}

std::vector<std::string> trial_overrides(const SweepSpec& spec, const Assignment& params,
                                         const std::string& trial_dir) {
  // Resuming from the trial's own newest checkpoint makes a retried or requeued attempt
  // continue instead of starting over; the sweep file's `set` may override it.
  std::vector<std::string> out = {"checkpoint.resume=auto"};
  out.insert(out.end(), spec.overrides.begin(), spec.overrides.end());
  for (const Param& p : spec.space) out.push_back(override_text(p.key, params.at(p.key)));
  out.push_back("log.dir=" + trial_dir + "/runs");
  out.push_back("checkpoint.dir=" + trial_dir + "/ckpt");
  return out;
}

}  // namespace tessera::tuning
