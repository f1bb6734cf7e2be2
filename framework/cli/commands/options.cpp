// What the commands share: options parsing and the one-process check.
#include <mpi.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "framework/cli/commands/commands.h"
#include "base/error.h"

namespace tessera::cli {

ParsedArgs parse_args(const Args& args, const std::string& command,
                      const std::vector<std::string>& switches) {
  ParsedArgs p;
  for (size_t i = 0; i < args.size(); i++) {
    std::string flag = args[i];
    if (flag == "--help" || flag == "-h") {
      p.help = true;
    } else if (flag.size() < 2 || flag.rfind("--", 0) != 0) {
      p.positional.push_back(flag);
    } else if (std::find(switches.begin(), switches.end(), flag) != switches.end()) {
      p.options.emplace_back(flag, "");
    } else if (const size_t eq = flag.find('='); eq != std::string::npos) {
      p.options.emplace_back(flag.substr(0, eq), flag.substr(eq + 1));
    } else {
      check(i + 1 < args.size(),
            "tessera " + command + ": " + flag + " needs a value (see tessera " + command + " --help)");
      p.options.emplace_back(flag, args[++i]);
    }
  }
  return p;
}

int64_t parse_integer(const std::string& command, const std::string& flag,
                      const std::string& value, int64_t min) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(value.c_str(), &end, 10);
  check(!value.empty() && *end == '\0' && errno != ERANGE && v >= min,
        "tessera " + command + ": " + flag + " expects a whole number >= " + std::to_string(min) +
            ", got '" + value + "'");
  return v;
}

double parse_number(const std::string& command, const std::string& flag, const std::string& value,
                    double min) {
  char* end = nullptr;
  const double v = std::strtod(value.c_str(), &end);
  check(!value.empty() && *end == '\0' && v >= min && v < 1e300,
        "tessera " + command + ": " + flag + " expects a number >= " + std::to_string(min) +
            ", got '" + value + "'");
  return v;
}

kernels::Device parse_device(const std::string& command, const std::string& value) {
  if (value == "cpu") return kernels::Device::cpu;
  if (value == "cuda") return kernels::Device::cuda;
  throw Error("tessera " + command + ": --device expects cpu or cuda, got '" + value + "'");
}

kernels::Backend& device_backend(const std::string& command, kernels::Device device) {
  try {
    return kernels::backend_for(device);
  } catch (const Error& e) {
    // The backends word their refusal for the recipe key (train.device: cuda: ...); here
    // the choice was --device.
    std::string reason = e.what();
    const std::string key = std::string("train.device: ") + kernels::to_string(device) + ": ";
    if (reason.rfind(key, 0) == 0) reason.erase(0, key.size());
    for (size_t at; (at = reason.find("train.device: cpu")) != std::string::npos;)
      reason.replace(at, 17, "--device cpu");
    throw Error("tessera " + command + ": --device " + kernels::to_string(device) + ": " + reason);
  }
}

void require_one_process(const std::string& command) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  check(world == 1, "tessera " + command + " runs in one process, not under mpirun with " +
                        std::to_string(world) + " ranks");
}

}  // namespace tessera::cli
