// `tessera doctor`: what this machine and this binary are, in one report. The first
// thing to run on a new node, and the thing to paste into a bug report.
#include <iostream>

#include "framework/cli/commands/commands.h"
#include "base/error.h"
#include "framework/util/system_info.h"

namespace tessera::cli {

namespace {

constexpr const char* kUsage =
    "usage: tessera doctor [--json]\n"
    "\n"
    "Reports the CPU (model, cores, AVX2/AVX-512/AMX features and the ones this binary\n"
    "was compiled for), OpenMP threads, BLAS, MPI, CUDA and GPUs, and library versions.\n"
    "\n"
    "  --json   print the report as one JSON object\n"
    "  --help   print this text\n"
    "\n"
    "Exit code 0, or 1 when this CPU lacks a feature the binary was compiled for\n"
    "(the binary would crash with an illegal instruction: rebuild it on this node or\n"
    "with TESSERA_NATIVE=OFF).\n";

}  // namespace

int cmd_doctor(const Args& args) {
  bool json = false;
  for (const auto& arg : args) {
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (arg == "--json") {
      json = true;
      continue;
    }
    throw Error("tessera doctor: unknown option '" + arg + "' (see tessera doctor --help)");
  }

  // Diagnosing is the whole point: collect_system_info() never throws, and a CPU that
  // cannot run this binary is reported (and reflected in the exit code), not raised.
  const SystemInfo info = collect_system_info();
  if (json) {
    std::cout << to_json(info).dump(2) << "\n";
  } else {
    std::cout << format_report(info);
  }
  std::cout.flush();
  return info.build_check == "ok" ? 0 : 1;
}

}  // namespace tessera::cli
