#include "framework/tools/runs.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "checkpoint/checkpoint.h"
#include "framework/data/sha256.h"
#include "framework/tools/lineage.h"
#include "framework/train/checkpointing.h"

namespace tessera {

namespace fs = std::filesystem;

namespace {

// Every complete line of a run log (a line being written is left out).
std::vector<nlohmann::json> read_events(const fs::path& run_log) {
  std::ifstream in(run_log);
  if (!in) throw Error("cannot read the run log " + run_log.string());
  std::vector<nlohmann::json> events;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_discarded() && j.is_object()) events.push_back(std::move(j));
  }
  return events;
}

RunListing summarize(const fs::path& dir, const std::vector<nlohmann::json>& events) {
  RunListing r;
  r.id = dir.filename().string();
  r.dir = dir.string();
  r.status = "running or killed";  // no run_end yet
  for (const auto& e : events) {
    const std::string event = e.value("event", "");
    if (event == "run_start") r.start = e.value("time", "");
    if (event == "metric") {
      r.steps = e.value("step", r.steps);
      if (e.contains("loss") && e["loss"].is_number()) r.last_loss = e["loss"], r.has_loss = true;
    }
    if (event == "checkpoint") r.checkpoints.push_back(e.value("path", ""));
    if (event == "export") r.exports++;
    if (event == "run_end") r.status = e.value("status", "?");
  }
  return r;
}

fs::path find_run_log(const std::string& run, const std::string& log_dir) {
  std::error_code ec;
  const fs::path p(run);
  if (p.extension() == ".jsonl" && fs::is_regular_file(p, ec)) return p;
  if (fs::is_regular_file(p / "run.jsonl", ec)) return p / "run.jsonl";
  if (fs::is_regular_file(fs::path(log_dir) / run / "run.jsonl", ec)) return fs::path(log_dir) / run / "run.jsonl";
  throw Error("no run '" + run + "': neither a run directory nor a run id under " + log_dir +
              " (set --log-dir to the recipe's log.dir)");
}

std::string file_status(const std::string& path, const std::string& sha256) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return "MISSING";
  return sha256_file_hex(path) == sha256 ? "ok" : "CHANGED (sha256 " + sha256_file_hex(path) + ")";
}

std::string checkpoint_status(const nlohmann::json& c) {
  try {
    const LoadedCheckpoint index = load_checkpoint(c.at("path").get<std::string>(), {});
    return checkpoint_fingerprint(index) == c.value("fingerprint", "") ? "ok" : "CHANGED (fingerprint " + checkpoint_fingerprint(index) + ")";
  } catch (const Error& e) {
    return std::string("MISSING (") + e.what() + ")";
  }
}

fs::path find_lineage(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  const std::string name = p.filename().string();
  const bool is_lineage = name == "lineage.json" ||
                          (name.size() > 13 && name.compare(name.size() - 13, 13, ".lineage.json") == 0);
  const std::vector<fs::path> candidates = {is_lineage ? p : fs::path(), fs::path(path + ".lineage.json"),
                                            p / "lineage.json", p.parent_path() / "lineage.json"};
  for (const fs::path& c : candidates)
    if (!c.empty() && fs::is_regular_file(c, ec)) return c;
  throw Error(path + ": no lineage file (" + path + ".lineage.json for a GGUF file, lineage.json in a "
              "safetensors directory): was it written by `tessera export`?");
}

}  // namespace

std::vector<RunListing> list_runs(const std::string& log_dir) {
  std::error_code ec;
  if (!fs::is_directory(log_dir, ec)) throw Error("log directory " + log_dir + " does not exist");
  std::vector<RunListing> runs;
  for (const auto& entry : fs::directory_iterator(log_dir)) {
    const fs::path log = entry.path() / "run.jsonl";
    if (fs::is_regular_file(log, ec)) runs.push_back(summarize(entry.path(), read_events(log)));
  }
  std::sort(runs.begin(), runs.end(), [](const RunListing& a, const RunListing& b) {
    return a.start != b.start ? a.start < b.start : a.id < b.id;
  });
  return runs;
}

std::string format_run_list(const std::vector<RunListing>& runs) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-24s %-24s %-18s %7s %9s %5s %7s  %s\n", "run", "start", "status",
                "steps", "last loss", "ckpts", "exports", "latest checkpoint");
  out += line;
  for (const RunListing& r : runs) {
    char loss[32] = "-";
    if (r.has_loss) std::snprintf(loss, sizeof loss, "%.4f", r.last_loss);
    std::snprintf(line, sizeof line, "%-24s %-24s %-18s %7lld %9s %5zu %7d  %s\n", r.id.c_str(),
                  r.start.c_str(), r.status.c_str(), (long long)r.steps, loss, r.checkpoints.size(),
                  r.exports, r.checkpoints.empty() ? "-" : r.checkpoints.back().c_str());
    out += line;
  }
  return out;
}

std::string show_run(const std::string& run, const std::string& log_dir) {
  const fs::path log = find_run_log(run, log_dir);
  const std::vector<nlohmann::json> events = read_events(log);
  const RunListing r = summarize(log.parent_path(), events);
  std::string out = "run " + r.id + " (" + log.string() + ")\n";
  out += "  started " + r.start + ", " + r.status + ", " + std::to_string(r.steps) + " steps\n";
  for (const auto& e : events) {
    const std::string event = e.value("event", "");
    if (event == "run_start") {
      const auto git = e.value("git", nlohmann::json::object());
      out += "  code: git " + git.value("commit", std::string("unknown")) +
             (git.value("dirty", nlohmann::json(false)) == true ? " (dirty)" : "") + "\n";
      out += "  recipe:\n";
      std::string recipe = e.value("recipe", ""), recipe_line;
      for (std::istringstream in(recipe); std::getline(in, recipe_line);) out += "    " + recipe_line + "\n";
      if (e.contains("data"))
        for (const auto& f : e["data"].value("files", nlohmann::json::array()))
          out += "  data (" + f.value("split", "") + "): " + f.value("path", "") + " sha256 " + f.value("sha256", "") + "\n";
      if (e.contains("resumed_from"))
        out += "  resumed from " + e["resumed_from"].value("path", "") + "\n";
    } else if (event == "checkpoint") {
      out += "  checkpoint step " + std::to_string(e.value("step", 0)) + ": " + e.value("path", "") + "\n";
    } else if (event == "export") {
      out += "  export (" + e.value("format", "") + " " + e.value("dtype", "") + ") of " +
             e.value("checkpoint", "") + ": " + e.value("path", "") + "\n";
      for (const auto& f : e.value("files", nlohmann::json::array()))
        out += "    " + f.value("path", "") + " sha256 " + f.value("sha256", "") + "\n";
    }
  }
  return out;
}

std::string show_export(const std::string& path, bool* all_ok) {
  const fs::path lineage_file = find_lineage(path);
  nlohmann::json l;
  try {
    l = nlohmann::json::parse(std::ifstream(lineage_file));
  } catch (const nlohmann::json::exception& e) {
    throw Error(lineage_file.string() + ": " + e.what());
  }
  *all_ok = true;
  std::string out = "lineage " + lineage_file.string() + "\n";
  auto mark = [&](const std::string& status) {
    if (status != "ok") *all_ok = false;
    return "[" + status + "]";
  };
  try {
    const auto& ex = l.at("export");
    out += "export " + ex.at("format").get<std::string>() + " " + ex.at("dtype").get<std::string>() + " " +
           ex.at("path").get<std::string>() + " (" + ex.value("time", "") + ")\n";
    for (const auto& f : ex.at("files")) {
      const std::string p = f.at("path"), sha = f.at("sha256");
      out += "  file " + p + " sha256 " + sha + " " + mark(file_status(p, sha)) + "\n";
    }
    auto checkpoint = [&](const char* what, const nlohmann::json& c) {
      out += std::string("<- ") + what + " " + c.at("path").get<std::string>() + " step " +
             std::to_string(c.at("step").get<int64_t>()) + " fingerprint " +
             c.at("fingerprint").get<std::string>() + " " + mark(checkpoint_status(c)) + "\n";
    };
    checkpoint("checkpoint", l.at("checkpoint"));
    const auto& run = l.at("run");
    const nlohmann::json run_log = run.value("run_log", nlohmann::json());
    std::string run_status = "not recorded (its run log was not found at export)";
    if (run_log.is_string()) {
      const nlohmann::json start = read_run_start(run_log.get<std::string>());
      run_status = start.is_null() ? "MISSING" : start.value("run_id", "") == run.at("run_id") ? "ok" : "CHANGED";
      run_status = mark(run_status);
    }
    out += "<- run " + run.at("run_id").get<std::string>() + " log " +
           (run_log.is_string() ? run_log.get<std::string>() : "-") + " " + run_status + "\n";
    if (run.contains("git") && run["git"].is_object())
      out += "   code: git " + run["git"].value("commit", std::string("unknown")) + "\n";
    for (const auto& f : run.value("data", nlohmann::json::array())) {
      const std::string p = f.at("path"), sha = f.at("sha256");
      out += "<- data " + p + " sha256 " + sha + " " + mark(file_status(p, sha)) + "\n";
    }
    if (l.contains("lora_base") && l["lora_base"].is_object()) checkpoint("LoRA base", l["lora_base"]);
  } catch (const nlohmann::json::exception& e) {
    throw Error(lineage_file.string() + ": not a lineage record (" + e.what() + ")");
  }
  out += *all_ok ? "every link matches the files\n" : "some links do not match the files (marked above)\n";
  return out;
}

}  // namespace tessera
