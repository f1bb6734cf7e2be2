#include "framework/tools/lineage.h"

#include <filesystem>
#include <fstream>

#include "base/error.h"
#include "framework/runlog/run_log.h"
#include "framework/tools/export.h"
#include "framework/tools/export_weights.h"
#include "framework/train/checkpointing.h"
#include "framework/util/system_info.h"

namespace tessera {

namespace fs = std::filesystem;

namespace {

nlohmann::json files_json(const std::vector<ExportedFile>& files) {
  nlohmann::json out = nlohmann::json::array();
  for (const ExportedFile& f : files)
    out.push_back({{"path", fs::absolute(f.path).string()}, {"bytes", f.bytes}, {"sha256", f.sha256}});
  return out;
}

nlohmann::json checkpoint_json(const LoadedCheckpoint& c) {
  nlohmann::json shards = nlohmann::json::array();
  for (const CheckpointShardInfo& s : c.shards) shards.push_back({{"file", s.file}, {"checksum", s.checksum}});
  return {{"path", fs::absolute(c.path).string()}, {"step", c.meta.step}, {"run_id", c.meta.run_id},
          {"fingerprint", checkpoint_fingerprint(c)}, {"shards", shards}};
}

}  // namespace

fs::path lineage_path(const std::string& export_path, bool directory) {
  return directory ? fs::path(export_path) / "lineage.json" : fs::path(export_path + ".lineage.json");
}

std::string checkpoint_run_log(const CheckpointWeights& weights) {
  const fs::path log = fs::path(weights.recipe().log.dir) / weights.checkpoint().meta.run_id / "run.jsonl";
  std::error_code ec;
  return fs::is_regular_file(log, ec) ? fs::absolute(log).string() : std::string();
}

nlohmann::json read_run_start(const std::string& run_log) {
  std::ifstream in(run_log);
  std::string line;
  if (!std::getline(in, line)) return nullptr;
  const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || j.value("event", "") != "run_start") return nullptr;
  return j;
}

nlohmann::json make_lineage(const CheckpointWeights& weights, const ExportResult& result) {
  const std::string run_log = checkpoint_run_log(weights);
  const nlohmann::json start = run_log.empty() ? nlohmann::json() : read_run_start(run_log);
  nlohmann::json run = {{"run_id", weights.checkpoint().meta.run_id},
                        {"run_log", run_log.empty() ? nlohmann::json() : nlohmann::json(run_log)},
                        {"recipe", weights.checkpoint().meta.recipe_yaml}};
  if (start.is_object()) {
    run["git"] = start.value("git", nlohmann::json());
    // Paths as the run gave them; a relative one is taken from here, as data.train is.
    nlohmann::json data = start.contains("data") ? start["data"].value("files", nlohmann::json::array())
                                                 : nlohmann::json::array();
    for (auto& f : data)
      if (f.contains("path")) f["path"] = fs::absolute(f["path"].get<std::string>()).lexically_normal().string();
    run["data"] = data;
    run["resumed_from"] = start.value("resumed_from", nlohmann::json());
  }
  nlohmann::json lineage = {
      {"lineage_version", kLineageVersion},
      {"export", {{"path", fs::absolute(result.path).string()}, {"format", result.format},
                  {"dtype", result.dtype}, {"files", files_json(result.files)},
                  {"time", utc_timestamp()}, {"tessera_version", kTesseraVersion},
                  {"seconds", result.seconds}}},
      {"checkpoint", checkpoint_json(weights.checkpoint())},
      {"run", run},
      {"lora_base", nullptr}};
  if (weights.lora_base_checkpoint())
    lineage["lora_base"] = checkpoint_json(*weights.lora_base_checkpoint());
  return lineage;
}

void write_lineage(const std::string& tmp, const std::string& path, const CheckpointWeights& weights,
                   const ExportResult& result) {
  {
    std::ofstream out(tmp);
    out << make_lineage(weights, result).dump(2) << "\n";
    out.close();
    if (!out) throw Error("cannot write " + tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error("cannot rename " + tmp + " to " + path + ": " + ec.message());
}

std::string record_export_in_run_log(const CheckpointWeights& weights, const ExportResult& result) {
  const std::string run_log = checkpoint_run_log(weights);
  if (run_log.empty()) return "";
  const fs::path dir = fs::path(run_log).parent_path();
  RunLog log(dir.parent_path().string(), dir.filename().string(), /*writer=*/true);
  log.event("export", {{"format", result.format}, {"dtype", result.dtype},
                       {"path", fs::absolute(result.path).string()}, {"files", files_json(result.files)},
                       {"lineage", fs::absolute(result.lineage).string()},
                       {"checkpoint", fs::absolute(result.checkpoint).string()},
                       {"step", weights.checkpoint().meta.step}});
  return run_log;
}

}  // namespace tessera
