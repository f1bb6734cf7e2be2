// `tessera sweep run|status|report|cancel SWEEP.yaml|SWEEP_DIR` (docs/sweeps.md).
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <iostream>

#include "base/error.h"
#include "framework/cli/commands/commands.h"
#include "tuning/sweeper.h"

namespace tessera::cli {
namespace {

const char* kSweepUsage =
    "usage: tessera sweep run|status|report|cancel SWEEP.yaml|SWEEP_DIR [--tessera BIN]\n"
    "\n"
    "  run      sample trials, run each as a Tessera training run (a local process or a\n"
    "           Slurm job), stop the bad ones early (ASHA), write the report at the end;\n"
    "           run it again after a crash or kill: it continues where it stopped\n"
    "  status   a table of the trials: parameters, state, job, steps, objective, why stopped\n"
    "  report   report.md and report.svg in the sweep directory: the best trial, parameter\n"
    "           importance, loss curves and objective against each parameter\n"
    "  cancel   stop the sweep and its trials (each keeps its run log and checkpoint)\n"
    "\n"
    "  --tessera BIN   the binary that trains the trials (default: this one)\n"
    "\n"
    "The sweep file's format is in docs/sweeps.md. Exit code 0 when a trial completed.\n";

// The running binary, for the trials' `tessera train`.
std::string this_binary() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  check(n > 0, "tessera sweep: cannot find this binary's path (/proc/self/exe); pass --tessera BIN");
  return std::string(buf, (size_t)n);
}

}  // namespace

int cmd_sweep(const Args& args) {
  const ParsedArgs parsed = parse_args(args, "tessera sweep");
  if (parsed.help) {
    std::fputs(kSweepUsage, stdout);
    return 0;
  }
  check(parsed.positional.size() == 2,
        "tessera sweep: expected an action and a sweep file or directory (tessera sweep --help)");
  tuning::SweepOptions options;
  options.tessera = this_binary();
  for (const auto& [flag, value] : parsed.options) {
    if (flag == "--tessera") options.tessera = value;
    else throw Error("tessera sweep: unknown option '" + flag + "' (tessera sweep --help)");
  }
  options.say = [](const std::string& line) { std::cout << "sweep: " << line << std::endl; };
  const std::string& action = parsed.positional[0];
  if (action != "run" && action != "status" && action != "report" && action != "cancel")
    throw Error("tessera sweep: unknown action '" + action + "' (expected run, status, report or cancel)");
  const tuning::SweepHandle sweep = tuning::open_sweep(parsed.positional[1]);
  if (action == "run") return tuning::run_sweep(sweep, options);
  if (action == "status") {
    std::cout << tuning::sweep_status(sweep);
    return 0;
  }
  if (action == "report") {
    std::cout << "report: " << tuning::sweep_report(sweep) << "\n";
    return 0;
  }
  tuning::cancel_sweep(sweep, options);
  return 0;
}

}  // namespace tessera::cli
