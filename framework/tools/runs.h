// `tessera runs`: the runs under a log directory, and where a model came from.
//
//   list_runs(log_dir)       one line per run: id, start, status, steps, last loss, checkpoints
//   show_run(run)            a run's record: recipe, git commit, data files with sha256, its
//                            checkpoints and the exports made from them
//   show_export(file)        an exported file's chain back to its data (lineage.h), every link
//                            checked against the files as they are now
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

struct RunListing {
  std::string id, dir, start, status;    // status: ok | failed | interrupted | running?
  int64_t steps = 0;                     // the last step of a metric line
  double last_loss = 0;
  bool has_loss = false;
  std::vector<std::string> checkpoints;  // paths, in order written
  int exports = 0;
};

// The runs under `log_dir` (each a directory holding run.jsonl), oldest first. Throws
// tessera::Error when `log_dir` is not a directory.
std::vector<RunListing> list_runs(const std::string& log_dir);
std::string format_run_list(const std::vector<RunListing>& runs);

// `run`: a run directory, a run.jsonl, or a run id under `log_dir`. The text to print.
std::string show_run(const std::string& run, const std::string& log_dir);

// `path`: an exported GGUF file, a safetensors directory or file in one, or a lineage file.
// The chain from the export to its data, each link marked ok, changed or missing as
// checked now; `*all_ok` says whether every link checked out.
std::string show_export(const std::string& path, bool* all_ok);

}  // namespace tessera
