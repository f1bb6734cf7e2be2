// The parts of tuning/trial_backend.h that every backend shares.
#include "tuning/trial_backend.h"

#include "base/error.h"

namespace tessera::tuning {

const char* to_string(JobState s) {
  switch (s) {
    case JobState::pending: return "pending";
    case JobState::running: return "running";
    case JobState::completed: return "completed";
    case JobState::failed: return "failed";
    case JobState::cancelled: return "cancelled";
    case JobState::unknown: return "unknown";
    case JobState::unreachable: return "unreachable";
  }
  return "?";
}

std::vector<std::string> TrialLaunch::argv() const {
  std::vector<std::string> out = command;
  out.push_back(recipe);
  for (const auto& o : overrides) {
    out.push_back("--set");
    out.push_back(o);
  }
  return out;
}

std::unique_ptr<TrialBackend> make_backend(const SweepSpec& spec, const std::string& sweep_dir) {
  if (spec.backend == BackendKind::local) return make_local_backend(sweep_dir + "/jobs");
  if (spec.slurm_interface == SlurmInterface::cli) return make_slurm_cli_backend(spec.slurm_partition);
  return make_slurm_api_backend(spec.slurm_partition);
}

}  // namespace tessera::tuning
