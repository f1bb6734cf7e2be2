// The sweeper: `tessera sweep run|status|report|cancel`. Library functions, so that tests
// call them directly; framework-free of the command line's parsing (tuning/sweep_command.cpp).
//
// run: samples trials, submits each as an ordinary Tessera run (its own run log and
// checkpoints under <sweep dir>/trials/<id>/), watches their run logs, takes ASHA's
// decisions and cancels the trials it stops, records every step in the journal before it
// acts on it, and at the end writes the report. Killed at any moment and started again,
// it replays the journal, re-attaches to the trials still running (by job id, or by job
// name when it died between submitting and recording the id), records those that ended
// meanwhile, and goes on: no trial runs twice and no result is lost.
#pragma once
#include <functional>
#include <string>

#include "tuning/journal.h"
#include "tuning/sweep_spec.h"

namespace tessera::tuning {

struct SweepOptions {
  std::string tessera;  // the binary that trains a trial (`tessera train`)
  std::function<void(const std::string&)> say = [](const std::string&) {};  // progress lines
};

// A sweep given as its file or its directory (which keeps a copy of the file, sweep.yaml,
// and the directory the sweep was started from, so that relative paths still resolve).
struct SweepHandle {
  SweepSpec spec;
  std::string dir;       // absolute
  std::string work_dir;  // absolute: where the recipe's relative paths resolve
};
SweepHandle open_sweep(const std::string& file_or_dir);

// Runs the sweep to its end (or until cancelled); returns 0, or 1 when no trial completed.
int run_sweep(const SweepHandle& sweep, const SweepOptions& options);

// The table of trials (tuning/report.h) from the journal and the trials' run logs.
std::string sweep_status(const SweepHandle& sweep);

// Writes report.md and report.svg into the sweep directory; returns report.md's path.
std::string sweep_report(const SweepHandle& sweep);

// Stops a sweep: asks a running sweeper to cancel its trials and waits for it to end, or,
// when none runs, cancels the trials still queued or running itself.
void cancel_sweep(const SweepHandle& sweep, const SweepOptions& options);

}  // namespace tessera::tuning
