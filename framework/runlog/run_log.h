// The run metadata log: `<log_dir>/<run-id>/run.jsonl`, one JSON object per line,
// append-only. Every line carries "event", "schema_version" and "time"; the events and
// their fields are documented in docs/run-log.md (schema version 1).
//
// Every rank constructs a RunLog (so the trainer needs no `if (rank == 0)` around each
// call) but only the writer (rank 0) touches the disk; on the others every method is a
// no-op. Each line is flushed as it is written, so a crash leaves only complete lines.
//
//   tessera::RunLog log(recipe.log.dir, run_id, mesh.world_rank() == 0);
//   log.run_start({{"argv", argv}, {"recipe", yaml_text}, {"layout", ...}, {"data", ...}});
//   log.metric(step, {{"loss", loss}, {"lr", lr}, ...});
//   log.run_end("ok", "");
//
// If the RunLog is destroyed after run_start without run_end (an exception unwinding
// the trainer), the destructor writes run_end with status "failed".
#pragma once
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "framework/runlog/tensorboard.h"

namespace tessera {

// A fresh run id, `YYYYMMDD-HHMMSS-<6 hex>` from the current UTC time and 24 random bits,
// e.g. "20250114-093012-3fa9c1". Under MPI, call it on rank 0 and broadcast the result.
std::string make_run_id();

// The current time as ISO-8601 UTC with milliseconds, e.g. "2025-01-14T09:30:12.345Z".
std::string utc_timestamp();

class RunLog {
 public:
  static constexpr int kSchemaVersion = 1;

  // The writer creates `<log_dir>/<run_id>/` (and any missing parents) and opens
  // run.jsonl for appending; it throws tessera::Error naming the directory or file when
  // it cannot. Non-writers touch nothing.
  RunLog(const std::string& log_dir, const std::string& run_id, bool writer);
  // Writes run_end("failed", "run log closed without run_end") if run_start was written
  // and run_end was not. Never throws.
  ~RunLog();

  RunLog(const RunLog&) = delete;
  RunLog& operator=(const RunLog&) = delete;

  // The caller passes argv, recipe (resolved YAML text), layout and data; RunLog adds
  // run_id, git {commit, dirty}, versions, host and pid. Throws tessera::Error if called
  // twice.
  void run_start(const nlohmann::json& fields);
  // One training step: loss, lr, grad_norm, tokens_per_s, mfu, step_ms, tokens_seen ...
  void metric(int64_t step, const nlohmann::json& fields);
  // One evaluation: val_loss ...
  void eval(int64_t step, const nlohmann::json& fields);
  // A checkpoint was written: path, step, checksums ...
  void checkpoint(const nlohmann::json& fields);
  // From now on metric and eval also write their numbers to a TensorBoard event file in
  // the run's directory (writer only; tensorboard.h), flushed at every line.
  void write_tensorboard();
  // Any other event (e.g. "export"). run_start and run_end have their own methods.
  void event(const std::string& name, const nlohmann::json& fields);
  // status is "ok", "failed" or "interrupted" (anything else throws tessera::Error);
  // records the last step seen by metric/eval/checkpoint. Only the first call writes.
  void run_end(const std::string& status, const std::string& reason);

  // `<log_dir>/<run_id>/run.jsonl` (on every rank, whether or not it writes).
  const std::string& path() const { return path_; }
  const std::string& run_id() const { return run_id_; }
  bool writer() const { return file_ != nullptr; }

 private:
  // Writes one line: event, schema_version, time, then `body` in its order. Caller holds
  // mutex_.
  void write_line(const std::string& event, const nlohmann::ordered_json& body);
  // metric and eval: step first, then the fields.
  void step_event(const std::string& event, int64_t step, const nlohmann::json& fields);
  // Remembers fields["step"] (if an integer) for run_end.
  void note_step(const nlohmann::json& fields);

  std::string run_id_;
  std::string path_;
  std::FILE* file_ = nullptr;  // null on non-writers
  std::mutex mutex_;           // the trainer and a checkpoint thread may both log
  bool started_ = false;
  bool ended_ = false;
  std::optional<int64_t> last_step_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;  // log.tensorboard, writer only
};

// {"commit": <40 hex or "unknown">, "dirty": true|false|"unknown"} for the git work tree
// at source_dir; "unknown" when git or the tree is unavailable. Never throws.
nlohmann::json git_info(const std::string& source_dir);

}  // namespace tessera
