// Where an exported model came from, written next to it at export time:
//
//   exported file(s) (sha256) <- checkpoint (step directory, step, shard checksums,
//   fingerprint) <- the run that wrote it (run id, its run log, recipe, git commit)
//   <- that run's data files (sha256, from its run_start record) [<- a LoRA run's base]
//
// The lineage file is `<file>.lineage.json` beside a GGUF file and `lineage.json` inside a
// safetensors directory. The export is also recorded as an `export` event in the run log
// of the run that wrote the checkpoint, when that log is still where the recipe's log.dir
// says. `tessera runs show` (runs.h) walks the chain and checks every link against the
// files. The fields are in docs/export.md.
#pragma once
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace tessera {

class CheckpointWeights;
struct ExportResult;

inline constexpr int kLineageVersion = 1;

// The lineage file of an export at `export_path` (a directory for safetensors).
std::filesystem::path lineage_path(const std::string& export_path, bool directory);

// The lineage record of an export (everything above).
nlohmann::json make_lineage(const CheckpointWeights& weights, const ExportResult& result);

// Writes make_lineage() to `tmp` and renames it to `path`. Throws tessera::Error naming it.
void write_lineage(const std::string& tmp, const std::string& path, const CheckpointWeights& weights,
                   const ExportResult& result);

// Appends an `export` event (format, dtype, path, files with sha256, lineage file,
// checkpoint) to the run log of the run that wrote the checkpoint; returns that log's
// path, or "" when it is not found (the lineage file still has everything).
std::string record_export_in_run_log(const CheckpointWeights& weights, const ExportResult& result);

// The run log `<log.dir>/<run_id>/run.jsonl` of the run that wrote the checkpoint, or ""
// when it does not exist here.
std::string checkpoint_run_log(const CheckpointWeights& weights);

// The first line of a run log (run_start), or null when the file has none.
nlohmann::json read_run_start(const std::string& run_log);

}  // namespace tessera
