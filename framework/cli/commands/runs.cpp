// `tessera runs list|show`: the runs under a log directory; a run's record; an exported
// model's chain back to its data (framework/tools/runs.h).
#include <cstdio>
#include <string>

#include "base/error.h"
#include "framework/cli/commands/commands.h"
#include "framework/tools/runs.h"

namespace tessera::cli {
namespace {

constexpr const char* kUsage = R"(usage: tessera runs list [--log-dir DIR]
       tessera runs show RUN [--log-dir DIR]
       tessera runs show EXPORTED_FILE

  list   one line per run under DIR (default runs, the recipes' log.dir): id, start,
         status, steps, last loss, checkpoints, exports, the latest checkpoint
  show   RUN (a run id under DIR, a run directory or its run.jsonl): the run's code,
         recipe, data files with sha256, checkpoints and exports
         EXPORTED_FILE (a GGUF file, a safetensors directory, or their lineage file): the
         chain export -> checkpoint -> run -> data files, each link checked against the
         files now; exit code 1 when one does not match
)";

}  // namespace

int cmd_runs(const Args& args) {
  const std::string sub = args.empty() ? "" : args[0];
  if (sub == "--help" || sub == "-h" || sub == "help" || sub.empty()) {
    std::fputs(kUsage, sub.empty() ? stderr : stdout);
    return sub.empty() ? 2 : 0;
  }
  check(sub == "list" || sub == "show", "tessera runs: unknown subcommand '" + sub + "' (list or show)");
  const ParsedArgs p = parse_args(Args(args.begin() + 1, args.end()), "runs " + sub);
  if (p.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  std::string log_dir = "runs";
  for (const auto& [flag, value] : p.options) {
    if (flag == "--log-dir") log_dir = value;
    else throw Error("tessera runs " + sub + ": unknown option " + flag + " (see tessera runs --help)");
  }
  if (sub == "list") {
    check(p.positional.empty(), "tessera runs list: unexpected argument '" +
                                    (p.positional.empty() ? "" : p.positional[0]) + "'");
    std::fputs(format_run_list(list_runs(log_dir)).c_str(), stdout);
    return 0;
  }
  check(p.positional.size() == 1, "tessera runs show: expected one RUN or exported file");
  const std::string& what = p.positional[0];
  // An export (a file, a directory with lineage.json) or a run.
  bool all_ok = true;
  std::string text;
  try {
    text = show_run(what, log_dir);
  } catch (const Error& not_a_run) {
    try {
      text = show_export(what, &all_ok);
    } catch (const Error& not_an_export) {
      throw Error(std::string(not_a_run.what()) + "; and " + not_an_export.what());
    }
  }
  std::fputs(text.c_str(), stdout);
  return all_ok ? 0 : 1;
}

}  // namespace tessera::cli
