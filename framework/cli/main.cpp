// The `tessera` command line: parse the command name, hand the rest to its function.
#include <mpi.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "base/error.h"
#include "framework/cli/commands/commands.h"
#include "framework/train/stop_signals.h"
#include "framework/train/trainer.h"
#include "framework/util/system_info.h"

namespace {

const char* kUsage =
    "usage: tessera <command> [options]\n"
    "\n"
    "commands:\n"
    "  train RECIPE [--set key=value ...]   train a model from a YAML recipe\n"
    "  recipe RECIPE [--set ...] [--get K]  the resolved recipe, or one key's value\n"
    "  data prepare --input FILE --out DIR  tokenize text into llm.c token shards\n"
    "  ckpt inspect DIR [--no-verify]       what a checkpoint holds; verifies its checksums\n"
    "  ckpt verify DIR                      check every shard of a checkpoint against its checksums\n"
    "  generate --ckpt DIR --prompt TEXT    continue a prompt with a checkpoint's model\n"
    "  lora merge --ckpt DIR --out DIR      fold a LoRA run's adapters into its base model\n"
    "  export --ckpt DIR --format F --out P  the model for llama.cpp (gguf) or Hugging Face (safetensors)\n"
    "  runs list|show                       runs under a log directory; where a model came from\n"
    "  bench [--help]                       time a training step, report tokens/s and MFU\n"
    "  sweep run|status|report|cancel SWEEP  hyperparameter sweep: trials as local runs or Slurm jobs\n"
    "  doctor                               show CPU features, BLAS, MPI, CUDA and GPUs\n"
    "\n"
    "Run `tessera <command> --help` for a command's options. Under mpirun every rank runs\n"
    "the same command. Errors print one line and exit with code 2.\n";

int dispatch(int argc, char** argv) {
  using namespace tessera::cli;
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  Args rest(argv + 2, argv + argc);
  if (command == "train") return cmd_train(rest);
  if (command == "recipe") return cmd_recipe(rest);
  if (command == "data") {
    if (rest.empty() || rest[0] != "prepare")
      throw tessera::Error("tessera data: expected the subcommand 'prepare' (tessera data prepare --help)");
    return cmd_data_prepare(Args(rest.begin() + 1, rest.end()));
  }
  if (command == "ckpt") return cmd_ckpt(rest);
  if (command == "generate") return cmd_generate(rest);
  if (command == "lora") return cmd_lora(rest);
  if (command == "export") return cmd_export(rest);
  if (command == "runs") return cmd_runs(rest);
  if (command == "bench") return cmd_bench(rest);
  if (command == "doctor") return cmd_doctor(rest);
  if (command == "sweep") return cmd_sweep(rest);
  throw tessera::Error("unknown command '" + command + "' (see tessera --help)");
}

// An error message as one line: a value quoted from a file may hold newlines or other
// control characters, which are written as escapes (\n, \t, \xNN) instead.
std::string one_line(const char* message) {
  std::string out;
  for (const char* c = message; *c; c++) {
    const unsigned char ch = (unsigned char)*c;
    if (ch == '\n') out += "\\n";
    else if (ch == '\t') out += "\\t";
    else if (ch == '\r') out += "\\r";
    else if (ch < 0x20 || ch == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", ch);
      out += buf;
    } else {
      out += *c;
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  // Plain MPI_Init: the trainer's gradient buckets use non-blocking MPI calls, not the
  // communicator's helper thread (which would need MPI_THREAD_MULTIPLE; trainer.cpp says
  // why it is off).
  // `tessera sweep` starts trials with mpirun or sbatch: it must not be an MPI process
  // itself (a singleton's environment would leak into the mpirun it starts). `tessera
  // recipe` runs in launcher scripts before mpirun or srun: no MPI either.
  const bool mpi =
      !(argc >= 2 && (!std::strcmp(argv[1], "sweep") || !std::strcmp(argv[1], "recipe")));
  // Before MPI_Init, which may take a while under srun: Slurm's SIGUSR1 "the time limit is
  // near" must never kill a training process, however early or late it comes.
  if (argc >= 2 && !std::strcmp(argv[1], "train")) tessera::record_sigusr1_until_exit();
  int world = 1, rank = 0;
  if (mpi) {
    MPI_Init(&argc, &argv);
    // A failed MPI call returns its error (thrown as tessera::CommError, printed as one
    // line with exit code 2) instead of aborting the job with MPI's own message.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  }
  int code = 0;
  bool same_on_every_rank = false;
  try {
    tessera::check_cpu_supports_build();  // a message instead of SIGILL on an older CPU
    code = dispatch(argc, argv);
  } catch (const tessera::ConfigError& e) {
    // Every rank raised this one before any communication (base/error.h): print it once,
    // and every rank ends normally, so no MPI_Abort and no abort banner.
    if (rank == 0) std::fprintf(stderr, "tessera: error: %s\n", one_line(e.what()).c_str());
    code = 2;
    same_on_every_rank = true;
  } catch (const tessera::Error& e) {
    std::fprintf(stderr, "tessera: error: %s\n", one_line(e.what()).c_str());
    code = 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tessera: internal error: %s\n", one_line(e.what()).c_str());
    code = 3;
  }
  // A preempted run (tessera train) stopped cleanly on every rank: no abort.
  if (code != 0 && code != tessera::kPreemptedExitCode && !same_on_every_rank && world > 1) {
    // One failing rank ends the job on every rank instead of leaving the others
    // blocked in a collective.
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
  }
  if (mpi) MPI_Finalize();
  return code;
}
