// The `tessera` subcommands. Each takes the arguments after its name, parses them, calls
// library functions, and returns the process exit code. Bad input throws tessera::Error;
// main() prints it as one line and exits with code 2. `--help` prints the usage text.
#pragma once
#include <string>
#include <vector>

namespace tessera::cli {

using Args = std::vector<std::string>;

int cmd_train(const Args& args);         // tessera train RECIPE [--set k=v ...]
int cmd_data_prepare(const Args& args);  // tessera data prepare --input F --out DIR ...
int cmd_bench(const Args& args);         // tessera bench [...]
int cmd_doctor(const Args& args);        // tessera doctor

}  // namespace tessera::cli
