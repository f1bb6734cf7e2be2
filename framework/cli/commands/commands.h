// The `tessera` subcommands. Each takes the arguments after its name, parses them, calls
// library functions, and returns the process exit code. Bad input throws tessera::Error;
// main() prints it as one line and exits with code 2. `--help` prints the usage text.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kernels/backend.h"

namespace tessera::cli {

using Args = std::vector<std::string>;

int cmd_train(const Args& args);         // tessera train RECIPE [--set k=v ...]
int cmd_recipe(const Args& args);        // tessera recipe RECIPE [--set k=v ...] [--get KEY]
int cmd_data_prepare(const Args& args);  // tessera data prepare --input F --out DIR ...
int cmd_bench(const Args& args);         // tessera bench [...]
int cmd_doctor(const Args& args);        // tessera doctor
int cmd_ckpt(const Args& args);          // tessera ckpt inspect|verify DIR
int cmd_generate(const Args& args);      // tessera generate --ckpt DIR --prompt TEXT ...
int cmd_lora(const Args& args);          // tessera lora merge --ckpt DIR --out DIR
int cmd_export(const Args& args);        // tessera export --ckpt DIR --format F --out PATH
int cmd_runs(const Args& args);          // tessera runs list|show
int cmd_sweep(const Args& args);         // tessera sweep run|status|report|cancel SWEEP (tuning/)

// Arguments split into positional ones and options, in order: "--flag value" and
// "--flag=value", or just "--flag" for the flags listed in `switches`; --help / -h sets
// help. A flag missing its value throws tessera::Error naming `command`.
struct ParsedArgs {
  std::vector<std::string> positional;
  std::vector<std::pair<std::string, std::string>> options;
  bool help = false;
};
ParsedArgs parse_args(const Args& args, const std::string& command,
                      const std::vector<std::string>& switches = {});

// An option's value as a whole number >= min / a finite number >= min, or an Error
// naming the command and the flag.
int64_t parse_integer(const std::string& command, const std::string& flag,
                      const std::string& value, int64_t min);
double parse_number(const std::string& command, const std::string& flag, const std::string& value,
                    double min);

// --device's value: cpu or cuda, or an Error naming the command, the flag and both.
kernels::Device parse_device(const std::string& command, const std::string& value);

// The backend of `--device` (kernels::backend_for), made now so that a device that cannot
// be used (a build without CUDA, a machine without a GPU) fails before any work, with the
// backend's reason as an Error naming the command and --device.
kernels::Backend& device_backend(const std::string& command, kernels::Device device);

// Throws tessera::Error when run under mpirun with more than one rank.
void require_one_process(const std::string& command);

}  // namespace tessera::cli
